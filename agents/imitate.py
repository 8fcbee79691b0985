"""Behaviour cloning: fit a controller to the actions of recorded episodes, a starting point for CMA-ES.

    python -m agents.imitate --world-model runs/carracing/world_model --latents runs/carracing/latents \
        --min-return 300 --out runs/carracing/imitate

The controller sees what the latent env would give it: z drawn from each step's stored (mu, logvar) and
M's state teacher-forced over the episode's recorded actions (``[z_t, h_t]`` with h_0 = 0, as after
``reset``). Its targets are the tanh outputs that reproduce the recorded actions (the game's
``unsquash_action``), or with ``--targets expert`` the game's expert's actions recorded in the same states
(``training.collect --expert-labels``: DAgger, whose labels need not be what was played); the fit is one
ridge regression on their atanh (clipped to +-``--clip``), so it is deterministic and takes seconds.
``--hidden H`` fits a controller with one tanh hidden layer of width H instead (Adam on the squared error
of its tanh outputs, inputs standardised and the scaling folded into the saved weights), for teachers that
no linear map of ``[z, h]`` copies; ``--hidden-outputs 0`` keeps the hidden layer for output 0 only and takes
the other outputs from the ridge regression (CarRacing: steering through sharp bends needs the hidden layer,
while a hidden-layer gas extrapolates to speeds no label was given at). ``--holdout F`` keeps the last
fraction F of the episodes out of the fit and reports the RMSE on them too.
Only episodes whose return is at least ``--min-return`` are imitated: collection policies are noisy, and
the best of their episodes are the ones worth copying. The result is an ordinary controller folder:
``agents.evaluate`` scores it and ``agents.cmaes --init`` starts from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from tqdm import tqdm

from dreamgym.cli_args import Bound, Count, HeldOut, NonNegative, NonNegativeFloat, Positive, parse_args
from dreamgym.controller import Controller, ControllerConfig, flatten, population_outputs, unflatten
from dreamgym.data import list_episodes, load_arrays
from dreamgym.envs.dream import DreamEnv, latent_observation, load_world_model
from dreamgym.envs.registration import dream_id
from dreamgym.runs import set_threads, torch_generator
from dreamgym.world_model import WorldModel

_KEYS = ("mu", "logvar", "actions", "rewards")


@dataclass(frozen=True)
class ImitateArgs:
    world_model: str | None = None
    """world model bundle folder or shipped name whose V encoded --latents and whose M gives h (required)"""
    latents: str | None = None
    """latent folder written by training.encode with that V (required)"""
    out: str | None = None
    """controller folder to write (required)"""
    obs_mode: str | None = None
    """controller input zh | zch | z (default: the game's, as the pipeline's)"""
    targets: str = "actions"
    """what to imitate: actions (those played) or expert (the expert's labels; only files that have them)"""
    progress_window: NonNegative = 0
    """imitate only steps after which the episode gains reward within this many steps (0: every step); for
    DAgger data, where the expert's labels in states it could not recover from (a car lost on the grass)
    teach nothing a controller can use"""
    min_return: float = -math.inf
    """imitate only episodes whose return is at least this"""
    ridge: NonNegativeFloat = 1.0
    """L2 penalty of the regression (per step of data, so it does not depend on how many episodes are used)"""
    clip: Annotated[float, Bound(0, 1, low_open=True, high_open=True)] = 0.95
    """targets are clipped to +-clip before atanh (a saturated action would ask for an infinite weight)"""
    hidden: NonNegative = 0
    """width of the controller's tanh hidden layer; 0 is the paper's linear controller (a ridge regression)"""
    epochs: Count = 30
    """with --hidden: passes of Adam over the steps"""
    lr: Positive = 1e-3
    """with --hidden: Adam's learning rate (cosine-decayed to 0 over the epochs)"""
    weight_decay: NonNegativeFloat = 1e-4
    """with --hidden: AdamW's decoupled weight decay"""
    batch_size: Count = 512
    """with --hidden: steps per Adam step"""
    std_floor: Positive = 1e-6
    """with --hidden: inputs are divided by max(their std, this) while fitting; a floor keeps inputs that hardly
    vary in the data from being magnified where the controller drives elsewhere"""
    hidden_outputs: str = "all"
    """with --hidden: the tanh outputs the hidden layer drives, comma-separated indices (e.g. 0: CarRacing's
    steering) or all; the others are the linear controller's ridge fit, a linear map beside the hidden layer
    (ControllerConfig.skip)"""
    holdout: HeldOut = 0.0
    """fraction of the chosen episodes (the last ones) left out of the fit and scored as held-out RMSE"""
    seed: NonNegative = 0
    """seed of the z draws"""
    threads: Count | None = None
    """torch CPU threads (default: torch's)"""


_TARGET_KEYS = {"actions": "actions", "expert": "expert_actions"}


def chosen_episodes(latents: str, min_return: float, targets: str = "actions") -> tuple[list[Path], list[float]]:
    """The latent files that hold ``targets`` and whose episode return is >= ``min_return``, with their returns."""
    paths = list_episodes(latents)
    if not paths:
        raise ValueError(f"no latent files in {latents!r}; run `python -m training.encode` first")
    key = _TARGET_KEYS[targets]
    arrays = [load_arrays(p, ("rewards",), optional=(key,)) for p in paths]
    labelled = [(p, float(a["rewards"].sum())) for p, a in zip(paths, arrays, strict=True) if key in a]
    if not labelled:
        raise ValueError(f"no latent file of {latents!r} holds {key}; "
                         "collect with `python -m training.collect --expert-labels` and encode again")  # fmt: skip
    kept = [(p, r) for p, r in labelled if r >= min_return]
    if not kept:
        best = max(r for _, r in labelled)
        raise ValueError(f"no episode of {latents!r} returns >= {min_return} (best: {best:.1f})")
    return [p for p, _ in kept], [r for _, r in kept]


@torch.inference_mode()
def episode_observations(model: WorldModel, path: Path, obs_mode: str, generator: torch.Generator,
                         targets: str = "actions") -> tuple[torch.Tensor, np.ndarray, np.ndarray]:  # fmt: skip
    """(observations (T, D), recorded ``targets`` (T, ...), rewards (T,)) of one latent file, the observations
    as the latent env would give them; M is stepped over the actions played whatever the targets.

    Observation t pairs z_t with M's state before it has seen z_t (zeros at t = 0), stepped exactly as
    the latent env steps it.
    """
    arrays = load_arrays(path, _KEYS, optional=(_TARGET_KEYS[targets],))
    mu, logvar = torch.from_numpy(arrays["mu"]), torch.from_numpy(arrays["logvar"])
    z = torch.addcmul(mu, torch.exp(0.5 * logvar), torch.randn(mu.shape, generator=generator))
    actions = model.game.encode_action(torch.from_numpy(arrays["actions"]))
    state = model.mdnrnn.initial_state(1)
    observations = []
    for t in range(len(z)):
        observations.append(latent_observation(z[t : t + 1], state[0], state[1], obs_mode))
        restart = torch.full((1,), float(t == 0))
        _, state = model.mdnrnn.step(z[t : t + 1], actions[t : t + 1], restart, state)
    return torch.cat(observations), arrays[_TARGET_KEYS[targets]], arrays["rewards"]


def gains_reward_within(rewards: np.ndarray, window: int) -> np.ndarray:
    """(T,) bool: whether any of rewards[t : t + window] is positive."""
    positive = np.cumsum(rewards > 0)  # positive[t]: how many of rewards[: t + 1] are positive
    ahead = np.minimum(np.arange(len(rewards)) + window - 1, len(rewards) - 1)
    before = np.concatenate([[0], positive[: len(rewards) - 1]])
    return positive[ahead] - before > 0


def ridge_fit(x: np.ndarray, y: np.ndarray, ridge: float, bias: bool) -> np.ndarray:
    """Least squares W (A, D) and b (A,) of y ~ W x + b with penalty ridge * N * |W|^2; flat [W.ravel(), b].

    The normal equations are summed in float64 chunk by chunk, so a float32 x of millions of steps is never
    copied whole."""
    n, dims = len(x), x.shape[1] + int(bias)
    gram, cross = np.zeros((dims, dims)), np.zeros((dims, y.shape[1]))
    for rows in _chunks(n):
        design = x[rows].astype(np.float64)
        if bias:
            design = np.concatenate([design, np.ones((len(design), 1))], axis=1)
        gram += design.T @ design
        cross += design.T @ y[rows]
    penalty = np.eye(dims) * ridge * n
    if bias:
        penalty[-1, -1] = 0.0  # the bias is not shrunk
    solution = np.linalg.solve(gram + penalty, cross)  # (D [+1], A)
    weight = solution[: x.shape[1]].T
    parts = [weight.ravel()] + ([solution[-1]] if bias else [])
    return np.concatenate(parts).astype(np.float32)


def _chunks(n: int, size: int = 65_536) -> list[slice]:
    """Row slices covering range(n): passes over all observations work chunk by chunk, never on a full copy."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def column_mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) std of x (N, D), in float64, chunk by chunk."""
    mean = x.mean(0, dtype=np.float64)
    squares = sum(((x[rows] - mean) ** 2).sum(0) for rows in _chunks(len(x)))
    return mean, np.sqrt(squares / max(1, len(x)))


def mlp_fit(x: np.ndarray, y: np.ndarray, config: ControllerConfig, args: ImitateArgs) -> np.ndarray:
    """Flat parameters of a one-hidden-layer controller fit by AdamW to the tanh outputs ``y`` (N, A).

    Inputs are standardised while training (z and h have very different scales); the scaling is folded into
    the hidden layer afterwards (centring only where the layer has a bias), so the controller reads raw
    observations like any other.
    """
    generator = torch.Generator().manual_seed(args.seed)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(y).float()
    column_mean, column_std = column_mean_std(x)
    mean = torch.from_numpy(column_mean).float() if config.bias else torch.zeros(xt.shape[1])
    std = torch.from_numpy(column_std).float().clamp_min(args.std_floor)
    with torch.random.fork_rng():  # seeded initial weights without touching the caller's global torch RNG
        torch.manual_seed(args.seed)
        first = torch.nn.Linear(config.obs_dim, config.hidden, bias=config.bias)
        last = torch.nn.Linear(config.hidden, config.action_out, bias=config.bias)
    net = torch.nn.Sequential(first, torch.nn.Tanh(), last, torch.nn.Tanh())
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.epochs * math.ceil(len(xt) / args.batch_size))
    progress = tqdm(range(args.epochs), desc="imitate: epochs", unit="epoch")
    for _ in progress:
        total = 0.0
        for index in torch.randperm(len(xt), generator=generator).split(args.batch_size):
            loss = ((net((xt[index] - mean) / std) - yt[index]) ** 2).mean()  # standardised batch by batch
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        progress.set_postfix(mse=f"{total / len(xt):.4f}")
    with torch.no_grad():
        weight = first.weight / std
        tensors = {"hidden.weight": weight, "weight": last.weight}
        if config.bias:
            tensors |= {"hidden.bias": first.bias - weight @ mean, "bias": last.bias}
        return flatten(config, tensors)


