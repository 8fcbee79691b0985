"""agents.ensemble: K controllers -> one controller whose pre-tanh outputs are their mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.ensemble import average_controllers, main
from dreamgym.controller import Controller, ControllerConfig, population_outputs
from tests.spaces_env import game_env


def pre_tanh(controller: Controller, obs: np.ndarray) -> np.ndarray:
    """The controller's outputs before the final tanh, (E, A) for obs (E, D)."""
    t = controller.tensors()
    y = np.tanh(obs @ t["hidden.weight"].T + t["hidden.bias"]) @ t["weight"].T + t["bias"]
    return y + obs @ t["skip.weight"].T if controller.config.skip else y


def random_controller(config: ControllerConfig, seed: int) -> Controller:
    return Controller(config, np.random.default_rng(seed).normal(size=config.n_params).astype(np.float32))


def test_the_ensemble_averages_its_members_pre_tanh_outputs(tmp_path: Path) -> None:
    env = game_env("carracing", 5)
    members = [
        random_controller(ControllerConfig.for_env(env, hidden=4, skip=True), 0),
        random_controller(ControllerConfig.for_env(env, hidden=3), 1),  # another width, no skip map
        random_controller(ControllerConfig.for_env(env, hidden=4, skip=True), 2),
    ]
    ensemble = average_controllers(members)
    assert ensemble.config.hidden == 11 and ensemble.config.skip
    obs = np.random.default_rng(3).normal(size=(6, 5)).astype(np.float64)
    expected = np.tanh(np.mean([pre_tanh(m, obs) for m in members], axis=0))
    params = torch.from_numpy(ensemble.params)[None]
    out = population_outputs(ensemble.config, params, torch.from_numpy(obs).float()[None])[0].numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)

    for k, member in enumerate(members):
        member.save(tmp_path / f"m{k}")
    main(["--controllers", ",".join(str(tmp_path / f"m{k}") for k in range(3)), "--out", str(tmp_path / "ens")])
    np.testing.assert_array_equal(Controller.load(tmp_path / "ens", env).params, ensemble.params)


def test_members_that_cannot_be_averaged_are_named() -> None:
    env = game_env("carracing", 5)
    mlp = random_controller(ControllerConfig.for_env(env, hidden=4), 0)
    with pytest.raises(ValueError, match="at least 2"):
        average_controllers([mlp])
    with pytest.raises(ValueError, match="controller 1 is linear"):
        average_controllers([mlp, random_controller(ControllerConfig.for_env(env), 1)])
    other = random_controller(ControllerConfig.for_env(game_env("carracing", 6), hidden=4), 2)
    with pytest.raises(ValueError, match="controller 1 differs from controller 0 in obs_dim"):
        average_controllers([mlp, other])


def test_linear_controllers_average_into_the_linear_map_of_their_mean_weights() -> None:
    env = game_env("takecover", 7)
    members = [random_controller(ControllerConfig.for_env(env), seed) for seed in range(3)]
    ensemble = average_controllers(members)
    assert ensemble.config == members[0].config
    obs = torch.from_numpy(np.random.default_rng(4).normal(size=(1, 6, 7)).astype(np.float32))
    pre_tanh_outputs = [obs[0].numpy() @ m.tensors()["weight"].T for m in members]
    got = population_outputs(ensemble.config, torch.from_numpy(ensemble.params)[None], obs)[0]
    np.testing.assert_allclose(got.numpy(), np.tanh(np.mean(pre_tanh_outputs, axis=0)), rtol=1e-5, atol=1e-5)
