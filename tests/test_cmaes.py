"""CMA-ES training and the evaluation backends, on Gymnasium toy envs through the same code paths as dreams."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import make_tiny_world_model
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

import agents.cmaes as cmaes
from agents.backends import make_evaluator
from agents.cmaes import TrainArgs, penalised_costs, run_dir, train
from agents.evaluate import EvalArgs, evaluate
from agents.rollout import VectorEvaluator, make_vector_env
from agents.runlog import COLUMNS, read_csv
from agents.workers import PoolEvaluator, RayEvaluator
from dreamgym.checkpoint import CheckpointError
from dreamgym.controller import Controller, ControllerConfig
from dreamgym.envs import DreamVectorEnv
from dreamgym.episodes import Scores, episode_seeds, rollout_population

CARTPOLE_KW = {"max_episode_steps": 100}


class FlakyCartPole(CartPoleEnv):
    """CartPole that misbehaves on reset with chosen seeds: ``faults`` maps a seed to ``crash:MARKER``,
    ``hang:MARKER`` or ``raise:``.

    Crashes and hangs happen only while the MARKER file does not exist (the faulty attempt creates it),
    so a retried episode plays normally; ``raise`` always raises, as a bug would.
    """

    def __init__(self, faults: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults = {int(seed): what for seed, what in (faults or {}).items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        mode, _, marker = self.faults.get(seed, "::").partition(":")
        if mode == "raise":
            raise RuntimeError("deliberate bug in reset")
        if mode and not os.path.exists(marker):
            Path(marker).touch()
            if mode == "crash":
                os._exit(3)
            time.sleep(3600)  # hang
        return super().reset(seed=seed, options=options)


FLAKY_ID = "DreamgymTestFlakyCartPole-v0"
gym.register(FLAKY_ID, entry_point=f"{__name__}:FlakyCartPole", max_episode_steps=100)


def cartpole_config() -> ControllerConfig:
    return ControllerConfig.for_env(gym.make("CartPole-v1"), "CartPole-v1")


def random_population(config: ControllerConfig, n: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, size=(n, config.n_params)).astype(np.float32)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_batched_population_equals_one_by_one(env_id: str) -> None:
    """P candidates x E episodes in one VectorEnv score exactly as each episode alone with its seed."""
    config = ControllerConfig.for_env(gym.make(env_id), env_id)
    params = random_population(config, 3)
    evaluator = VectorEvaluator(env_id, CARTPOLE_KW, config, "cpu")
    batched = evaluator.evaluate(params, episodes=2, seed=100)
    assert batched.returns.shape == (3, 2) and batched.seeds.tolist() == [[100, 101], [102, 103], [104, 105]]
    for p in range(3):
        for e in range(2):
            alone = evaluator.evaluate(params[p : p + 1], episodes=1, seed=int(batched.seeds[p, e]))
            np.testing.assert_allclose(alone.returns[0, 0], batched.returns[p, e], rtol=1e-5)
            assert alone.lengths[0, 0] == batched.lengths[p, e]
    assert len(np.unique(batched.returns)) > 1  # the candidates differ, so the check above has teeth
    evaluator.close()


class CountSteps(gym.vector.VectorWrapper):
    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.steps = 0

    def step(self, actions):
        self.steps += 1
        return super().step(actions)


def test_rollout_counts_first_episodes_only_and_stops_when_all_done() -> None:
    """With NEXT_STEP autoreset the rollout ignores rewards after an env's first episode and stops at once."""
    config = cartpole_config()
    envs = CountSteps(make_vector_env("CartPole-v1", 8, CARTPOLE_KW))
    scores = rollout_population(envs, config, torch.from_numpy(random_population(config, 4)), 2, seed=0)
    np.testing.assert_array_equal(scores.returns, scores.lengths)  # CartPole: +1 per step of the first episode
    assert scores.lengths.min() < scores.lengths.max() <= 100
    assert envs.steps == scores.lengths.max()