def ridge_controller(config: ControllerConfig, x: np.ndarray, y: np.ndarray, args: ImitateArgs) -> Controller:
    """The linear controller (``config`` without a hidden layer) whose outputs' atanh fits that of ``y``."""
    linear = dataclasses.replace(config, hidden=0, skip=False)
    return Controller(linear, ridge_fit(x, np.arctanh(np.clip(y, -args.clip, args.clip)), args.ridge, linear.bias))


def hidden_output_indices(text: str, outputs: int) -> list[int]:
    """``--hidden-outputs`` (``all`` or comma-separated indices) -> sorted output indices; ValueError if invalid."""
    if text == "all":
        return list(range(outputs))
    try:
        chosen = sorted({int(part) for part in text.split(",")})
    except ValueError:
        chosen = []
    if not chosen or not all(0 <= i < outputs for i in chosen):
        raise ValueError(f"--hidden-outputs must be all or comma-separated indices in [0, {outputs}), got {text!r}")
    return chosen


def beside_linear(mlp: Controller, linear: Controller, hidden_outputs: list[int]) -> Controller:
    """One controller whose ``hidden_outputs`` are ``mlp``'s and whose other outputs are ``linear``'s (its map
    beside the hidden layer: ControllerConfig.skip)."""
    config = dataclasses.replace(mlp.config, skip=True)
    uses_hidden = torch.zeros(config.action_out, 1, dtype=torch.bool)
    uses_hidden[hidden_outputs] = True
    m, lin = (torch.from_numpy(v) for v in (mlp.params, linear.params))
    m_t, l_t = unflatten(mlp.config, m[None]), unflatten(linear.config, lin[None])
    tensors = {name: value[0] for name, value in m_t.items()}
    tensors["weight"] = torch.where(uses_hidden, tensors["weight"], 0.0)
    tensors["skip.weight"] = torch.where(uses_hidden, 0.0, l_t["weight"][0])
    if config.bias:
        tensors["bias"] = torch.where(uses_hidden[:, 0], tensors["bias"], l_t["bias"][0])
    return Controller(config, flatten(config, tensors))


