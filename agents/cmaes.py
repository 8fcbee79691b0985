"""Train a linear controller with CMA-ES (pycma), in a dream or any Gymnasium env, resumably.

    python -m agents.cmaes --env dreamgym/TakeCoverDream-v0 --world-model runs/takecover/world_model
    python -m agents.cmaes --env CartPole-v1 --popsize 16 --episodes 4 --generations 20

Each generation samples ``--popsize`` candidates around the ES mean (x0 = 0, or the parameters of the
``--init`` controller for a fine-tune, e.g. of a dream-trained controller in the real game; sigma0 = 0.1) and scores
each as its mean return over ``--episodes`` episodes, all P·E episodes played by one backend call (see
:mod:`agents.backends`). Every generation writes, under ``--out`` (default ``runs/cmaes/<env>__<seed>``):
``best/`` and ``mean/`` controllers, ``fitness.csv``, ``fitness.png``, TensorBoard events in ``tb/``, and
last ``checkpoint/state.npz`` (whole ES state + history, one atomic file). A run killed at any moment
resumes from its last checkpoint when rerun with the same command and, because every generation's
sampling and episodes are seeded from (--seed, generation), continues exactly as if never stopped.

A fine-tune in a slow real game can afford a few dozen episodes per generation, too few for the tens of
thousands of parameters of a cloned controller: ``--tune bias`` searches only the named tensors (here the
output bias) and keeps the others at ``--init``'s, and ``--common-seeds`` gives every candidate the same
episodes, so candidates are compared on the same tracks.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import cma
import numpy as np
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from dreamgym.checkpoint import CheckpointError, load_json, save_json
from dreamgym.cli_args import Count, NonNegative, NonNegativeFloat, Positive, parse_args
from dreamgym.controller import Controller, ControllerConfig
from dreamgym.data import load_arrays, save_arrays

from .backends import EnvArgs, make_evaluator, probe_config
from .es_state import es_to_plain, restore_es
from .rollout import Evaluator, Scores, derive_seed
from .runlog import COLUMNS, log_row, plot_fitness, write_csv

# Settings that may change when resuming a run; any other difference means a different run.
_RESUMABLE = {"generations", "out", "device", "backend", "workers", "ray_address", "episode_timeout", "threads"}
_TRAIN_STREAM, _EVAL_STREAM, _SAMPLE_STREAM = 0, 1, 2


@dataclass(frozen=True)
class TrainArgs(EnvArgs):
    """``--seed``: every generation's candidates and episode seeds derive from (seed, generation); ``--out``: the
    run folder (default runs/cmaes/<env>__<seed>)."""

    generations: Count = 200
    """total generations (rerun with a larger value to continue a finished run)"""
    popsize: Count = 64
    """candidates per generation"""
    episodes: Count = 16
    """episodes per candidate; its fitness is their mean return"""
    sigma0: Positive = 0.1
    """initial CMA-ES step size"""
    init: str | None = None
    """controller folder whose parameters are the ES's starting mean (default: zeros); it must fit --env"""
    weight_decay: NonNegativeFloat = 0.0
    """L2 penalty: the ES maximises mean return - weight_decay * mean(params ** 2), over the params it searches"""
    bias: bool | None = None
    """controller bias (default: the paper's choice for the game, no bias for TakeCover, else bias)"""
    hidden: NonNegative = 0
    """width of the controller's tanh hidden layer (0: the paper's linear controller)"""
    skip: bool = False
    """with --hidden: also a linear map of the observation beside the hidden layer (ControllerConfig.skip)"""
    common_seeds: bool = False
    """every candidate of a generation plays the same --episodes seeds (common random numbers: in games as
    varied as CarRacing's tracks, candidates are then ranked by how they drive, not by the tracks they drew)"""
    tune: str = "all"
    """all, or comma-separated controller tensors (e.g. ``bias``) that the ES searches while the others keep
    --init's values: a real-game fine-tune of a large controller in the few dimensions real episodes can afford"""
    eval_every: NonNegative = 25
    """evaluate the ES mean on --eval-episodes episodes every N generations; 0 = never"""
    eval_episodes: Count = 1024
    """episodes of each evaluation of the ES mean"""


def run_dir(args: TrainArgs) -> Path:
    return Path(args.out) if args.out else Path("runs/cmaes") / f"{args.env.replace('/', '_')}__{args.seed}"


class SeededNormal:
    """pycma's N(0, 1) source (its ``randn`` option), reseeded before every ``ask``.

    pycma otherwise draws from NumPy's global RNG; reseeding from (seed, generation) makes each
    generation's candidates depend only on the saved ES state and the generation, so a resumed run
    samples exactly what an uninterrupted one would.
    """

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def reseed(self, *keys: int) -> None:
        self.rng = np.random.default_rng(list(keys))

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


