"""DAgger with a game's scripted expert: the clone plays, the expert labels every state, the clone is refit.

    python -m recipes.dagger --game carracing --demos 40 --rounds 4 --episodes-per-round 50 \
        --expert-share 0.3 --out runs/carracing-dagger

Round 0 is ``--init`` (a controller folder) or, without it, a clone of ``--demos`` expert episodes played
with ``--demo-noise`` on its actions. Round k >= 1: round k-1's controller (``--player best``: the best so
far) plays ``--episodes-per-round`` real episodes through ``dreamgym/<Game>Latent-v0`` while the expert
plays a share ``--expert-share * --share-decay**(k-1)`` of the steps (DAgger's beta mixture: the rollouts
get through the places where the clone alone would crash, and are labelled there) and records its own action
in every state visited; all episodes are encoded with the bundle's V, one ridge regression on every label so
far (:func:`agents.imitate.imitate`, ``--targets expert``; ``--hidden H``: a controller with a hidden layer)
gives round k, and it is scored over
``--eval-episodes`` real episodes from seeds ``--eval-seed + j`` (selection seeds, not the test seeds of
``agents.evaluate``). Layout of ``--out``::

    episodes/ latents/ round_00/ round_01/ ...  best/  args.json  dagger.json  dagger.png  tb/

``best/`` is a copy of the highest-scoring round, ``dagger.json`` every round's scores, ``args.json`` the
settings.
Each stage skips what it finds done, so a killed run is finished by rerunning the same command, and
``--rounds`` may be raised to go on; other settings are fixed at the first start.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from dreamgym.checkpoint import load_json, save_json
from dreamgym.cli_args import Bound, Count, NonNegative, NonNegativeFloat, Positive, Probability, parse_args
from dreamgym.data import atomic_write, list_episodes, load_arrays
from dreamgym.envs.registration import latent_id
from dreamgym.experts import with_expert_settings
from dreamgym.games import get_game
from dreamgym.locks import exit_if_busy, folder_lock
from dreamgym.runs import VOLATILE_ARGS, RunArgs, check_args, hand_down

from .stages import collect, encode, evaluate, imitate

SELECTION_SEEDS = 3_000_000
"""Episode seeds that choose between rounds: apart from agents.evaluate's test seeds (1,000,000 + k)."""
STATE_FILE = "dagger.json"
EVALUATION_FILE = "evaluation_selection.json"


@dataclass(frozen=True)
class DaggerArgs(RunArgs):
    """``--seed``: base seed of the collected episodes (training.collect --seed); ``--workers``: processes playing
    the real game; ``--device``: where V encodes the episodes."""

    out: str = "runs/carracing-dagger"
    device: str = "cpu"
    game: str = "carracing"
    """game spec name; the game needs a scripted expert (GameSpec.expert)"""
    expert: str | None = None
    """the expert's settings, a JSON object overriding its defaults (training.collect --expert)"""
    world_model: str | None = None
    """bundle folder or shipped name: its V encodes, its M gives h (default: the game's shipped bundle)"""
    init: str | None = None
    """round 0's controller folder (default: a clone of the demonstrations)"""
    demos: NonNegative = 40
    """expert demonstrations collected first (episodes 0 .. demos-1)"""
    demo_noise: NonNegativeFloat = 0.1
    """std of the Gaussian noise on the demonstrations' actions (states off the expert's own line)"""
    rounds: NonNegative = 3
    """DAgger rounds after round 0"""
    episodes_per_round: Count = 30
    """real episodes each round's controller plays"""
    expert_share: Probability = 0.3
    """share of round 1's steps the expert plays"""
    share_decay: Annotated[float, Bound(0, 1, low_open=True)] = 1.0
    """the share is multiplied by this every round"""
    player: str = "latest"
    """who plays round k: latest (round k-1, DAgger's rule) or best (the best-scoring round so far: while a
    refit on little data scores below the start, the data keeps coming from where the better controller goes)"""
    param_noise: NonNegativeFloat = 0.0
    """std of the noise on the playing controller's parameters, drawn per episode"""
    ridge: NonNegativeFloat = 0.1
    """L2 penalty of the refit (agents.imitate --ridge)"""
    hidden: NonNegative = 0
    """width of the refit controller's tanh hidden layer (agents.imitate --hidden; 0: the paper's linear C)"""
    epochs: Count = 30
    """with --hidden: the refit's epochs (agents.imitate --epochs)"""
    lr: Positive = 1e-3
    """with --hidden: the refit's learning rate (agents.imitate --lr)"""
    batch_size: Count = 512
    """with --hidden: the refit's batch size (agents.imitate --batch-size)"""
    std_floor: Positive = 1e-6
    """with --hidden: agents.imitate --std-floor"""
    hidden_outputs: str = "all"
    """with --hidden: the outputs the hidden layer drives, the others linear (agents.imitate --hidden-outputs)"""
    progress_window: NonNegative = 50
    """fit only steps after which the episode gains reward within this many steps (agents.imitate)"""
    eval_episodes: Count = 10
    """real episodes scoring each round"""
    eval_seed: NonNegative = SELECTION_SEEDS
    """round k's evaluation plays seeds eval_seed + j"""
    max_steps: Count | None = None
    """cap on every real episode (default: the game's own)"""
    ray_address: str | None = None
    """play the real game (collection and scoring) on this Ray cluster instead: auto | HOST:PORT"""


