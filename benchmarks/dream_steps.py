"""Dream VectorEnv steps/s at N envs against the practical ceiling, M's unfused step and the real game.

For each game's paper-sized M (TakeCover: z 64, 512 units, 5 mixtures, done head; CarRacing: z 32, 256
units, reward and done heads) and each N, four things are timed in alternating rounds:

- ``dream``: ``DreamVectorEnv.step`` with numpy actions (on a GPU: torch tensors, ``return_tensors=True``);
- ``lstm``: a bare ``torch.nn.LSTMCell`` + ``torch.nn.Linear`` loop of the same shapes, the ceiling for any
  implementation of M's step (it draws no randomness and builds no observation);
- ``unfused``: M's transition through :meth:`MDNRNN.step` + :func:`sample_mixture` + the counter RNG (the
  dream's step before it was fused into :class:`~dreamgym.models.mdnrnn.FusedStep`), without env overhead;
- ``real``: the real game (one env in this process) with frame preprocessing (``spec.to_frame``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.timing import Rate, Row, env_stepper, interleaved_rates, random_actions
from dreamgym.envs import DreamVectorEnv
from dreamgym.envs.rng import CounterRNG, box_muller
from dreamgym.games import get_game
from dreamgym.models.mdnrnn import MDNRNNConfig, sample_mixture
from dreamgym.world_model import WorldModel

# Targets of the issue, for N >= TARGET_MIN_ENVS: (ratio to the LSTMCell loop, ratio to the real game).
TARGETS = {"takecover": (0.7, 10.0), "carracing": (0.7, 500.0)}
TARGET_MIN_ENVS = 1024
LSTM = "bare LSTMCell + Linear loop"
UNFUSED = "M.step + sample_mixture loop (unfused)"


@dataclass(frozen=True)
class DreamSizes:
    num_envs: tuple[int, ...]
    rounds: int
    min_time: float


def dream_work(model: WorldModel, n: int, device: torch.device) -> Callable[[], float]:
    """One DreamVectorEnv step of N envs per call."""
    on_gpu = device.type == "cuda"
    envs = DreamVectorEnv(n, model, device=device, return_tensors=on_gpu)
    envs.reset(seed=0)
    actions = random_actions(model.config.game, n)
    act = torch.as_tensor(actions, device=device) if on_gpu else actions

    def work() -> float:
        envs.step(act)
        return n

    return work


def lstm_work(cfg: MDNRNNConfig, n: int, device: torch.device) -> Callable[[], float]:
    """One step of a bare LSTMCell + Linear head of M's shapes for N rows per call."""
    cell = torch.nn.LSTMCell(cfg.input_size, cfg.hidden_size).to(device)
    head_size = 3 * cfg.num_mixtures * cfg.z_size + int(cfg.done_head) + int(cfg.reward_head)
    head = torch.nn.Linear(cfg.hidden_size, head_size).to(device)
    x = torch.randn(n, cfg.input_size, device=device)
    state = [torch.zeros(n, cfg.hidden_size, device=device) for _ in range(2)]

    @torch.inference_mode()
    def work() -> float:
        state[:] = cell(x, (state[0], state[1]))
        head(state[0])
        return n

    return work


def unfused_work(model: WorldModel, n: int, device: torch.device) -> Callable[[], float]:
    """One transition of N dreams per call through M.step, sample_mixture and the counter RNG."""
    m, cfg = model.mdnrnn, model.config.mdnrnn
    rng = CounterRNG(n, cfg.z_size + 2 * math.ceil(cfg.z_size / 2) + 1, device)
    action = model.game.encode_action(torch.as_tensor(random_actions(model.config.game, n), device=device))
    tau = torch.full((n,), model.game.dream_temperature, device=device)
    restart = torch.zeros(n, device=device)
    state = {"z": torch.zeros(n, cfg.z_size, device=device), "hc": m.initial_state(n, device)}

    @torch.inference_mode()
    def work() -> float:
        u = rng.draw()
        out, state["hc"] = m.step(state["z"], action, restart, state["hc"])
        noise = box_muller(u[:, cfg.z_size : -1])[:, : cfg.z_size]
        state["z"] = sample_mixture(out, tau, u[:, : cfg.z_size], noise)
        _ = u[:, -1] < m.done_probability(out.done_logit)  # done
        return n

    return work


def real_work(game: str) -> tuple[Callable[[], float], Callable[[], None]]:
    """One real-game step with a random action and frame preprocessing per call; and a closer."""
    spec = get_game(game)
    env = spec.make_real_env()
    actions = [spec.to_game_action(a) for a in random_actions(game, 1000)]
    return env_stepper(env, actions, spec.to_frame), env.close


def run(model: WorldModel, sizes: DreamSizes, device: torch.device) -> tuple[list[Row], dict[str, dict[int, float]]]:
    """Times every candidate at every N; returns the rows and the rates (``{candidate: {N: steps/s}}``,
    the real game under N = 1) for the plot."""
    game, cfg = model.config.game, model.config.mdnrnn
    real, close = real_work(game)
    candidates: dict[str, Callable[[], float]] = {"real": real}
    for n in sizes.num_envs:
        candidates[f"lstm/{n}"] = lstm_work(cfg, n, device)
        candidates[f"dream/{n}"] = dream_work(model, n, device)
        candidates[f"unfused/{n}"] = unfused_work(model, n, device)
    try:
        rates = interleaved_rates(candidates, sizes.rounds, sizes.min_time, device)
    finally:
        close()
    return rows(game, cfg, sizes.num_envs, rates), plot_series(sizes.num_envs, rates)


def rows(game: str, cfg: MDNRNNConfig, num_envs: tuple[int, ...], rates: dict[str, Rate]) -> list[Row]:
    to_lstm, to_real = TARGETS[game]
    real = f"real {get_game(game).env_id}"
    note = f"M: z {cfg.z_size}, {cfg.hidden_size} units, {cfg.num_mixtures} mixtures; targets at N >= {TARGET_MIN_ENVS}"
    out = []
    for n in num_envs:
        dream = rates[f"dream/{n}"]
        baselines = [(LSTM, rates[f"lstm/{n}"], to_lstm), (real, rates["real"], to_real),
                     (UNFUSED, rates[f"unfused/{n}"], None)]  # fmt: skip
        for name, base, target in baselines:
            target = target if n >= TARGET_MIN_ENVS else None
            out.append(Row(f"dream_{game}", f"VectorEnv steps/s, N={n}", dream.median, "steps/s", name, base.median,
                           dream.median / base.median, target, note, dream.spread_to(base)))  # fmt: skip
    return out


def plot_series(num_envs: tuple[int, ...], rates: dict[str, Rate]) -> dict[str, dict[int, float]]:
    series = {kind: {n: rates[f"{kind}/{n}"].median for n in num_envs} for kind in ("dream", "lstm", "unfused")}
    series["real"] = {1: rates["real"].median}
    return series