class ToyDreamVectorEnv(gym.vector.VectorEnv):
    """A natively batched stand-in for a dream VectorEnv: TakeCover actions, survival reward, NEXT_STEP autoreset.

    Env k is seeded ``seed + k``; moving away from the middle column raises the chance of dying each step.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "dreamgym_game": "takecover"}

    def __init__(self, num_envs: int, max_steps: int = 40) -> None:
        self.num_envs, self.max_steps = num_envs, max_steps
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)
        self.single_action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def _obs(self) -> np.ndarray:
        noise = np.stack([rng.normal(size=4) for rng in self.rngs])
        return np.concatenate([self.x[:, None] - 2.0, self.t[:, None] / 10.0, noise], axis=1).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.rngs = [np.random.default_rng(seed + k) for k in range(self.num_envs)]
        self.x, self.t = np.full(self.num_envs, 2), np.zeros(self.num_envs, np.int64)
        self.autoreset = np.zeros(self.num_envs, bool)
        return self._obs(), {}

    def step(self, actions):
        self.x = np.where(self.autoreset, 2, np.clip(self.x + np.asarray(actions) - 1, 0, 4))
        self.t = np.where(self.autoreset, 0, self.t + 1)
        hazard = 0.02 + 0.1 * np.abs(self.x - 2)
        terminated = ~self.autoreset & (np.array([rng.random() for rng in self.rngs]) < hazard)
        truncated = ~self.autoreset & ~terminated & (self.t >= self.max_steps)
        reward = np.where(self.autoreset, 0.0, 1.0)
        self.autoreset = terminated | truncated
        return self._obs(), reward, terminated, truncated, {}


def test_natively_batched_dream_env_equals_one_by_one() -> None:
    """A batched env with game metadata: TakeCover mapping, first episodes only, same as each env alone."""
    config = ControllerConfig.for_env(ToyDreamVectorEnv(1))
    assert (config.game, config.n_params, config.bias) == ("takecover", 6, False)
    params = torch.from_numpy(random_population(config, 3, scale=2.0))
    envs = CountSteps(ToyDreamVectorEnv(6))
    batched = rollout_population(envs, config, params, episodes=2, seed=7)
    assert envs.steps == batched.lengths.max() and batched.lengths.min() < batched.lengths.max()
    np.testing.assert_array_equal(batched.returns, batched.lengths)
    for p in range(3):
        for e in range(2):
            alone = rollout_population(ToyDreamVectorEnv(1), config, params[p : p + 1], 1, int(batched.seeds[p, e]))
            assert alone.returns[0, 0] == batched.returns[p, e]


DREAM_ID = "dreamgym/TakeCoverDream-v0"


def test_dream_vector_env_batched_equals_one_by_one(tiny_bundle: Callable[..., Path]) -> None:
    """The real batched dream (a tiny random world model): P x E dreams in one VectorEnv match each alone."""
    kwargs = {"world_model": str(tiny_bundle("takecover")), "max_episode_steps": 60, "obs_mode": "zch"}
    config = ControllerConfig.for_env(gym.make(DREAM_ID, **kwargs), DREAM_ID)
    assert (config.obs_dim, config.n_params, config.game) == (8 + 16 + 16, 40, "takecover")
    evaluator = VectorEvaluator(DREAM_ID, kwargs, config, "cpu")
    params = random_population(config, 3)
    batched = evaluator.evaluate(params, episodes=2, seed=11)
    for p in range(3):
        for e in range(2):
            alone = evaluator.evaluate(params[p : p + 1], episodes=1, seed=int(batched.seeds[p, e]))
            assert alone.returns[0, 0] == batched.returns[p, e]
    assert len(np.unique(batched.returns)) > 1


@pytest.mark.parametrize("game", ["takecover", "carracing"])  # survival and M-predicted rewards
@pytest.mark.parametrize("return_tensors", [False, True])
def test_dream_rollout_drops_finished_envs_and_scores_the_same(
    game: str, return_tensors: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compacting the dream's batch as episodes end gives the scores of stepping it whole, in far fewer env-steps."""
    batch_sizes: list[int] = []
    real_step = DreamVectorEnv.step

    def counted_step(self: DreamVectorEnv, actions: Any) -> Any:
        batch_sizes.append(self.num_envs)
        return real_step(self, actions)

    monkeypatch.setattr(DreamVectorEnv, "step", counted_step)
    model = make_tiny_world_model(game)  # dies with p ~ 0.1 per step: lengths from 1 to the cap of 60
    config = ControllerConfig.for_env(DreamVectorEnv(1, model, device="cpu"))
    params = torch.from_numpy(random_population(config, 8))

    def scores(compact_above: int | None) -> tuple[Scores, list[int]]:
        batch_sizes.clear()
        envs = DreamVectorEnv(8 * 5, model, device="cpu", max_episode_steps=60, return_tensors=return_tensors)
        return rollout_population(envs, config, params, 5, seed=4, compact_above=compact_above), list(batch_sizes)

    (whole, whole_sizes), (compacted, sizes) = scores(None), scores(3)
    np.testing.assert_array_equal(compacted.lengths, whole.lengths)
    np.testing.assert_allclose(compacted.returns, whole.returns, rtol=1e-5, atol=1e-6)
    played, longest = int(whole.lengths.sum()), int(whole.lengths.max())
    assert whole_sizes == [40] * longest and longest > 3 * whole.lengths.mean()  # uneven lengths
    assert len(sizes) == longest and sizes[-1] < 8  # shrank as envs finished
    assert sum(sizes) <= 4 / 3 * played + 3 * longest < sum(whole_sizes)  # the documented bound