def initial_mean(args: TrainArgs, config: ControllerConfig) -> np.ndarray:
    """x0: zeros, or the ``--init`` controller's parameters (float64) when its config is ``config``'s."""
    if args.init is None:
        return np.zeros(config.n_params)
    start = Controller.load(args.init)
    ours, theirs = dataclasses.asdict(config), dataclasses.asdict(start.config)
    diff = {k: (theirs[k], v) for k, v in ours.items() if k != "env_id" and theirs[k] != v}
    if diff:
        changes = ", ".join(f"{k}: {old!r} (controller) vs {new!r} ({args.env})" for k, (old, new) in diff.items())
        raise ValueError(f"--init {args.init} does not fit {args.env}: {changes}")
    return start.params.astype(np.float64)


@dataclass(frozen=True)
class Subspace:
    """The entries ``index`` of the flat parameters that the ES searches; the others stay at ``base``."""

    base: np.ndarray
    index: np.ndarray

    def expand(self, solutions: np.ndarray) -> np.ndarray:
        """ES solutions (P, k) -> full flat parameters (P, n)."""
        full = np.repeat(self.base[None], len(solutions), axis=0)
        full[:, self.index] = solutions
        return full


def search_subspace(args: TrainArgs, config: ControllerConfig, x0: np.ndarray) -> Subspace:
    """What ``--tune`` lets the ES move: every parameter, or the named tensors of ``--init``'s controller."""
    if args.tune == "all":
        return Subspace(x0, np.arange(config.n_params))
    if args.init is None:
        raise ValueError(f"--tune {args.tune!r} needs --init: the controller whose other tensors stay fixed")
    slices = config.param_slices()
    names = [part for part in args.tune.split(",") if part]
    if not names or set(names) - set(slices):
        raise ValueError(f"--tune must be all or comma-separated tensors of the controller ({', '.join(slices)}); "
                         f"got {args.tune!r}")  # fmt: skip
    index = np.arange(config.n_params)
    return Subspace(x0, np.concatenate([index[slices[name]] for name in dict.fromkeys(names)]))


def new_es(x0: np.ndarray, args: TrainArgs) -> cma.CMAEvolutionStrategy:
    options = {
        "popsize": args.popsize,
        "seed": np.nan,
        "randn": SeededNormal(),
        "verbose": -9,
        "verb_log": 0,
        "verb_disp": 0,
    }
    return cma.CMAEvolutionStrategy(x0, args.sigma0, options)


def penalised_costs(fitness: np.ndarray, solutions: np.ndarray, weight_decay: float) -> np.ndarray:
    """pycma minimises: cost = -(fitness - weight_decay * mean(x ** 2)), so large weights cost more.

    (The original World Models helper added the decay to the negated reward with the opposite sign,
    rewarding large weights.)
    """
    return -(fitness - weight_decay * np.mean(np.square(solutions), axis=1))


@dataclass
class RunState:
    """Everything a run needs to continue: the ES, finished generations, history, best candidate so far,
    and the starting parameters (``--init``'s, whose tensors outside ``--tune`` stay fixed; None in runs
    checkpointed before they were saved)."""

    es: cma.CMAEvolutionStrategy
    generation: int
    history: np.ndarray
    best_params: np.ndarray
    best_fitness: float
    start: np.ndarray | None


_STATE_KEYS = ("es_tree", "generation", "history", "best_params", "best_fitness")


def save_checkpoint(path: Path, state: RunState) -> None:
    """One atomic npz of plain arrays (the ES as :func:`agents.es_state.es_to_plain`): a killed write leaves
    the previous checkpoint intact, and loading it never runs code."""
    save_arrays(
        path,
        es_to_plain(state.es)
        | {
            "generation": np.asarray(state.generation),
            "history": state.history,
            "best_params": state.best_params,
            "best_fitness": np.asarray(state.best_fitness),
        }
        | ({} if state.start is None else {"start": state.start}),
    )


def load_checkpoint(path: Path, fresh: cma.CMAEvolutionStrategy) -> RunState:
    """The run state saved at ``path``, its ES restored into ``fresh`` (a :func:`new_es` of the same run).

    Any unreadable file, including a checkpoint of an older dreamgym (which pickled the ES), is a
    :class:`CheckpointError` saying how to start over.
    """
    try:
        data = load_arrays(path, _STATE_KEYS, optional=None)
        es = restore_es(fresh, data)
        generation, best_fitness = int(data["generation"]), float(data["best_fitness"])
    except (ValueError, TypeError) as err:  # ShardError, ESStateError, or a misshapen number
        raise CheckpointError(
            f"{path}: cannot resume, the checkpoint is from an older dreamgym version or corrupt ({err}); "
            f"delete {path.parent} to restart the run from generation 0, or pass a new --out"
        ) from err
    return RunState(es, generation, data["history"], data["best_params"], best_fitness, data.get("start"))


def _check_same_run(out: Path, args: TrainArgs) -> None:
    defaults = {field.name: field.default for field in dataclasses.fields(TrainArgs)}
    saved = defaults | load_json(out / "args.json")  # runs saved before a setting existed had its default
    current = dataclasses.asdict(args)
    diff = {k: (saved.get(k), v) for k, v in current.items() if k not in _RESUMABLE and saved.get(k) != v}
    if diff:
        changes = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
        raise ValueError(f"{out} holds a run with other settings ({changes}); pass another --out to start a new run")


