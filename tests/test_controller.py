"""The linear controller: paper parameter counts, action mappings, batched outputs, safe save/load."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dreamgym.checkpoint import CHECKSUM_FILE, CheckpointError
from dreamgym.controller import (
    CONFIG_FILE,
    CONTROLLERS_DIR,
    WEIGHTS_FILE,
    Controller,
    ControllerConfig,
    population_outputs,
)
from dreamgym.pretrained import write_checksums
from tests.spaces_env import SpacesEnv, game_env


def test_paper_parameter_counts() -> None:
    takecover = ControllerConfig.for_env(game_env("takecover", 64 + 512 + 512))
    carracing = ControllerConfig.for_env(game_env("carracing", 32 + 256))
    assert (takecover.n_params, takecover.bias, takecover.action_out) == (1088, False, 1)
    assert (carracing.n_params, carracing.bias, carracing.action_out) == (867, True, 3)
    assert ControllerConfig.for_env(game_env("takecover", 1088), bias=True).n_params == 1089


def controller_emitting(config: ControllerConfig, outputs: np.ndarray) -> Controller:
    """A controller whose tanh outputs on the observation e_0 = (1, 0, ..., 0) equal ``outputs`` (A,)."""
    weight = np.zeros((config.action_out, config.obs_dim), np.float32)
    weight[:, 0] = np.arctanh(outputs)
    bias = np.zeros(config.action_out, np.float32) if config.bias else np.zeros(0, np.float32)
    return Controller(config, np.concatenate([weight.ravel(), bias]))


def e0(dim: int) -> np.ndarray:
    obs = np.zeros(dim, np.float32)
    obs[0] = 1.0
    return obs


@pytest.mark.parametrize(("y", "action"), [(-0.5, 0), (-0.3, 1), (0.0, 1), (0.3, 1), (0.5, 2)])
def test_takecover_thresholds_at_one_third(y: float, action: int) -> None:
    config = ControllerConfig.for_env(game_env("takecover", 8))
    assert controller_emitting(config, np.array([y])).act(e0(8)) == action


def test_carracing_steer_gas_brake() -> None:
    config = ControllerConfig.for_env(game_env("carracing", 6))
    action = controller_emitting(config, np.array([-0.4, 0.2, -0.6])).act(e0(6))
    np.testing.assert_allclose(action, [-0.4, 0.6, 0.0], atol=1e-6)  # gas (x+1)/2, negative brake -> 0
    action = controller_emitting(config, np.array([0.9, -0.8, 0.7])).act(e0(6))
    np.testing.assert_allclose(action, [0.9, 0.1, 0.7], atol=1e-6)


def test_generic_box_is_scaled_into_bounds() -> None:
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))
    config = ControllerConfig.for_env(SpacesEnv(4, space))
    assert (config.game, config.action_out, config.bias) == (None, 2, True)
    action = controller_emitting(config, np.array([0.5, -0.5])).act(e0(4))
    np.testing.assert_allclose(action, [1.0, 2.5], atol=1e-5)
    assert action.dtype == np.float32 and space.contains(action)


def test_generic_discrete_is_argmax_with_start() -> None:
    config = ControllerConfig.for_env(SpacesEnv(4, gym.spaces.Discrete(3, start=-1)))
    assert config.action_out == 3
    assert controller_emitting(config, np.array([0.1, -0.2, 0.3])).act(e0(4)) == 1  # argmax 2, start -1
    # a spec-less Discrete(3) env is argmax too, not the TakeCover thresholds
    assert ControllerConfig.for_env(SpacesEnv(4, gym.spaces.Discrete(3))).action_out == 3


def test_unsupported_spaces_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unbounded"):
        ControllerConfig.for_env(SpacesEnv(4, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)))
    with pytest.raises(TypeError, match="Box and Discrete"):
        ControllerConfig.for_env(SpacesEnv(4, gym.spaces.MultiBinary(3)))
    config = ControllerConfig.for_env(SpacesEnv(4, gym.spaces.Discrete(2)))
    with pytest.raises(ValueError, match="needs 10 parameters"):
        Controller(config, np.zeros(9))


def test_population_outputs_match_each_candidate() -> None:
    """One einsum over (P, E) equals tanh(W_p obs + b_p) computed per candidate and env."""
    config = ControllerConfig.for_env(game_env("carracing", 5))
    rng = np.random.default_rng(0)
    params = rng.normal(size=(4, config.n_params)).astype(np.float32)
    obs = rng.normal(size=(4, 3, 5)).astype(np.float32)
    out = population_outputs(config, torch.from_numpy(params), torch.from_numpy(obs)).numpy()
    for p in range(4):
        c = Controller(config, params[p])
        np.testing.assert_allclose(out[p], np.tanh(obs[p] @ c.weight.T + c.bias), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expected params"):
        population_outputs(config, torch.from_numpy(params), torch.from_numpy(obs[:3]))


def test_save_load_round_trip_and_mismatched_env(tmp_path: Path) -> None:
    env = game_env("takecover", 16)
    config = ControllerConfig.for_env(env, "dreamgym/TakeCoverDream-v0")
    controller = Controller(config, np.random.default_rng(1).normal(size=config.n_params))
    controller.save(tmp_path / "c", {"generation": 7})
    meta = json.loads((tmp_path / "c" / "controller.json").read_text())
    assert meta["config"]["env_id"] == "dreamgym/TakeCoverDream-v0" and meta["provenance"] == {"generation": 7}
    assert meta["config"]["action_space"] == {"type": "Discrete", "n": 3, "start": 0} and "torch" in meta["versions"]

    loaded = Controller.load(tmp_path / "c", env)  # a real-game env with the same spaces also fits
    np.testing.assert_array_equal(loaded.params, controller.params)
    obs = np.random.default_rng(2).normal(size=16).astype(np.float32)
    assert loaded.act(obs) == controller.act(obs)

    with pytest.raises(ValueError, match="observations of size 24, the controller .* expects 16"):
        Controller.load(tmp_path / "c", game_env("takecover", 24))
    with pytest.raises(ValueError, match="game 'carracing'"):
        Controller.load(tmp_path / "c", game_env("carracing", 16))
    with pytest.raises(ValueError, match="action space"):
        Controller.load(tmp_path / "c", SpacesEnv(16, gym.spaces.Discrete(2), "takecover"))


def test_corrupt_or_foreign_files_fail_clearly(tmp_path: Path) -> None:
    config = ControllerConfig.for_env(game_env("carracing", 4))
    Controller(config).save(tmp_path / "c")
    (tmp_path / "c" / "controller.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        Controller.load(tmp_path / "c")
    (tmp_path / "c" / "controller.json").write_text(json.dumps({"architecture": "something else"}))
    with pytest.raises(CheckpointError, match="architecture"):
        Controller.load(tmp_path / "c")


def test_hidden_layer_outputs_counts_and_round_trip(tmp_path: Path) -> None:
    """hidden=H: tanh(W tanh(W_h obs + b_h) + b) per candidate, (D + 1) H + (H + 1) A parameters, own tag on disk."""
    env = game_env("carracing", 5)
    config = ControllerConfig.for_env(env, hidden=4)
    assert config.n_params == (5 + 1) * 4 + (4 + 1) * 3
    rng = np.random.default_rng(0)
    params = rng.normal(size=(2, config.n_params)).astype(np.float32)
    obs = rng.normal(size=(2, 3, 5)).astype(np.float32)
    out = population_outputs(config, torch.from_numpy(params), torch.from_numpy(obs)).numpy()
    for p in range(2):
        t = Controller(config, params[p]).tensors()
        hidden = np.tanh(obs[p] @ t["hidden.weight"].T + t["hidden.bias"])
        np.testing.assert_allclose(out[p], np.tanh(hidden @ t["weight"].T + t["bias"]), rtol=1e-5, atol=1e-6)

    controller = Controller(config, params[0])
    controller.save(tmp_path / "mlp")
    meta = json.loads((tmp_path / "mlp" / "controller.json").read_text())
    assert meta["architecture"] == "dreamgym.MLPController/v1" and meta["config"]["hidden"] == 4
    loaded = Controller.load(tmp_path / "mlp", env)
    np.testing.assert_array_equal(loaded.params, controller.params)
    np.testing.assert_allclose(loaded.act(obs[0, 0]), controller.act(obs[0, 0]))

    Controller(ControllerConfig.for_env(env)).save(tmp_path / "linear")  # what versions without hidden read
    meta = json.loads((tmp_path / "linear" / "controller.json").read_text())
    assert meta["architecture"] == "dreamgym.LinearController/v1" and "hidden" not in meta["config"]

    meta = json.loads((tmp_path / "mlp" / "controller.json").read_text())
    meta["architecture"] = "dreamgym.LinearController/v1"  # a tag that contradicts the config
    (tmp_path / "mlp" / "controller.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="hidden=4"):
        Controller.load(tmp_path / "mlp")
    with pytest.raises(ValueError, match="hidden must be an integer >= 0, got -1"):
        ControllerConfig.for_env(env, hidden=-1)


def test_skip_map_beside_the_hidden_layer(tmp_path: Path) -> None:
    """skip: tanh(W tanh(W_h obs + b_h) + S obs + b), A D more parameters, its own tag; only with a hidden layer."""
    env = game_env("carracing", 5)
    config = ControllerConfig.for_env(env, hidden=4, skip=True)
    assert config.n_params == (5 + 1) * 4 + (4 + 1) * 3 + 3 * 5
    rng = np.random.default_rng(1)
    params = rng.normal(size=(2, config.n_params)).astype(np.float32)
    obs = rng.normal(size=(2, 3, 5)).astype(np.float32)
    out = population_outputs(config, torch.from_numpy(params), torch.from_numpy(obs)).numpy()
    for p in range(2):
        t = Controller(config, params[p]).tensors()
        hidden = np.tanh(obs[p] @ t["hidden.weight"].T + t["hidden.bias"])
        expected = np.tanh(hidden @ t["weight"].T + obs[p] @ t["skip.weight"].T + t["bias"])
        np.testing.assert_allclose(out[p], expected, rtol=1e-5, atol=1e-6)
    Controller(config, params[0]).save(tmp_path / "skip")
    meta = json.loads((tmp_path / "skip" / "controller.json").read_text())
    assert meta["architecture"] == "dreamgym.MLPSkipController/v1" and meta["config"]["skip"] is True
    np.testing.assert_array_equal(Controller.load(tmp_path / "skip", env).params, params[0])
    Controller(ControllerConfig.for_env(env, hidden=4)).save(tmp_path / "mlp")
    assert "skip" not in json.loads((tmp_path / "mlp" / "controller.json").read_text())["config"]
    with pytest.raises(ValueError, match="needs hidden > 0"):
        ControllerConfig.for_env(env, skip=True)


def saved_controller(folder: Path) -> Path:
    config = ControllerConfig.for_env(game_env("carracing", 4))
    Controller(config, np.arange(config.n_params, dtype=np.float32)).save(folder)
    return folder


def edit_controller_tensors(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(str(folder / WEIGHTS_FILE))
    edit(tensors)
    save_file(tensors, str(folder / WEIGHTS_FILE))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["weight"].__setitem__((0, 1), float("nan")), "tensor 'weight' holds NaN or infinite"),
        (
            lambda t: t.update(bias=t["bias"].to(torch.int8)),
            "tensor 'bias' is torch.int8, the config says torch.float32",
        ),
        (lambda t: t.update(bias=t["bias"].half()), "tensor 'bias' is torch.float16"),
    ],
)
def test_non_finite_or_recast_controller_weights_are_refused(tmp_path: Path, edit: Callable, message: str) -> None:
    folder = saved_controller(tmp_path / "c")
    edit_controller_tensors(folder, edit)
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE}: {message}"):
        Controller.load(folder)


def test_controller_folder_with_sha256sums_is_checked(tmp_path: Path) -> None:
    folder = saved_controller(tmp_path / "c")
    write_checksums(folder)
    Controller.load(folder)
    edit_controller_tensors(folder, lambda t: t["weight"].add_(1.0))
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE}: sha256 differs"):
        Controller.load(folder)
    (folder / CHECKSUM_FILE).write_bytes(b"\x89PNG\r\n\x1a\n\xff")
    with pytest.raises(CheckpointError, match=f"{CHECKSUM_FILE}: not a text checksum file"):
        Controller.load(folder)


def test_controller_in_a_game_folder_is_checked_against_its_sha256sums(tmp_path: Path) -> None:
    folder = saved_controller(tmp_path / "game" / CONTROLLERS_DIR / "mine")
    write_checksums(tmp_path / "game")
    Controller.load(folder)
    config = folder / CONFIG_FILE
    config.write_text(config.read_text() + "\n")  # still valid JSON, but not the shipped file
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: sha256 differs from the one in .*game/{CHECKSUM_FILE}"):
        Controller.load(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(config=[4, 3]), "config must be a JSON object, got list"),
        (lambda c: c["config"].update(obs_dim="4"), "config.obs_dim must be of type int, got '4'"),
        (lambda c: c["config"].update(obs_dim=0), "config.obs_dim must be an integer >= 1, got 0"),
        (lambda c: c["config"].update(bias=1), "config.bias must be of type bool, got 1"),
        (lambda c: c["config"].update(game=5), "config.game must be of type str | None, got 5"),
        (lambda c: c["config"]["action_space"].update(type="Tuple"), "config.action_space.type must be 'Box' or"),
        (lambda c: c["config"]["action_space"]["low"].pop(), "config.action_space.low must be a list of 3 numbers"),
    ],
)
def test_controller_config_fields_are_checked_on_load(tmp_path: Path, edit: Callable, message: str) -> None:
    folder = saved_controller(tmp_path / "c")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    edit(meta)
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: {message}"):
        Controller.load(folder)


def test_controller_config_that_is_a_json_list_is_refused(tmp_path: Path) -> None:
    folder = saved_controller(tmp_path / "c")
    (folder / CONFIG_FILE).write_text("[]")
    with pytest.raises(CheckpointError, match="expected a JSON object, got a JSON list"):
        Controller.load(folder)