def rmse(config: ControllerConfig, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(A,) root mean squared error of the controller's tanh outputs on observations x against targets y."""
    population, squares = torch.from_numpy(params)[None], np.zeros(y.shape[1])
    for rows in _chunks(len(x)):
        observations = torch.from_numpy(np.asarray(x[rows], np.float32))[None]
        fitted = population_outputs(config, population, observations)[0]
        squares += ((fitted.numpy() - y[rows]) ** 2).sum(0)
    return np.sqrt(squares / len(x))


def imitate(args: ImitateArgs) -> tuple[Controller, dict[str, float]]:
    """Fits and saves the controller; returns it and the fit's summary (episodes, steps, RMSE per tanh output)."""
    if args.world_model is None or args.latents is None or args.out is None:
        raise ValueError("--world-model, --latents and --out are required")
    if args.targets not in _TARGET_KEYS:
        raise ValueError(f"--targets must be one of {sorted(_TARGET_KEYS)}, got {args.targets!r}")
    if args.progress_window < 0:
        raise ValueError(f"--progress-window must be >= 0 steps, got {args.progress_window}")
    if args.ridge < 0 or not 0 < args.clip < 1:
        raise ValueError(f"--ridge must be >= 0 and --clip in (0, 1), got {args.ridge} and {args.clip}")
    if args.hidden < 0 or args.epochs < 1 or not 0 <= args.holdout < 1:
        raise ValueError(f"--hidden must be >= 0, --epochs >= 1 and --holdout in [0, 1), got {args.hidden}, "
                         f"{args.epochs} and {args.holdout}")  # fmt: skip
    if args.hidden_outputs != "all" and not args.hidden:
        raise ValueError(f"--hidden-outputs {args.hidden_outputs!r} chooses outputs of a hidden layer: pass --hidden")
    if args.batch_size < 1 or not args.std_floor > 0:
        raise ValueError(f"--batch-size must be >= 1 and --std-floor > 0, got {args.batch_size} and {args.std_floor}")
    set_threads(args.threads)
    model = load_world_model(args.world_model, None, "cpu")
    game = model.game
    if game.unsquash_action is None:
        raise ValueError(f"the {game.name} game spec has no unsquash_action, so its actions cannot be imitated")
    obs_mode = args.obs_mode or game.obs_mode
    config = ControllerConfig.for_env(DreamEnv(model, obs_mode=obs_mode), dream_id(game.name), hidden=args.hidden)
    hidden_outputs = hidden_output_indices(args.hidden_outputs, config.action_out)
    paths, returns = chosen_episodes(args.latents, args.min_return, args.targets)
    fitted_episodes = len(paths) - int(len(paths) * args.holdout)  # >= 1 as holdout < 1
    generator = torch_generator(torch.device("cpu"), args.seed, 7)
    xs, ys = [], []
    for path in tqdm(paths, desc="imitate: episodes", unit="episode"):
        obs, actions, rewards = episode_observations(model, path, obs_mode, generator, args.targets)
        keep = gains_reward_within(rewards, args.progress_window) if args.progress_window > 0 else slice(None)
        xs.append(obs.numpy()[keep])  # float32: millions of steps x (z, h) are GBs
        ys.append(np.asarray(game.unsquash_action(actions), np.float64).reshape(len(actions), -1)[keep])
    x, y = np.concatenate(xs[:fitted_episodes]), np.concatenate(ys[:fitted_episodes])
    held_out = (
        (np.concatenate(xs[fitted_episodes:]), np.concatenate(ys[fitted_episodes:])) if xs[fitted_episodes:] else None
    )
    del xs, ys
    if args.hidden:
        controller = Controller(config, mlp_fit(x, y, config, args))
        if len(hidden_outputs) < config.action_out:
            controller = beside_linear(controller, ridge_controller(config, x, y, args), hidden_outputs)
    else:
        controller = ridge_controller(config, x, y, args)
    config, params = controller.config, controller.params
    summary = {
        "episodes": fitted_episodes,
        "steps": len(x),
        "mean_return": float(np.mean(returns[:fitted_episodes])),
        **{f"rmse_output{i}": float(v) for i, v in enumerate(rmse(config, params, x, y))},
    }
    if held_out is not None:
        held = rmse(config, params, *held_out)
        summary |= {"heldout_episodes": len(paths) - fitted_episodes,
                    **{f"heldout_rmse_output{i}": float(v) for i, v in enumerate(held)}}  # fmt: skip
    controller.save(args.out, {"imitate": dataclasses.asdict(args) | {"obs_mode": obs_mode}, "fit": summary})
    return controller, summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(ImitateArgs, argv, __doc__)
    _, summary = imitate(args)
    fit = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if "rmse" in k)
    print(f"imitated {summary['episodes']} episodes ({summary['steps']} steps, mean return "
          f"{summary['mean_return']:.1f}); fit {fit}; wrote {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