def test_cmaes_trains_in_a_tiny_dream(tiny_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle = str(tiny_bundle("takecover"))
    args = small_run(tmp_path, "dream", env=DREAM_ID, world_model=bundle, env_kwargs='{"max_episode_steps": 30}')
    out = train(args)
    assert len(read_csv(out / "fitness.csv")) == 4
    env = gym.make(DREAM_ID, world_model=bundle)
    controller = Controller.load(out / "mean", env)
    assert controller.config.n_params == 8 + 16 and not controller.config.bias  # [z, h], no bias (paper)
    assert env.action_space.contains(controller.act(env.reset(seed=0)[0]))
    # --hidden: the ES searches a controller with a hidden layer; an --init of another width is refused
    hidden = train(dataclasses.replace(args, hidden=3, generations=1, out=str(tmp_path / "hidden")))
    mlp = Controller.load(hidden / "mean", env)
    assert (mlp.config.hidden, mlp.config.n_params) == (3, (8 + 16) * 3 + 3 * 1)
    with pytest.raises(ValueError, match="hidden: 3 \\(controller\\) vs 0"):
        train(dataclasses.replace(args, init=str(hidden / "mean"), out=str(tmp_path / "misfit")))


def test_weight_decay_penalises_large_weights() -> None:
    solutions = np.array([[0.1, 0.1], [3.0, -3.0]])
    costs = penalised_costs(np.array([10.0, 10.0]), solutions, weight_decay=0.5)
    assert costs[1] > costs[0]  # pycma minimises: equal returns, larger weights -> worse
    np.testing.assert_allclose(costs, [-10 + 0.5 * 0.01, -10 + 0.5 * 9.0])


class RecordingEvaluator:
    """Scores every episode by its seed alone and records each call's (candidates, seed)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def evaluate(self, params: np.ndarray, episodes: int, seed: int) -> Scores:
        self.calls.append((len(params), seed))
        seeds = episode_seeds(seed, len(params), episodes)
        return Scores((seeds % 97).astype(np.float64), np.ones_like(seeds), seeds)


@pytest.mark.parametrize("common", [False, True])
def test_common_seeds_give_every_candidate_the_same_episodes(tmp_path: Path, common: bool) -> None:
    args = small_run(tmp_path, "common", popsize=5, episodes=3, common_seeds=common)
    x0 = np.zeros(4)
    state = cmaes.RunState(cmaes.new_es(x0, args), 0, np.zeros((0, len(COLUMNS))), x0, -np.inf, x0)
    evaluator = RecordingEvaluator()
    row = cmaes.run_generation(state, evaluator, cmaes.Subspace(x0, np.arange(4)), args, gen=0)  # type: ignore[arg-type]
    best, worst = row[COLUMNS.index("best")], row[COLUMNS.index("worst")]
    if common:  # five one-candidate calls on one seed: equal episodes, equal scores
        assert len(evaluator.calls) == 5 and len({c for c in evaluator.calls}) == 1 and evaluator.calls[0][0] == 1
        assert best == worst
    else:
        assert evaluator.calls == [(5, evaluator.calls[0][1])] and best > worst


def small_run(tmp_path: Path, name: str, **overrides: Any) -> TrainArgs:
    base = TrainArgs(
        env="CartPole-v1",
        env_kwargs=json.dumps({"max_episode_steps": 50}),
        popsize=6,
        episodes=2,
        generations=4,
        eval_every=2,
        eval_episodes=4,
        device="cpu",
        seed=3,
        out=str(tmp_path / name),
    )
    return dataclasses.replace(base, **overrides)


def test_cmaes_solves_cartpole(tmp_path: Path) -> None:
    """12 generations of 16 candidates x 4 episodes lift the ES mean from ~9 to >= 100 of a 200-step cap.

    Threshold reasoning: the starting mean (all-zero weights) always pushes left and lasts ~9 steps;
    random linear policies drawn like the first generation (N(0, 0.1^2)) average under 30 (asserted on
    generation 0 below). Sampling more of them, as random search does, leaves the population's average
    there; only moving the search distribution, as CMA-ES does, brings its mean policy to >= 100 on 32
    fresh episodes. (Over run seeds 0-7 the final ES mean scores 136-200.)
    """
    args = small_run(
        tmp_path,
        "solve",
        env_kwargs=json.dumps({"max_episode_steps": 200}),
        popsize=16,
        episodes=4,
        generations=12,
        eval_every=6,
        eval_episodes=32,
        seed=0,
    )
    history = read_csv(train(args) / "fitness.csv")
    col = {c: history[:, i] for i, c in enumerate(COLUMNS)}
    assert col["mean"][0] < 30
    assert col["eval_mean"][-1] >= 100

    # --init: a fine-tune starts from that controller (its first population scores like it, not like zeros) ...
    solved = run_dir(args) / "mean"
    tune = dataclasses.replace(args, out=str(tmp_path / "tune"), init=str(solved), sigma0=0.01, generations=1)
    assert read_csv(train(tune) / "fitness.csv")[0, COLUMNS.index("mean")] >= 60
    # ... --tune bias searches the bias only: the weights of every candidate stay the --init's
    bias_only = dataclasses.replace(tune, out=str(tmp_path / "bias"), tune="bias", sigma0=0.5)
    start, tuned = Controller.load(solved), Controller.load(train(bias_only) / "best")
    np.testing.assert_array_equal(tuned.weight, start.weight)
    assert not np.array_equal(tuned.bias, start.bias)
    assert not np.array_equal(Controller.load(tmp_path / "bias" / "mean").bias, start.bias)
    # resuming after --init changed would change the fixed weights mid-run
    Controller(start.config, start.params + 1).save(solved)
    with pytest.raises(ValueError, match="has changed since"):
        train(dataclasses.replace(bias_only, generations=2))
    with pytest.raises(ValueError, match="--tune 'bias' needs --init"):
        train(dataclasses.replace(bias_only, init=None, out=str(tmp_path / "no_init")))
    with pytest.raises(ValueError, match=r"tensors of the controller \(weight, bias\); got 'skip.weight'"):
        train(dataclasses.replace(bias_only, tune="skip.weight", out=str(tmp_path / "unknown")))
    # ... and a controller for another env fails before the run folder holds anything
    other = dataclasses.replace(tune, env="MountainCarContinuous-v0", env_kwargs="{}", out=str(tmp_path / "other"))
    with pytest.raises(ValueError, match="does not fit MountainCarContinuous-v0: obs_dim: 4"):
        train(other)
    assert not (tmp_path / "other" / "args.json").exists()


def comparable(history: np.ndarray) -> np.ndarray:
    return history[:, [i for i, c in enumerate(COLUMNS) if c != "seconds"]]


def test_kill_and_resume_equals_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = train(small_run(tmp_path, "whole"))

    # killed during generation 2's checkpoint write: its outputs are on disk, its checkpoint is not
    real_save = cmaes.save_checkpoint

    def killed_at_generation_3(path: Path, state: cmaes.RunState) -> None:
        if state.generation == 3:
            raise KeyboardInterrupt
        real_save(path, state)

    monkeypatch.setattr(cmaes, "save_checkpoint", killed_at_generation_3)
    with pytest.raises(KeyboardInterrupt):
        train(small_run(tmp_path, "killed"))
    assert np.load(tmp_path / "killed" / "checkpoint" / "state.npz")["generation"] == 2
    monkeypatch.setattr(cmaes, "save_checkpoint", real_save)
    killed = train(small_run(tmp_path, "killed"))

    # stopped cleanly after 2 generations, then continued to 4
    train(small_run(tmp_path, "extended", generations=2))
    extended = train(small_run(tmp_path, "extended"))

    reference = read_csv(whole / "fitness.csv")
    for run in (killed, extended):
        np.testing.assert_array_equal(comparable(read_csv(run / "fitness.csv")), comparable(reference))
        for which in ("best", "mean"):
            np.testing.assert_array_equal(Controller.load(run / which).params, Controller.load(whole / which).params)
    assert len(reference) == 4 and (whole / "fitness.png").stat().st_size > 0
    assert any((whole / "tb").glob("events.out.tfevents.*"))

    with pytest.raises(ValueError, match="popsize: 6 -> 8"):
        train(small_run(tmp_path, "whole", popsize=8))


def cli_flags(args: TrainArgs) -> list[str]:
    """The command line of ``args``: one flag per setting that differs from its default."""
    return [
        text
        for field in dataclasses.fields(TrainArgs)
        if getattr(args, field.name) != field.default
        for text in (f"--{field.name.replace('_', '-')}", str(getattr(args, field.name)))
    ]


def test_resume_in_a_new_process_equals_uninterrupted_run(tmp_path: Path, run_module: Callable[..., Any]) -> None:
    """The checkpoint alone (plain arrays, reloaded by a fresh process) continues the ES bit for bit."""
    whole = train(small_run(tmp_path, "whole", generations=6))
    train(small_run(tmp_path, "split", generations=2))
    with np.load(tmp_path / "split" / "checkpoint" / "state.npz", allow_pickle=False) as saved:
        assert not any(saved[key].dtype.hasobject for key in saved.files)
    run_module("agents.cmaes", *cli_flags(small_run(tmp_path, "split", generations=6)))
    split = tmp_path / "split"
    np.testing.assert_array_equal(
        comparable(read_csv(split / "fitness.csv")), comparable(read_csv(whole / "fitness.csv"))
    )
    for which in ("best", "mean"):
        np.testing.assert_array_equal(Controller.load(split / which).params, Controller.load(whole / which).params)
    assert len(read_csv(whole / "fitness.csv")) == 6


class _TouchFile:
    """A pickle payload: unpickling it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


def _raw_pickle(path: Path, payload: bytes) -> None:
    path.write_bytes(payload)


def _old_format(path: Path, payload: bytes) -> None:
    """The layout of checkpoints before plain ES state: pycma's pickle as the ``es`` bytes."""
    with np.load(path) as data:
        kept = {k: data[k] for k in ("generation", "history", "best_params", "best_fitness")}
    np.savez(path, es=np.frombuffer(payload, np.uint8), **kept)


def _object_array(path: Path, payload: bytes) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(path, **arrays | {"es_0": np.array([_TouchFile(path.parent / "marker")], dtype=object)})


def _garbage(path: Path, payload: bytes) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(300))


