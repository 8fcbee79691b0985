"""The whole pipeline, one resumable command: collect -> vae -> encode -> mdnrnn -> bundle -> controller -> evaluate
[-> sweep].

    python -m recipes.pipeline --game takecover --preset quick [--out runs/takecover-quick] [--device auto]
    python -m recipes.pipeline --game takecover --preset quick --world-model takecover   # shipped dream only

Each stage is a function of the run's :class:`Context` that skips or resumes from its own outputs, so a
killed pipeline is finished by rerunning the same command. Presets: ``quick`` is a smoke-scale demo
sized for TakeCover on 2 CPU cores (about 15 minutes end to end on an idle machine); ``paper`` uses the
paper's data and model sizes (hours on a GPU, days on 2 cores) and ends with the paper's temperature
sweep (:mod:`recipes.temperature_sweep`, its table and plot). Output folders under ``--out``::

    episodes/  vae/  latents/  mdnrnn/  world_model/  controller/  evaluation.json  [sweep/]

With a sweep, the controller stage trains the sweep's own run at ``--temperature`` (``sweep/tau1.15/``
for TakeCover), so that temperature is not trained twice.

With ``--world-model`` (a bundle folder or a shipped name) the stages that build a world model are skipped
and only the controller is trained, in that dream, and scored. Wall and CPU seconds of every stage are
added up in ``timings.json``.

The controller is trained with CMA-ES only inside the dream (``dreamgym/<Game>Dream-v0``) and then
scored in the real game through the latent wrapper (``dreamgym/<Game>Latent-v0``); the evaluate stage's last
line is that real-game score. ``--trainer dagger`` trains it instead by DAgger with the game's scripted expert
in the real game (:mod:`recipes.dagger`, into ``dagger/``; CarRacing's shipped controller was made so) and
scores its best round the same way::

    python -m recipes.pipeline --game carracing --preset quick --world-model carracing --trainer dagger
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dreamgym.checkpoint import load_json, save_json
from dreamgym.cli_args import Count, NonNegative, Positive, parse_args
from dreamgym.envs.registration import latent_id
from dreamgym.games import get_game

from .dagger import DaggerArgs, DaggerRun
from .dagger import validate_args as validate_dagger_args
from .stages import bundle, cmaes, collect, encode, evaluate, mdnrnn, vae
from .temperature_sweep import SweepArgs, tau_dir
from .temperature_sweep import sweep as temperature_sweep
from .temperature_sweep import train_args as sweep_train_args

# The settings of CarRacing's shipped controller (docs/carracing.md: braking expert, a hidden layer for steering and
# brake, 300 episodes a round), started from 300 demonstrations instead of the 3,300 relabelled episodes it had; this
# preset's own score has not been measured. A preset's DaggerArgs hold sizes only: the run's game, folders, seed and
# resources come from the pipeline's command line (Context.dagger_args).
SESSION_DAGGER = DaggerArgs(demos=300, rounds=3, episodes_per_round=300, eval_episodes=20, expert_share=0.15,
                            share_decay=2 / 3, player="latest", hidden=256, hidden_outputs="0,2", epochs=12, lr=2e-3,
                            batch_size=2048, std_floor=0.1, expert='{"braking_plan": true}')  # fmt: skip


@dataclass(frozen=True)
class Preset:
    """Data and training sizes of one pipeline run (model widths other than M's come from the game spec)."""

    episodes: int
    """random-policy episodes collected"""
    vae_epochs: int
    vae_max_steps: int | None
    """cap on V's optimizer steps (batches of 100 frames)"""
    vae_lr: float
    """V's Adam learning rate (the paper's 1e-4 needs its 10 epochs)"""
    mdnrnn_hidden: int | None
    """M's LSTM units (None: the game's, 512 for TakeCover)"""
    mdnrnn_seq_len: int
    mdnrnn_batch: int
    mdnrnn_epochs: int
    num_initial: int
    """real initial latents stored in the bundle"""
    cmaes_generations: int
    cmaes_popsize: int
    cmaes_episodes: int
    """dream episodes per CMA-ES candidate"""
    eval_episodes: int
    """real-game episodes scoring the trained controller"""
    sweep_taus: tuple[float, ...] = ()
    """temperatures of the closing temperature sweep (each trained as the controller, scored over
    eval_episodes dreams and real games); empty: no sweep"""
    vae_episodes: int | None = None
    """V trains on the first N collected episodes (None: all of them); M always sees all"""
    initial_step: int = 0
    """dreams start from this frame of real episodes (training.bundle --initial-step)"""
    dagger: DaggerArgs | None = None
    """sizes of the controller stage with ``--trainer dagger`` (None: this preset has none)"""


PRESETS: dict[str, Preset] = {
    # Measured on 2 idle cores (AVX-512): 10.6 min end to end; collection 1.5 min, V 4.6 min (1,200 steps of
    # 100 frames), encoding 0.6 min, M 2.2 min, CMA-ES 30 x (32 x 8 dreams) 1.4 min, 50 real episodes 0.3 min.
    "quick": Preset(
        episodes=400,
        vae_epochs=1,
        vae_max_steps=1200,
        vae_lr=1e-4,
        mdnrnn_hidden=256,
        mdnrnn_seq_len=600,
        mdnrnn_batch=16,
        mdnrnn_epochs=40,
        num_initial=400,
        cmaes_generations=30,
        cmaes_popsize=32,
        cmaes_episodes=8,
        eval_episodes=50,
        dagger=DaggerArgs(
            demos=40,
            rounds=2,
            episodes_per_round=30,
            eval_episodes=10,
            expert_share=0.15,
            share_decay=2 / 3,
            player="latest",
        ),
    ),
    # Round 0 of the shipped TakeCover world model (docs/takecover.md): the paper's model sizes, data and steps cut
    # to one session on 2 AVX2 CPU cores (V trains at ~235 images/s there): V 4,000 steps (~0.65 epoch) at a 5x
    # higher learning rate, M 20 epochs of 1,900 episodes. Its controller stage was not the one measured: the
    # shipped controllers came from recipes.temperature_sweep (50 and 30 generations of 32 x 16).
    "session": Preset(
        episodes=2000,
        vae_epochs=1,
        vae_max_steps=4000,
        vae_lr=5e-4,
        mdnrnn_hidden=None,
        mdnrnn_seq_len=1000,
        mdnrnn_batch=16,
        mdnrnn_epochs=20,
        num_initial=1000,
        cmaes_generations=80,
        cmaes_popsize=32,
        cmaes_episodes=16,
        eval_episodes=100,
        dagger=SESSION_DAGGER,
    ),
    # The paper: 10k episodes, V 10 epochs, M 512 units ~4k steps of 100 whole episodes (<= 1000 steps).
    "paper": Preset(
        episodes=10_000,
        vae_epochs=10,
        vae_max_steps=None,
        vae_lr=1e-4,
        mdnrnn_hidden=None,
        mdnrnn_seq_len=1000,
        mdnrnn_batch=100,
        mdnrnn_epochs=42,
        num_initial=1000,
        cmaes_generations=200,
        cmaes_popsize=64,
        cmaes_episodes=16,
        eval_episodes=100,
        sweep_taus=(0.1, 0.5, 1.0, 1.15, 1.3),
    ),
}


# A game's own sizes for a preset name, where the shared ones do not fit it (``--game carracing --preset session``).
GAME_PRESETS: dict[tuple[str, str], Preset] = {
    # CarRacing round 0 (docs/carracing.md): CarRacing-v3 renders at ~60 steps/s per busy core here, so data is the
    # bottleneck: 275 episodes of 1,000 steps in 60 min with 2 workers, V on the first 100 while collection went on
    # (1,500 steps, 38 min), M 60 epochs x 17 steps (18 min), CMA-ES in the dream at tau 1.0 (9 min). Since
    # then its dreams start after the zoom-in (frame 60) at the game's tau 0.1; docs/carracing.md's later rounds add
    # steady-follower demonstrations, agents.imitate and iterations, which this preset does not run.
    ("carracing", "session"): Preset(
        episodes=275,
        vae_epochs=10,
        vae_max_steps=1500,
        vae_lr=5e-4,
        vae_episodes=100,
        mdnrnn_hidden=None,
        mdnrnn_seq_len=1000,
        mdnrnn_batch=16,
        mdnrnn_epochs=60,
        num_initial=275,
        initial_step=60,
        cmaes_generations=60,
        cmaes_popsize=32,
        cmaes_episodes=8,
        eval_episodes=100,
        dagger=SESSION_DAGGER,
    ),
}


def preset_for(game: str, name: str) -> Preset:
    """The preset ``name`` for ``game``: the game's own sizes if it has them, else the shared ones."""
    own = GAME_PRESETS.get((get_game(game).name, name))
    if own is not None:
        return own
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class PipelineArgs:
    game: str = "takecover"
    """game: spec name, or a spec's import path package.module:SPEC (dreamgym.games.get_game)"""
    preset: str = "quick"
    """quick, session or paper (a game may have its own sizes for one: GAME_PRESETS)"""
    out: str | None = None
    """run folder (default: runs/<game>-<preset>)"""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto for V and M"""
    threads: Count | None = None
    """torch CPU threads"""
    workers: Count = 2
    """collection worker processes"""
    seed: NonNegative = 0
    """seed of every stage"""
    stop_after: str | None = None
    """name of the last stage to run (default: all)"""
    temperature: Positive | None = None
    """dream temperature tau for controller training (default: the game's, 1.15 for TakeCover)"""
    obs_mode: str | None = None
    """controller input: zh, zch or z (default: the paper's for the game, zch for TakeCover, zh for CarRacing)"""
    trainer: str = "cmaes"
    """how the controller stage trains C: cmaes (CMA-ES inside the dream, the paper's) or dagger (imitation of
    the game's scripted expert in the real game, recipes.dagger; the preset's dagger sizes)"""
    world_model: str | None = None
    """train the controller in this bundle (a folder, or a shipped name such as takecover) and skip the stages
    that build one (collect, vae, encode, mdnrnn, bundle)"""


@dataclass(frozen=True)
class Context:
    """What every stage sees: the command line, its preset and the run's folders."""

    args: PipelineArgs
    preset: Preset
    out: Path

    @property
    def episodes(self) -> Path:
        return self.out / "episodes"

    @property
    def vae(self) -> Path:
        return self.out / "vae"

    @property
    def latents(self) -> Path:
        return self.out / "latents"

    @property
    def mdnrnn(self) -> Path:
        return self.out / "mdnrnn"

    @property
    def world_model(self) -> Path | str:
        return self.args.world_model or self.out / "world_model"

    @property
    def temperature(self) -> float:
        """The controller's dream temperature: ``--temperature`` or the game's default."""
        return get_game(self.args.game).dream_temperature if self.args.temperature is None else self.args.temperature

    @property
    def obs_mode(self) -> str:
        return self.args.obs_mode or get_game(self.args.game).obs_mode

    @property
    def sweep(self) -> Path:
        return self.out / "sweep"

    @property
    def controller(self) -> Path:
        return tau_dir(self.sweep, self.temperature) if self.preset.sweep_taus else self.out / "controller"

    @property
    def dagger(self) -> Path:
        return self.out / "dagger"

    @property
    def trained_controller(self) -> Path:
        """The controller folder the evaluate stage scores: CMA-ES's final mean, or DAgger's best round."""
        return self.dagger / "best" if self.args.trainer == "dagger" else self.controller / "mean"

    def dagger_args(self) -> DaggerArgs:
        a, d = self.args, self.preset.dagger
        if d is None:
            raise ValueError(f"preset {a.preset!r} has no DAgger sizes for --trainer dagger")
        return dataclasses.replace(
            d,
            game=a.game,
            out=str(self.dagger),
            world_model=str(self.world_model),
            seed=a.seed,
            workers=a.workers,
            device=a.device,
            threads=a.threads,
        )

    def sweep_args(self) -> SweepArgs:
        """The preset's CMA-ES and scoring settings as a sweep over its ``sweep_taus`` (maybe none)."""
        a, p = self.args, self.preset
        return SweepArgs(
            world_model=str(self.world_model),
            taus=",".join(f"{tau:g}" for tau in p.sweep_taus),
            obs_mode=self.obs_mode,
            generations=p.cmaes_generations,
            popsize=p.cmaes_popsize,
            episodes=p.cmaes_episodes,
            dream_episodes=p.eval_episodes,
            real_episodes=p.eval_episodes,
            seed=a.seed,
            workers=a.workers,
            threads=a.threads,
            device=a.device,
            out=str(self.sweep),
        )


def run_collect(ctx: Context) -> None:
    a = ctx.args
    collect.collect(collect.CollectArgs(game=a.game, episodes=ctx.preset.episodes, workers=a.workers,
                                        out=str(ctx.episodes), seed=a.seed))  # fmt: skip


def run_vae(ctx: Context) -> None:
    a, p = ctx.args, ctx.preset
    vae.train_vae(
        vae.VAEArgs(
            out=str(ctx.vae),
            device=a.device,
            threads=a.threads,
            seed=a.seed,
            epochs=p.vae_epochs,
            max_steps=p.vae_max_steps,
            lr=p.vae_lr,
            episodes=str(ctx.episodes),
            max_episodes=p.vae_episodes,
            game=a.game,
        )
    )


def run_encode(ctx: Context) -> None:
    a = ctx.args
    encode.encode(
        encode.EncodeArgs(
            vae=str(ctx.vae), episodes=str(ctx.episodes), out=str(ctx.latents), device=a.device, threads=a.threads
        )
    )


def run_mdnrnn(ctx: Context) -> None:
    a, p = ctx.args, ctx.preset
    mdnrnn.train_mdnrnn(
        mdnrnn.MDNRNNArgs(
            out=str(ctx.mdnrnn),
            device=a.device,
            threads=a.threads,
            seed=a.seed,
            epochs=p.mdnrnn_epochs,
            latents=str(ctx.latents),
            game=a.game,
            hidden_size=p.mdnrnn_hidden,
            seq_len=p.mdnrnn_seq_len,
            batch_size=p.mdnrnn_batch,
        )
    )


def run_bundle(ctx: Context) -> None:
    bundle.build_bundle(
        bundle.BundleArgs(
            vae=str(ctx.vae),
            mdnrnn=str(ctx.mdnrnn),
            latents=str(ctx.latents),
            out=str(ctx.world_model),
            num_initial=ctx.preset.num_initial,
            seed=ctx.args.seed,
            initial_step=ctx.preset.initial_step,
        )
    )


def run_controller(ctx: Context) -> None:
    if ctx.args.trainer == "dagger":
        DaggerRun(ctx.dagger_args()).run()
        return
    # the sweep's own settings, so that with a sweep this is exactly its run at ctx.temperature
    cmaes.train(sweep_train_args(ctx.sweep_args(), ctx.args.game, ctx.temperature, ctx.controller))


def run_evaluate(ctx: Context) -> None:
    a = ctx.args
    report = evaluate.evaluate(
        evaluate.EvalArgs(
            env=latent_id(a.game),
            world_model=str(ctx.world_model),
            obs_mode=ctx.obs_mode,
            device=a.device,
            threads=a.threads,
            workers=a.workers,
            controller=str(ctx.trained_controller),
            episodes=ctx.preset.eval_episodes,
            seed=evaluate.REAL_SEEDS + a.seed,
            out=str(ctx.out / "evaluation.json"),
        )
    )
    trained = "DAgger-trained" if a.trainer == "dagger" else "dream-trained"
    print(
        f"real-game score of the {trained} controller: {report['mean']:.1f} ± {report['std']:.1f} "
        f"over {len(report['returns'])} episodes"
    )


def run_sweep(ctx: Context) -> None:
    temperature_sweep(ctx.sweep_args())


BUILD_STAGES = frozenset({"collect", "vae", "encode", "mdnrnn", "bundle"})
STAGES: list[tuple[str, Callable[[Context], None]]] = [
    ("collect", run_collect),
    ("vae", run_vae),
    ("encode", run_encode),
    ("mdnrnn", run_mdnrnn),
    ("bundle", run_bundle),
    ("controller", run_controller),
    ("evaluate", run_evaluate),
    ("sweep", run_sweep),
]


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_pipeline(args: PipelineArgs) -> Context:
    """Runs (or resumes) every stage in order, printing and saving (``timings.json``) wall and CPU time."""
    names = [name for name, _ in STAGES]
    if args.stop_after is not None and args.stop_after not in names:
        raise ValueError(f"unknown stage {args.stop_after!r}; stages: {names}")
    ctx = Context(args, preset_for(args.game, args.preset), Path(args.out or f"runs/{args.game}-{args.preset}"))
    if args.world_model is not None and args.stop_after in BUILD_STAGES:
        raise ValueError(f"--stop-after {args.stop_after} names a stage that --world-model skips")
    if args.trainer not in ("cmaes", "dagger"):
        raise ValueError(f"--trainer must be cmaes or dagger, got {args.trainer!r}")
    if args.trainer == "dagger":  # before any stage runs: hours of world model, then no expert
        validate_dagger_args(ctx.dagger_args())
    times: dict[str, float] = {}
    timings_path = ctx.out / "timings.json"
    timings = load_json(timings_path) if timings_path.is_file() else {}
    no_sweep = not ctx.preset.sweep_taus or args.trainer == "dagger"  # the sweep is of dream temperatures
    for name, stage in STAGES:
        if (args.world_model is not None and name in BUILD_STAGES) or (name == "sweep" and no_sweep):
            continue
        start, cpu = time.perf_counter(), cpu_seconds()
        print(f"== {name} ==", flush=True)
        stage(ctx)
        times[name] = time.perf_counter() - start
        # each run of a stage adds its own time: a resumed stage sums its runs (a killed run's is not saved)
        before = timings.get(name, {"wall_s": 0.0, "cpu_s": 0.0})
        timings[name] = {"wall_s": before["wall_s"] + times[name], "cpu_s": before["cpu_s"] + cpu_seconds() - cpu}
        save_json(timings_path, timings)
        print(f"== {name}: {times[name]:.1f} s ==", flush=True)
        if name == args.stop_after:
            break
    print("pipeline: " + ", ".join(f"{n} {t:.0f} s" for n, t in times.items()) + f"; results in {ctx.out}")
    return ctx


def main(argv: list[str] | None = None) -> None:
    run_pipeline(parse_args(PipelineArgs, argv, __doc__))


if __name__ == "__main__":
    main()
