"""Run every benchmark; write results.json, results.md (the table docs/benchmarks.md shows) and plots.

    python -m benchmarks.run [--preset quick] [--device cpu|cuda] [--threads N] [--out benchmarks/results]

Benchmarks (``--only`` takes a comma-separated subset):

- ``dream_takecover`` / ``dream_carracing``: dream VectorEnv steps/s at N envs against a bare LSTMCell +
  Linear loop of the same shapes, M's unfused step and the real game (:mod:`benchmarks.dream_steps`);
- ``latent``: the latent wrapper against the raw real game, both games (:mod:`benchmarks.latent_steps`);
- ``train``: V and M training steps against a bare forward + backward (:mod:`benchmarks.train_steps`);
- ``cmaes``: one CMA-ES generation in the dream against the real game on a process pool
  (:mod:`benchmarks.generation`);
- ``memory``: peak memory per dream env (:mod:`benchmarks.memory`).

Every figure is a ratio to a baseline measured in the same run (see :mod:`benchmarks.timing`). Without
``--world-model`` the world models are random with the games' paper sizes (a dream's speed does not
depend on its weights). The ``full`` preset takes several minutes; ``quick`` runs everything at tiny
sizes in seconds, to check the benchmarks work, and its numbers mean little.
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from benchmarks import dream_steps, generation, latent_steps, memory, report, train_steps
from benchmarks.timing import Row, load_or_random, machine_info, usable_cores
from dreamgym.cli_args import parse_args
from dreamgym.devices import resolve_device

BENCHMARKS = ("dream_takecover", "dream_carracing", "latent", "train", "cmaes", "memory")
MEAN_EPISODE_STEPS = 300  # random world models end dream episodes as often as random-policy TakeCover games


@dataclass(frozen=True)
class BenchArgs:
    preset: Literal["full", "quick"] = "full"
    """full: the issue's sizes (minutes); quick: tiny sizes (seconds), to check everything runs"""
    device: str = "cpu"
    """cpu | cuda | auto: where the dream, V and M run (real games always run on the CPU)"""
    threads: int | None = None
    """torch CPU threads (default: every core this process may use)"""
    out: str = "benchmarks/results"
    """folder for results.json, results.md and the plots (a run on another device is added to them)"""
    world_model: str | None = None
    """TakeCover bundle folder or shipped name (default: random weights of the paper's sizes)"""
    carracing_world_model: str | None = None
    """CarRacing bundle folder or shipped name (default: random weights of the paper's sizes)"""
    only: str | None = None
    """comma-separated subset of: dream_takecover, dream_carracing, latent, train, cmaes, memory"""
    workers: int | None = None
    """real-game CMA-ES generation: pool worker processes (default: every usable core; quick: 1)"""


@dataclass(frozen=True)
class Preset:
    dream: dream_steps.DreamSizes
    dream_gpu: dream_steps.DreamSizes
    """the dream's sizes on a GPU, where thousands of envs per step are where it starts to pay"""
    latent_rounds: int
    latent_min_time: float
    train: train_steps.TrainSizes
    generation: generation.GenerationSizes
    memory_envs: tuple[int, int]


PRESETS = {
    "full": Preset(
        dream=dream_steps.DreamSizes(num_envs=(1, 16, 256, 1024, 4096), rounds=5, min_time=0.5),
        dream_gpu=dream_steps.DreamSizes(num_envs=(1024, 4096, 16384, 65536), rounds=5, min_time=0.5),
        latent_rounds=3,
        latent_min_time=1.0,
        train=train_steps.TrainSizes(vae_batch=100, mdnrnn_batch=32, mdnrnn_steps=100, rounds=3, min_time=2.0),
        generation=generation.GenerationSizes(popsize=64, episodes=16, real_seconds=30.0),
        memory_envs=(256, 4096),
    ),
    "quick": Preset(
        dream=dream_steps.DreamSizes(num_envs=(1, 8), rounds=1, min_time=0.01),
        dream_gpu=dream_steps.DreamSizes(num_envs=(8, 64), rounds=1, min_time=0.01),
        latent_rounds=1,
        latent_min_time=0.01,
        train=train_steps.TrainSizes(vae_batch=2, mdnrnn_batch=2, mdnrnn_steps=4, rounds=1, min_time=0.01),
        generation=generation.GenerationSizes(popsize=2, episodes=1, real_seconds=0.0),
        memory_envs=(16, 256),
    ),
}


