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

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dreamgym.checkpoint import load_json, save_json
from dreamgym.cli_args import Positive, parse_args
from dreamgym.envs.registration import latent_id
from dreamgym.games import get_game
from dreamgym.runs import RunArgs, hand_down

from .dagger import DaggerArgs, DaggerRun
from .dagger import validate_args as validate_dagger_args
from .stages import bundle, cmaes, collect, encode, evaluate, mdnrnn, vae
from .temperature_sweep import SweepArgs, tau_dir
from .temperature_sweep import sweep as temperature_sweep
from .temperature_sweep import train_args as sweep_train_args

# The settings of CarRacing's shipped controller (docs/carracing.md: braking expert, a hidden layer for steering and
# brake, 300 episodes a round), started from 300 demonstrations instead of the 3,300 relabelled episodes it had; this
# preset's own score has not been measured.
SESSION_DAGGER = DaggerArgs(demos=300, rounds=3, episodes_per_round=300, eval_episodes=20, expert_share=0.15,
                            share_decay=2 / 3, player="latest", hidden=256, hidden_outputs="0,2", epochs=12, lr=2e-3,
                            batch_size=2048, std_floor=0.1, expert='{"braking_plan": true}')  # fmt: skip


@dataclass(frozen=True)
class Preset:
    """The sizes of one pipeline run, as the ``Args`` of the stages that use them; the run's game, folders, seed
    and compute come from the pipeline's command line (:func:`dreamgym.runs.hand_down`)."""

    collect: collect.CollectArgs
    """``episodes``: random-policy episodes collected"""
    vae: vae.VAEArgs
    """``max_episodes``: V trains on the first N collected episodes (None: all of them); M always sees all"""
    mdnrnn: mdnrnn.MDNRNNArgs
    """``hidden_size`` None: the game's (512 for TakeCover)"""
    bundle: bundle.BundleArgs
    """``num_initial`` real initial latents stored; dreams start from frame ``initial_step`` of real episodes"""
    cmaes: SweepArgs
    """the controller stage's CMA-ES sizes (``generations``, ``popsize``, ``episodes`` per candidate), and with
    ``taus`` the closing temperature sweep (each tau trained as the controller, scored over ``dream_episodes``
    dreams and ``real_episodes`` real games); ``taus=""``: no sweep"""
    evaluate: evaluate.EvalArgs
    """``episodes``: real-game episodes scoring the trained controller"""
    dagger: DaggerArgs | None = None
    """sizes of the controller stage with ``--trainer dagger`` (None: this preset has none)"""


def sizes(episodes: int, vae_args: vae.VAEArgs, mdnrnn_args: mdnrnn.MDNRNNArgs, bundle_args: bundle.BundleArgs,
          cmaes_args: SweepArgs, dagger: DaggerArgs | None = None) -> Preset:  # fmt: skip
    """A preset whose controller is scored over as many real episodes as the sweep's (``real_episodes``)."""
    return Preset(collect.CollectArgs(episodes=episodes), vae_args, mdnrnn_args, bundle_args, cmaes_args,
                  evaluate.EvalArgs(episodes=cmaes_args.real_episodes), dagger)  # fmt: skip


def cmaes_sizes(generations: int, popsize: int, episodes: int, eval_episodes: int, taus: str = "") -> SweepArgs:
    """CMA-ES sizes, and the episodes scoring its controller in the dream and the real game."""
    return SweepArgs(generations=generations, popsize=popsize, episodes=episodes, dream_episodes=eval_episodes,
                     real_episodes=eval_episodes, taus=taus)  # fmt: skip


PRESETS: dict[str, Preset] = {
    # Smoke scale for 2 CPU cores: every stage runs (docs/takecover.md, appendix: its timings and score).
    "quick": sizes(
        400,
        vae.VAEArgs(epochs=1, max_steps=1200, lr=1e-4),
        mdnrnn.MDNRNNArgs(hidden_size=256, seq_len=600, batch_size=16, epochs=40),
        bundle.BundleArgs(num_initial=400),
        cmaes_sizes(generations=30, popsize=32, episodes=8, eval_episodes=50),
        DaggerArgs(demos=40, rounds=2, episodes_per_round=30, eval_episodes=10, expert_share=0.15, share_decay=2 / 3,
                   player="latest"),  # fmt: skip
    ),
    # Round 0 of the shipped TakeCover world model (docs/takecover.md): the paper's model sizes, data and steps cut
    # to 2 AVX2 CPU cores (V trains at ~235 images/s there): V 4,000 steps (~0.65 epoch) at a 5x higher learning
    # rate, M 20 epochs of 1,900 episodes. The shipped controllers came from recipes.temperature_sweep instead.
    "session": sizes(
        2000,
        vae.VAEArgs(epochs=1, max_steps=4000, lr=5e-4),
        mdnrnn.MDNRNNArgs(hidden_size=None, seq_len=1000, batch_size=16, epochs=20),
        bundle.BundleArgs(num_initial=1000),
        cmaes_sizes(generations=80, popsize=32, episodes=16, eval_episodes=100),
        SESSION_DAGGER,
    ),
    # The paper: 10k episodes, V 10 epochs, M 512 units ~4k steps of 100 whole episodes (<= 1000 steps).
    "paper": sizes(
        10_000,
        vae.VAEArgs(epochs=10, max_steps=None, lr=1e-4),
        mdnrnn.MDNRNNArgs(hidden_size=None, seq_len=1000, batch_size=100, epochs=42),
        bundle.BundleArgs(num_initial=1000),
        cmaes_sizes(generations=200, popsize=64, episodes=16, eval_episodes=100, taus="0.1,0.5,1,1.15,1.3"),
    ),
}