@pytest.mark.parametrize("damage", [_raw_pickle, _old_format, _object_array, _garbage])
def test_a_pickled_or_corrupt_checkpoint_is_refused_never_run(tmp_path: Path, damage: Callable[..., None]) -> None:
    args = small_run(tmp_path, "run", generations=1)
    checkpoint = train(args) / "checkpoint" / "state.npz"
    marker = tmp_path / "run" / "checkpoint" / "marker"
    payload = pickle.dumps(_TouchFile(marker))
    pickle.loads(payload)  # the payload has teeth: unpickled, it creates the marker
    assert marker.exists()
    marker.unlink()

    damage(checkpoint, payload)
    resumed = dataclasses.replace(args, generations=2)
    with pytest.raises(CheckpointError, match="older dreamgym version or corrupt.*delete .*checkpoint.* new --out"):
        train(resumed)
    with pytest.raises(SystemExit) as info:
        cmaes.main(cli_flags(resumed))
    assert str(info.value.code).startswith("agents.cmaes: ") and "\n" not in str(info.value.code)
    assert not marker.exists()


def test_pool_survives_crashing_and_hanging_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A worker that dies and one that hangs are replaced; their episodes are retried and score as usual
    (and the progress bar counts each of the 6 episodes once)."""
    config = cartpole_config()
    params = random_population(config, 3)
    faults = {"3": f"crash:{tmp_path / 'crashed'}", "4": f"hang:{tmp_path / 'hung'}"}
    pool = PoolEvaluator(f"{__name__}:{FLAKY_ID}", {"faults": faults}, config, workers=2, timeout=3.0, progress="flaky")
    try:
        scores = pool.evaluate(params, episodes=2, seed=0)
    finally:
        pool.close()
    reference = VectorEvaluator(FLAKY_ID, {}, config, "cpu").evaluate(params, episodes=2, seed=0)
    np.testing.assert_array_equal(scores.returns, reference.returns)
    assert (tmp_path / "crashed").exists() and (tmp_path / "hung").exists()
    assert pool.replaced == 2
    err = capsys.readouterr().err
    assert "flaky: 100%" in err and "6/6" in err


def test_pool_raises_a_bug_in_an_episode_with_its_traceback() -> None:
    config = cartpole_config()
    pool = PoolEvaluator(f"{__name__}:{FLAKY_ID}", {"faults": {"1": "raise:"}}, config, workers=1, timeout=30.0)
    try:
        with pytest.raises(RuntimeError, match="deliberate bug in reset"):
            pool.evaluate(random_population(config, 1), episodes=2, seed=0)
    finally:
        pool.close()


def test_ray_backend_retries_an_episode_whose_worker_died(ray_cluster: str, tmp_path: Path) -> None:
    """On a Ray cluster, a worker that dies mid-episode (the first attempt at seed 7) is replaced by Ray and
    its episode retried: the scores are those of the vector backend."""
    config = cartpole_config()
    params = random_population(config, 2)
    faults = {"faults": {"7": f"crash:{tmp_path / 'crashed'}"}}
    ray = RayEvaluator(f"{__name__}:{FLAKY_ID}", CARTPOLE_KW | faults, config, ray_cluster, timeout=60.0)
    scores = ray.evaluate(params, 2, seed=5)
    reference = VectorEvaluator("CartPole-v1", CARTPOLE_KW, config, "cpu").evaluate(params, 2, seed=5)
    np.testing.assert_array_equal(scores.returns, reference.returns)
    assert (tmp_path / "crashed").exists()


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    with pytest.raises(ImportError, match=r"dreamgym\[ray\]"):
        RayEvaluator("CartPole-v1", {}, cartpole_config())


def test_scripts_train_then_evaluate_with_gif(tmp_path: Path, run_module: Callable[..., Any]) -> None:
    out, gif, env = (
        tmp_path / "run",
        tmp_path / "episode.gif",
        ["--env", "CartPole-v1", "--env-kwargs", '{"max_episode_steps": 30}'],
    )
    train_flags = f"--popsize 4 --episodes 2 --generations 2 --device cpu --out {out}".split()
    run_module("agents.cmaes", *env, *train_flags)
    assert len(read_csv(out / "fitness.csv")) == 2 and (out / "mean" / "controller.safetensors").exists()

    done = run_module(
        "agents.evaluate", *env,
        *f"--controller {out / 'mean'} --episodes 5 --seed 10 --gif {gif} --gif-every 2 --gif-width 150".split(),
    )  # fmt: skip
    assert "± " in done.stdout and "over 5 episodes" in done.stdout
    report = json.loads((out / "mean" / "evaluation.json").read_text())
    assert report["seeds"] == [10, 11, 12, 13, 14] and len(report["returns"]) == 5
    frames = iio.imread(gif, index=None)
    # every 2nd of one frame after the reset and one per step (the writer may merge frames that quantise alike)
    assert frames.shape[1:3] == (100, 150) and 1 < len(frames) <= report["gif"]["return"] // 2 + 1


def test_evaluate_writes_per_episode_report(tmp_path: Path) -> None:
    config = cartpole_config()
    Controller(config, random_population(config, 1)[0]).save(tmp_path / "c")
    args = EvalArgs(
        env="CartPole-v1",
        env_kwargs=json.dumps(CARTPOLE_KW),
        controller=str(tmp_path / "c"),
        episodes=6,
        seed=2,
        device="cpu",
        out=str(tmp_path / "report.json"),
    )
    report = evaluate(args)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["seeds"] == list(range(2, 8)) and saved["backend"] == "vector"
    assert saved["mean"] == pytest.approx(np.mean(saved["returns"])) == pytest.approx(report["mean"])

    with pytest.raises(ValueError, match="does not fit this env"):
        evaluate(dataclasses.replace(args, env="Pendulum-v1", env_kwargs="{}"))
    with pytest.raises(ValueError, match=r"--gif .*report\.png: the recording must end in one of"):
        evaluate(dataclasses.replace(args, gif=str(tmp_path / "report.png")))


def test_threads_option_sets_this_processes_torch_threads() -> None:
    before = torch.get_num_threads()
    args = EvalArgs(env="CartPole-v1", env_kwargs=json.dumps(CARTPOLE_KW), device="cpu", threads=1)
    try:
        make_evaluator(args, cartpole_config()).close()
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
            make_evaluator(dataclasses.replace(args, threads=0), cartpole_config())
    finally:
        torch.set_num_threads(before)
