"""The dream's GPU path, checked on the CPU: with ``sync_free`` a step (autoresets and tensor actions included)
and a population rollout between its checks read nothing back from the device, and give the same numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_tiny_world_model
from gymnasium.vector import AutoresetMode
from test_cmaes import random_population
from torch.overrides import TorchFunctionMode

from dreamgym.controller import ControllerConfig, population_actions
from dreamgym.envs import DreamVectorEnv
from dreamgym.envs.dream_vector import ACTION_CHECK_EVERY
from dreamgym.episodes import rollout_population
from dreamgym.games import get_game

N, CAP = 6, 5  # episodes of at most 5 steps: every env autoresets several times in a few dozen steps
# Tensor methods that make the host wait for the device (on a GPU) to read a value back
HOST_READS = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist", "cpu", "numpy", "nonzero"}


class HostReads(TorchFunctionMode):
    """Records every call of a :data:`HOST_READS` method inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def tensor_actions(game: str, steps: int, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    if game == "takecover":
        return [torch.from_numpy(a) for a in rng.integers(3, size=(steps, N))]
    return [torch.from_numpy(a) for a in rng.uniform([-1, 0, 0], [1, 1, 1], (steps, N, 3)).astype(np.float32)]


def dream(game: str, sync_free: bool, mode: AutoresetMode = AutoresetMode.NEXT_STEP) -> DreamVectorEnv:
    return DreamVectorEnv(N, make_tiny_world_model(game), device="cpu", max_episode_steps=CAP, return_tensors=True,
                          sync_free=sync_free, autoreset_mode=mode)  # fmt: skip


@pytest.mark.parametrize("game", ["takecover", "carracing"])  # Discrete and Box actions
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_a_sync_free_step_reads_nothing_back_and_gives_the_same_numbers(game: str, mode: AutoresetMode) -> None:
    steps = ACTION_CHECK_EVERY - 1  # the deferred action check reads its flag on the next step
    actions = tensor_actions(game, steps)
    outputs: dict[bool, list[Any]] = {}
    for sync_free in (True, False):
        envs = dream(game, sync_free, mode)
        assert envs.sync_free is sync_free
        out = [envs.reset(seed=3)[0]]
        with HostReads() as reads:
            for a in actions:
                obs, reward, terminated, truncated, infos = envs.step(a)
                out += [obs, reward, terminated, truncated, infos.get("final_obs", torch.zeros(0))]
        ended = torch.stack(out[3::5]) | torch.stack(out[4::5])
        assert int(ended.sum()) > 2 * N  # autoresets happened in every env
        if sync_free:
            assert reads.calls == []
        else:
            assert reads.calls  # the eager path reads the device (to check actions, to find the envs to reset)
        outputs[sync_free] = out
    for free, eager in zip(outputs[True], outputs[False], strict=True):
        torch.testing.assert_close(free, eager, rtol=0, atol=0)


@pytest.mark.parametrize(("game", "bad"), [("takecover", 3), ("takecover", -1), ("carracing", float("nan"))])
def test_an_invalid_tensor_action_raises_at_the_next_check_and_never_reaches_m(game: str, bad: float) -> None:
    envs, clean = dream(game, True), dream(game, True)
    actions = tensor_actions(game, 3)
    wrong = actions[1].clone()
    wrong[2] = bad
    for e in (envs, clean):
        e.reset(seed=0)
    envs.step(actions[0])
    envs.step(wrong)  # accepted for now: checking it would make the host wait
    stand_in = wrong.clamp(0, 2) if game == "takecover" else wrong.nan_to_num(0.0)
    obs, *_ = envs.step(actions[2])
    for a in (actions[0], stand_in, actions[2]):
        clean_obs, *_ = clean.step(a)
    torch.testing.assert_close(obs, clean_obs, rtol=0, atol=0)  # the env ran on with a valid stand-in
    with pytest.raises(ValueError, match="invalid"):
        envs.reset(seed=0)
    envs.reset(seed=0)  # the error was raised once
    # stepping on: at the latest ACTION_CHECK_EVERY steps later
    envs.step(wrong)
    with pytest.raises(ValueError, match="invalid"):
        for _ in range(ACTION_CHECK_EVERY):
            envs.step(actions[0])
    # without sync_free, in its own step
    eager = dream(game, False)
    eager.reset(seed=0)
    with pytest.raises(ValueError, match="out of range" if game == "takecover" else "NaN"):
        eager.step(wrong)


def test_a_dream_made_in_inference_mode_checks_actions_outside_it() -> None:
    model = make_tiny_world_model()
    with torch.inference_mode():
        envs = DreamVectorEnv(N, model, device="cpu", return_tensors=True, sync_free=True)
        envs.reset(seed=0)
        envs.step(torch.full((N,), 7))
    envs.step(torch.full((N,), 1))
    with pytest.raises(ValueError, match="invalid"):
        envs.reset(seed=0)


def test_numpy_outputs_check_actions_at_once_even_when_sync_free() -> None:
    envs = DreamVectorEnv(N, make_tiny_world_model(), device="cpu", sync_free=True)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="out of range"):
        envs.step(torch.full((N,), 5))


@pytest.mark.parametrize("game", ["takecover", "carracing"])
def test_population_actions_of_tensor_observations_stay_tensors(game: str) -> None:
    envs = dream(game, True)
    config = ControllerConfig.for_env(envs)
    params = torch.from_numpy(random_population(config, 3, scale=3.0))
    obs = envs.reset(seed=0)[0]
    on_device = population_actions(config, params[:3], obs, 2)
    on_host = population_actions(config, params[:3], obs.numpy(), 2)
    assert isinstance(on_device, torch.Tensor) and isinstance(on_host, np.ndarray)
    np.testing.assert_array_equal(on_device.numpy(), on_host)
    assert get_game(game).squash_takes_tensors


@pytest.mark.parametrize("game", ["takecover", "carracing"])
def test_a_rollout_reads_the_device_only_at_its_checks_and_scores_the_same(game: str) -> None:
    model = make_tiny_world_model(game)
    config = ControllerConfig.for_env(DreamVectorEnv(1, model, device="cpu"))
    params = torch.from_numpy(random_population(config, 4))
    EVERY = 4

    def rollout(check_every: int, compact_above: int | None) -> tuple[Any, int, list[str]]:
        steps = 0
        envs = DreamVectorEnv(4 * 3, model, device="cpu", max_episode_steps=60, return_tensors=True, sync_free=True)
        step = envs.step

        def counted(actions: Any) -> Any:
            nonlocal steps
            steps += 1
            return step(actions)

        envs.step = counted  # type: ignore[method-assign]
        with HostReads() as reads:
            scores = rollout_population(envs, config, params, 3, seed=5, compact_above=compact_above,
                                        check_every=check_every)  # fmt: skip
        return scores, steps, reads.calls

    every_step, steps, every_reads = rollout(1, None)
    assert len(every_reads) >= steps  # checking every step reads every step
    checked, checked_steps, reads = rollout(EVERY, None)
    np.testing.assert_array_equal(checked.returns, every_step.returns)
    np.testing.assert_array_equal(checked.lengths, every_step.lengths)
    assert steps == every_step.lengths.max() > 3 * EVERY and steps <= checked_steps < steps + EVERY
    # one read of the done flags per check; at the start and the end, a few more (the seeds, the scores)
    assert len(reads) <= checked_steps // EVERY + 5 < steps
    compacted, _, _ = rollout(EVERY, 2)
    np.testing.assert_array_equal(compacted.lengths, every_step.lengths)
    np.testing.assert_allclose(compacted.returns, every_step.returns, rtol=1e-5, atol=1e-6)