def validate_args(args: DaggerArgs) -> None:
    """One clear error for settings that cannot work, before any episode is played."""
    collect.require_expert(with_expert_settings(get_game(args.game), args.expert))
    if args.demos < 0 or args.rounds < 0 or args.episodes_per_round < 1 or args.eval_episodes < 1:
        raise ValueError("--demos and --rounds must be >= 0, --episodes-per-round and --eval-episodes >= 1")
    if args.init is None and args.demos == 0:
        raise ValueError("round 0 needs --init (a controller folder) or --demos > 0 to clone")
    if not (0 <= args.expert_share <= 1 and 0 < args.share_decay <= 1):
        raise ValueError(f"--expert-share must be in [0, 1] and --share-decay in (0, 1], got "
                         f"{args.expert_share} and {args.share_decay}")  # fmt: skip
    if args.player not in ("latest", "best"):
        raise ValueError(f"--player must be latest or best, got {args.player!r}")
    if args.init is not None and not (Path(args.init) / "controller.json").is_file():
        raise FileNotFoundError(f"--init {args.init!r}: no controller.json there")


def share_of(args: DaggerArgs, round_index: int) -> float:
    """The expert's share of round ``round_index``'s steps (round 0 plays none)."""
    return 0.0 if round_index == 0 else args.expert_share * args.share_decay ** (round_index - 1)


def round_dir(out: Path, round_index: int) -> Path:
    return out / f"round_{round_index:02d}"


def load_state(out: Path) -> dict[str, Any]:
    """The run's record of finished rounds (empty at the first start)."""
    path = out / STATE_FILE
    return load_json(path) if path.is_file() else {"rounds": []}


def episode_returns(latents: Path, first: int, stop: int) -> list[float]:
    """Returns of latent files ``first .. stop-1`` (the episodes one round played)."""
    return [float(load_arrays(p, ("rewards",))["rewards"].sum()) for p in list_episodes(latents)[first:stop]]


def copy_controller(source: Path, target: Path) -> None:
    """Replaces ``target`` by a copy of the controller folder ``source`` (copied aside, then renamed)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def plot_rounds(path: Path, rounds: list[dict[str, Any]], title: str) -> None:
    """Each round's selection score (mean +- std) and its rollouts' mean return, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    k = [r["round"] for r in rounds]
    ax.errorbar(k, [r["eval_mean"] for r in rounds], yerr=[r["eval_std"] for r in rounds], fmt="o-", capsize=3,
                label="clone alone (selection episodes)")  # fmt: skip
    played = [r for r in rounds if r.get("rollout_mean") is not None]
    if played:
        ax.plot([r["round"] for r in played], [r["rollout_mean"] for r in played], "s--",
                label="its rollouts (with the expert's share)")  # fmt: skip
    ax.set(xlabel="DAgger round", ylabel="return", title=title)
    ax.set_xticks(k)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def log_round(writer: SummaryWriter, r: dict[str, Any]) -> None:
    """One finished round's line on stdout and scalars in TensorBoard (step = round)."""
    for name in ("eval_mean", "expert_share", "rollout_mean"):
        if r.get(name) is not None:
            writer.add_scalar(f"dagger/{name}", r[name], r["round"])
    print(f"dagger round {r['round']}: {r['eval_mean']:.1f} ± {r['eval_std']:.1f} over {r['eval_episodes']} real "
          f"episodes (expert share {r['expert_share']:.2f}, {r['episodes_total']} episodes)")  # fmt: skip