# A game's own sizes for a preset name, where the shared ones do not fit it (``--game carracing --preset session``).
GAME_PRESETS: dict[tuple[str, str], Preset] = {
    # CarRacing round 0 (docs/carracing.md): CarRacing-v3 renders at ~60 steps/s per busy core here, so data is the
    # bottleneck: 275 episodes of 1,000 steps with 2 workers, V on the first 100 (1,500 steps), M 60 epochs x 17
    # steps, CMA-ES in the dream; its dreams start after the zoom-in (frame 60) at the game's tau 0.1.
    # docs/carracing.md's later rounds add steady-follower demonstrations, agents.imitate and iterations, which
    # this preset does not run.
    ("carracing", "session"): sizes(
        275,
        vae.VAEArgs(epochs=10, max_steps=1500, lr=5e-4, max_episodes=100),
        mdnrnn.MDNRNNArgs(hidden_size=None, seq_len=1000, batch_size=16, epochs=60),
        bundle.BundleArgs(num_initial=275, initial_step=60),
        cmaes_sizes(generations=60, popsize=32, episodes=8, eval_episodes=100),
        SESSION_DAGGER,
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
class PipelineArgs(RunArgs):
    """``--out`` defaults to runs/<game>-<preset>; ``--seed``, ``--device``, ``--threads`` and ``--workers``
    are handed down to every stage that has them."""

    game: str = "takecover"
    """game: spec name, or a spec's import path package.module:SPEC (dreamgym.games.get_game)"""
    preset: str = "quick"
    """quick, session or paper (a game may have its own sizes for one: GAME_PRESETS)"""
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
        return tau_dir(self.sweep, self.temperature) if self.preset.cmaes.taus else self.out / "controller"

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
        return hand_down(d, a, game=a.game, out=str(self.dagger), world_model=str(self.world_model))

    def sweep_args(self) -> SweepArgs:
        """The preset's CMA-ES and scoring settings as a sweep over its ``taus`` (maybe none)."""
        return hand_down(self.preset.cmaes, self.args, world_model=str(self.world_model), obs_mode=self.obs_mode,
                         out=str(self.sweep))  # fmt: skip


def run_collect(ctx: Context) -> None:
    collect.collect(hand_down(ctx.preset.collect, ctx.args, game=ctx.args.game, out=str(ctx.episodes)))


def run_vae(ctx: Context) -> None:
    vae.train_vae(hand_down(ctx.preset.vae, ctx.args, game=ctx.args.game, episodes=str(ctx.episodes), out=str(ctx.vae)))


def run_encode(ctx: Context) -> None:
    encode.encode(hand_down(encode.EncodeArgs(), ctx.args, vae=str(ctx.vae), episodes=str(ctx.episodes),
                            out=str(ctx.latents)))  # fmt: skip


def run_mdnrnn(ctx: Context) -> None:
    mdnrnn.train_mdnrnn(hand_down(ctx.preset.mdnrnn, ctx.args, game=ctx.args.game, latents=str(ctx.latents),
                                  out=str(ctx.mdnrnn)))  # fmt: skip


def run_bundle(ctx: Context) -> None:
    bundle.build_bundle(hand_down(ctx.preset.bundle, ctx.args, vae=str(ctx.vae), mdnrnn=str(ctx.mdnrnn),
                                  latents=str(ctx.latents), out=str(ctx.world_model)))  # fmt: skip


def run_controller(ctx: Context) -> None:
    if ctx.args.trainer == "dagger":
        DaggerRun(ctx.dagger_args()).run()
        return
    # the sweep's own settings, so that with a sweep this is exactly its run at ctx.temperature
    cmaes.train(sweep_train_args(ctx.sweep_args(), ctx.args.game, ctx.temperature, ctx.controller))


def run_evaluate(ctx: Context) -> None:
    a = ctx.args
    scoring = hand_down(ctx.preset.evaluate, a, env=latent_id(a.game), world_model=str(ctx.world_model),
                        obs_mode=ctx.obs_mode, controller=str(ctx.trained_controller),
                        seed=evaluate.REAL_SEEDS + a.seed, out=str(ctx.out / "evaluation.json"))  # fmt: skip
    report = evaluate.evaluate(scoring)
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
    no_sweep = not ctx.preset.cmaes.taus or args.trainer == "dagger"  # the sweep is of dream temperatures
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