def selected(only: str | None) -> list[str]:
    if only is None:
        return list(BENCHMARKS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown or not names:
        raise ValueError(f"--only takes a comma-separated subset of {BENCHMARKS}, got {only!r}")
    return names


def run_benchmarks(args: BenchArgs) -> Path:
    """Runs the selected benchmarks and writes the results; returns the results.json path."""
    names = selected(args.only)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads or usable_cores())
    preset = PRESETS[args.preset]
    out = Path(args.out).resolve()
    machine = machine_info(device)
    rows: list[Row] = []
    series: dict[str, dict[str, dict[int, float]]] = {}
    failed: dict[str, str] = {}
    for name in names:
        print(f"benchmark {name} ...", flush=True)
        try:
            new_rows = run_one(name, args, preset, device, series)
        except Exception:  # one broken benchmark must not lose the others' results; the exit status reports it
            failed[name] = traceback.format_exc()
            print(failed[name], file=sys.stderr, flush=True)
            continue
        for row in new_rows:
            print(f"  {row.figure} vs {row.baseline}: {row.value:.4g} {row.unit}, ratio {row.ratio:.3g}", flush=True)
        rows += new_rows
    settings = {**dataclasses.asdict(args), "benchmarks": names, "failed": sorted(failed),
                "preset_sizes": dataclasses.asdict(preset)}  # fmt: skip
    runs = report.save_run(out, device.type, machine, settings, rows, series)
    for key, run in runs.items():
        for name, by_kind in run["series"].items():
            report.plot(out, key, name, {kind: {int(n): v for n, v in by_n.items()} for kind, by_n in by_kind.items()})
    table = report.write_table(out, runs)
    print(f"results: {out / report.RESULTS}, table: {table}")
    if failed:
        raise RuntimeError(f"benchmarks {sorted(failed)} failed (tracebacks above); the others' results are written")
    return out / report.RESULTS


def run_one(name: str, args: BenchArgs, preset: Preset, device: torch.device,
            series: dict[str, dict[str, dict[int, float]]]) -> list[Row]:  # fmt: skip
    """The rows of one benchmark (a dream benchmark also adds its plot series to ``series``)."""
    bundles = {"takecover": args.world_model, "carracing": args.carracing_world_model}
    if name.startswith("dream_"):
        game = name.removeprefix("dream_")
        model = load_or_random(bundles[game], game, MEAN_EPISODE_STEPS, device)
        sizes = preset.dream if device.type == "cpu" else preset.dream_gpu
        rows, series[name] = dream_steps.run(model, sizes, device)
        return rows
    if name == "latent":
        return [row for game in ("takecover", "carracing") for row in latent_steps.run(
            load_or_random(bundles[game], game, MEAN_EPISODE_STEPS, device), preset.latent_rounds,
            preset.latent_min_time, device)]  # fmt: skip
    if name == "train":
        config = load_or_random(args.world_model, "takecover", MEAN_EPISODE_STEPS, device).config
        return train_steps.run(config, preset.train, device)
    if name == "cmaes":
        workers = args.workers or (1 if args.preset == "quick" else usable_cores())
        return generation.run(args.world_model, "takecover", preset.generation, workers, device)
    return memory.run("takecover", preset.memory_envs, device)


def main(argv: list[str] | None = None) -> None:
    run_benchmarks(parse_args(BenchArgs, argv, __doc__))


if __name__ == "__main__":
    main()