def _save_outputs(out: Path, state: RunState, config: ControllerConfig, subspace: Subspace, args: TrainArgs) -> None:
    """best/ and mean/ controllers, fitness.csv and fitness.png for the state after a generation."""
    provenance = {
        "trained_by": "agents.cmaes",
        "env_id": args.env,
        "seed": args.seed,
        "generation": state.generation,
        "run": str(out),
    }
    Controller(config, state.best_params).save(out / "best", {**provenance, "fitness": state.best_fitness})
    Controller(config, subspace.expand(state.es.mean[None])[0]).save(out / "mean", provenance)
    write_csv(out / "fitness.csv", state.history)
    plot_fitness(out / "fitness.png", state.history, f"CMA-ES on {args.env}")


def train(args: TrainArgs) -> Path:
    """Runs (or resumes) CMA-ES until ``args.generations`` generations are done; returns the run folder."""
    if min(args.popsize, args.episodes, args.generations) < 1 or min(args.eval_every, args.seed) < 0:
        raise ValueError("--popsize, --episodes and --generations must be >= 1, --eval-every and --seed >= 0")
    out = run_dir(args)
    checkpoint = out / "checkpoint" / "state.npz"
    config = probe_config(args, args.bias, args.hidden, args.skip)
    x0 = initial_mean(args, config)  # before anything is written: a misfit --init leaves no run behind
    subspace = search_subspace(args, config, x0)
    if checkpoint.exists():
        _check_same_run(out, args)
        state = load_checkpoint(checkpoint, new_es(x0[subspace.index], args))
        if len(state.best_params) != config.n_params:
            raise ValueError(f"{checkpoint}: {len(state.best_params)} parameters, the env needs {config.n_params}")
        if state.start is not None and not np.array_equal(state.start, x0):
            raise ValueError(f"--init {args.init} has changed since {out} started; its fixed tensors would change "
                             "mid-run: restore it or pass another --out")  # fmt: skip
    else:
        save_json(out / "args.json", dataclasses.asdict(args))
        empty = np.zeros((0, len(COLUMNS)))
        state = RunState(new_es(x0[subspace.index], args), 0, empty, x0.copy(), -np.inf, x0)
    evaluator = make_evaluator(args, config)
    writer = SummaryWriter(str(out / "tb"), purge_step=state.generation or None)
    bar = tqdm(
        range(state.generation, args.generations),
        initial=state.generation,
        total=args.generations,
        desc=f"cmaes {args.env}",
    )
    try:
        for gen in bar:
            row = run_generation(state, evaluator, subspace, args, gen)
            log_row(writer, row)
            _save_outputs(out, state, config, subspace, args)
            save_checkpoint(checkpoint, state)  # last: the commit point of this generation
            bar.set_postfix(best=f"{row[1]:.1f}", mean=f"{row[2]:.1f}")
    finally:
        writer.close()
        evaluator.close()
    return out


def run_generation(state: RunState, evaluator: Evaluator, subspace: Subspace, args: TrainArgs, gen: int) -> np.ndarray:
    """Ask, score, tell (and maybe evaluate the ES mean); updates ``state`` and returns the history row."""
    start = time.perf_counter()
    state.es.opts["randn"].reseed(args.seed, gen, _SAMPLE_STREAM)
    solutions = np.asarray(state.es.ask())  # (P, k) float64, k = the searched parameters
    candidates = subspace.expand(solutions)
    seed = derive_seed(args.seed, gen, _TRAIN_STREAM)
    if args.common_seeds:
        each = [evaluator.evaluate(candidate[None], args.episodes, seed) for candidate in candidates]
        scores = Scores(*(np.concatenate([getattr(s, f.name) for s in each]) for f in dataclasses.fields(Scores)))
    else:
        scores = evaluator.evaluate(candidates, args.episodes, seed)
    fitness = scores.returns.mean(axis=1)
    state.es.tell(list(solutions), penalised_costs(fitness, solutions, args.weight_decay).tolist())
    if fitness.max() > state.best_fitness:
        state.best_params, state.best_fitness = candidates[fitness.argmax()].copy(), float(fitness.max())
    eval_mean = eval_std = np.nan
    steps = int(scores.lengths.sum())
    if args.eval_every and (gen + 1) % args.eval_every == 0:
        evaluation = evaluator.evaluate(
            subspace.expand(state.es.mean[None]), args.eval_episodes, derive_seed(args.seed, gen, _EVAL_STREAM)
        )
        eval_mean, eval_std = evaluation.returns.mean(), evaluation.returns.std()
        steps += int(evaluation.lengths.sum())
    row = np.array(
        [
            gen,
            fitness.max(),
            fitness.mean(),
            fitness.min(),
            state.es.sigma,
            eval_mean,
            eval_std,
            steps,
            time.perf_counter() - start,
        ]
    )
    state.history = np.concatenate([state.history, row[None]])
    state.generation = gen + 1
    return row


def main(argv: list[str] | None = None) -> None:
    try:
        out = train(parse_args(TrainArgs, argv, __doc__))
    except CheckpointError as err:
        raise SystemExit(f"agents.cmaes: {err}") from None
    print(f"run folder: {out}")


if __name__ == "__main__":
    main()
