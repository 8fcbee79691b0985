"""A game defined outside dreamgym (tests/tiny_game.py) reaches every stage by its import path: collect (in
spawned workers) -> vae -> encode -> mdnrnn -> bundle -> gymnasium.make of its dream id -> a CMA-ES generation
(in a fresh process, which knows the game only from the command line)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import gymnasium as gym
import pytest
from conftest import REPO_ROOT

import dreamgym.games as games
from dreamgym.envs.registration import dream_id
from dreamgym.games import GAMES, get_game
from training import bundle, collect, encode, mdnrnn, vae

GAME = "tiny_game:TINY"


@pytest.fixture(autouse=True)
def own_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test imports tiny_game afresh into copies of the registries: the other tests see only dreamgym's games."""
    monkeypatch.setattr(games, "GAMES", dict(GAMES))
    ids = set(gym.registry)
    yield
    sys.modules.pop("tiny_game", None)
    for env_id in set(gym.registry) - ids:
        del gym.registry[env_id]


@pytest.mark.slow
def test_own_game_reaches_every_stage(tmp_path: Path, run_module: Callable, script_env: dict[str, str]) -> None:
    episodes, latents, model = tmp_path / "episodes", tmp_path / "latents", tmp_path / "world_model"
    common = ["--device", "cpu", "--threads", "1"]
    collect.main(["--game", GAME, "--episodes", "4", "--workers", "2", "--out", str(episodes)])
    vae.main(["--game", GAME, "--episodes", str(episodes), "--out", str(tmp_path / "vae"), "--max-steps", "2",
              "--batch-size", "16", "--holdout", "0.25", "--eval-frames", "16", *common])  # fmt: skip
    encode.main(["--vae", str(tmp_path / "vae"), "--episodes", str(episodes), "--out", str(latents), *common])
    mdnrnn.main(["--game", GAME, "--latents", str(latents), "--out", str(tmp_path / "mdnrnn"), "--max-steps", "2",
                 "--batch-size", "2", "--seq-len", "8", "--holdout", "0.25", *common])  # fmt: skip
    bundle.main(["--vae", str(tmp_path / "vae"), "--mdnrnn", str(tmp_path / "mdnrnn"), "--latents", str(latents),
                 "--out", str(model), "--num-initial", "4"])  # fmt: skip
    assert json.loads((model / "config.json").read_text())["game"] == "tiny"  # the spec's name: one name everywhere

    env = gym.make(dream_id(GAME), world_model=str(model))
    obs, _ = env.reset(seed=0)
    assert dream_id(GAME) == "dreamgym/TinySquareDream-v0" and env.observation_space.contains(env.step(1)[0])
    env.close()
    script_env["PYTHONPATH"] += os.pathsep + str(REPO_ROOT / "tests")  # the fresh process can import tiny_game
    run_module("agents.cmaes", "--env", "tiny_game:dreamgym/TinySquareDream-v0", "--world-model", str(model),
               "--generations", "1", "--popsize", "4", "--episodes", "2", "--eval-every", "0", "--out",
               str(tmp_path / "controller"), *common)  # fmt: skip
    assert (tmp_path / "controller" / "mean").is_dir()


def test_import_path_finds_a_registered_spec_or_registers_it() -> None:
    tiny = get_game(GAME)  # the module registers it on import: the spec itself, under its own name
    assert tiny.name == "tiny" and games.GAMES["tiny"] is tiny and get_game("TinySquare-v0") is tiny
    loose = get_game("tiny_game:UNREGISTERED")  # nobody registered it: registered under the path, with its ids
    assert loose.name == "tiny_game:UNREGISTERED" and games.GAMES[loose.name] is loose and get_game(loose.name) is loose
    assert dream_id(loose.name) == "dreamgym/TinyUnregisteredDream-v0" and dream_id(loose.name) in gym.registry
    with pytest.raises(TypeError, match="not a GameSpec"):
        get_game("tiny_game:SquareEnv")
    with pytest.raises(KeyError, match="import path"):
        get_game("no-such-game")


def test_entry_point_games_load_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name an installed package declares in the dreamgym.games group is loaded when first asked for."""
    point = EntryPoint(name="square-from-a-package", value="tiny_game:UNREGISTERED", group=games.GAMES_GROUP)
    monkeypatch.setattr(games, "entry_points", lambda group: [point] if group == games.GAMES_GROUP else [])
    spec = get_game("square-from-a-package")
    assert spec.name == "square-from-a-package" and games.GAMES[spec.name] is spec and spec.z_size == 4