class DaggerRun:
    """The stages of one run folder; every method skips the work it finds done."""

    def __init__(self, args: DaggerArgs) -> None:
        validate_args(args)
        self.args = args
        self.spec = get_game(args.game)
        self.world_model = args.world_model or self.spec.name
        self.out = Path(args.out)
        self.episodes = self.out / "episodes"
        self.latents = self.out / "latents"
        self.out.mkdir(parents=True, exist_ok=True)
        check_args(self.out, args, VOLATILE_ARGS | {"rounds", "workers", "ray_address"})  # --rounds may grow
        self.state = load_state(self.out)

    def collect(self, total: int, **player: Any) -> None:
        a = self.args
        collect.collect(hand_down(collect.CollectArgs(), a, game=a.game, episodes=total, ray_address=a.ray_address,
                                  out=str(self.episodes), max_steps=a.max_steps, world_model=self.world_model,
                                  obs_mode=self.spec.obs_mode, param_noise=a.param_noise, expert_labels=True,
                                  expert=a.expert, **player))  # fmt: skip
        encode.encode(hand_down(encode.EncodeArgs(), a, vae=self.world_model, episodes=str(self.episodes),
                                out=str(self.latents)))  # fmt: skip

    def fit(self, folder: Path) -> dict[str, float]:
        a = self.args
        refit = imitate.ImitateArgs(world_model=self.world_model, latents=str(self.latents), out=str(folder),
                                    obs_mode=self.spec.obs_mode, targets="expert", ridge=a.ridge,
                                    hidden=a.hidden, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
                                    std_floor=a.std_floor, hidden_outputs=a.hidden_outputs,
                                    progress_window=a.progress_window, threads=a.threads)  # fmt: skip
        _, summary = imitate.imitate(refit)
        return summary

    def score(self, folder: Path) -> dict[str, Any]:
        a = self.args
        path = folder / EVALUATION_FILE
        if path.is_file():
            return load_json(path)
        kwargs = {} if a.max_steps is None else {"max_episode_steps": a.max_steps}
        scoring = evaluate.EvalArgs(env=latent_id(a.game), world_model=self.world_model, obs_mode=self.spec.obs_mode,
                                    env_kwargs=json.dumps(kwargs), device="cpu", workers=a.workers,
                                    backend="pool" if a.ray_address is None else "ray", ray_address=a.ray_address,
                                    threads=a.threads, controller=str(folder), episodes=a.eval_episodes,
                                    seed=a.eval_seed, out=str(path))  # fmt: skip
        return evaluate.evaluate(scoring)

    def player(self, k: int) -> int:
        """The round whose controller plays round ``k`` (k >= 1)."""
        if self.args.player == "latest":
            return k - 1
        return max(self.state["rounds"][:k], key=lambda r: r["eval_mean"])["round"]

    def play_round(self, k: int) -> dict[str, Any]:
        """Round ``k``: its data, its controller and its score (round 0: the demonstrations and the start)."""
        a, folder = self.args, round_dir(self.out, k)
        start = time.perf_counter()
        total = a.demos + k * a.episodes_per_round
        record: dict[str, Any] = {"round": k, "expert_share": share_of(a, k), "episodes_total": total}
        if k == 0:
            if a.demos:
                self.collect(a.demos, exploration="expert", action_noise=a.demo_noise)
                record["demo_mean"] = float(np.mean(episode_returns(self.latents, 0, a.demos)))
        else:
            found = len(list_episodes(self.episodes))
            if found > total:
                raise ValueError(f"{self.episodes} holds {found} episodes, more than the {total} rounds 0-{k} play: "
                                 f"they would be taken for round {k}'s rollouts; pass another --out")  # fmt: skip
            record["player"] = self.player(k)
            self.collect(total, controller=str(round_dir(self.out, record["player"])), expert_share=share_of(a, k))
            record["rollout_mean"] = float(np.mean(episode_returns(self.latents, total - a.episodes_per_round, total)))
        if not (folder / "controller.json").is_file():
            if k == 0 and a.init is not None:
                copy_controller(Path(a.init), folder)
            else:
                record["fit"] = self.fit(folder)
        report = self.score(folder)
        record |= {"eval_mean": report["mean"], "eval_std": report["std"], "eval_episodes": report["episodes"],
                   "eval_seed": a.eval_seed, "seconds": time.perf_counter() - start}  # fmt: skip
        return record

    def run(self) -> dict[str, Any]:
        """Every round not done yet, then ``best/``; holds the lock of ``--out`` (one run per folder)."""
        with folder_lock(self.out):
            return self._run()

    def _run(self) -> dict[str, Any]:
        writer = SummaryWriter(str(self.out / "tb"))
        rounds = {r["round"]: r for r in self.state["rounds"]}
        try:
            for k in range(self.args.rounds + 1):
                if k not in rounds:
                    rounds[k] = self.play_round(k)
                    self.state["rounds"] = [rounds[i] for i in sorted(rounds)]
                    save_json(self.out / STATE_FILE, self.state)
                    log_round(writer, rounds[k])
        finally:
            writer.close()
        done = self.state["rounds"]
        best = max(done, key=lambda r: r["eval_mean"])
        copy_controller(round_dir(self.out, best["round"]), self.out / "best")
        self.state["best"] = best["round"]
        save_json(self.out / STATE_FILE, self.state)
        plot_rounds(self.out / "dagger.png", done, f"DAgger on {self.spec.name}")
        return self.state


def main(argv: list[str] | None = None) -> None:
    with exit_if_busy():
        state = DaggerRun(parse_args(DaggerArgs, argv, __doc__)).run()
    best = state["rounds"][state["best"]]
    print(f"best: round {best['round']}, {best['eval_mean']:.1f} ± {best['eval_std']:.1f}; copied to best/")


if __name__ == "__main__":
    main()
