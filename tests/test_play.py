"""dreamgym.tools.play: scripted key events -> actions, temperature, restarts; the pygame loop off-screen; the CLI."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_HIDDEN, TINY_Z, make_tiny_world_model

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
pygame = pytest.importorskip("pygame")

from dreamgym.tools.play import (  # noqa: E402
    KEYMAPS,
    DisplayError,
    PlaySession,
    carracing_keys,
    check_display,
    done_probability,
    env_kind,
    main,
    make_play_env,
    obs_mode_for,
    run_window,
    status_lines,
    takecover_keys,
)
from dreamgym.world_model import WorldModel  # noqa: E402

TAKECOVER_DREAM = "dreamgym/TakeCoverDream-v0"


def key(kind: int, code: int) -> Any:
    return pygame.event.Event(kind, key=code)


def down(code: int) -> Any:
    return key(pygame.KEYDOWN, code)


def up(code: int) -> Any:
    return key(pygame.KEYUP, code)


def never_done(model: WorldModel) -> WorldModel:
    """M's done probability 0 at every step, so scripted episodes do not end by chance."""
    with torch.no_grad():
        model.mdnrnn.done.weight.zero_()
        model.mdnrnn.done.bias.fill_(-60.0)
    return model


@pytest.fixture
def session_for() -> Callable[..., PlaySession]:
    envs = []

    def make(env_id: str = TAKECOVER_DREAM, controller: Any = None, model: WorldModel | None = None,
             **kwargs: Any) -> PlaySession:  # fmt: skip
        model = model or never_done(make_tiny_world_model(env_kind(env_id)[1].name))
        envs.append(make_play_env(env_id, model, **kwargs))
        return PlaySession(envs[-1], KEYMAPS[model.game.name], controller, seed=0)

    yield make
    for env in envs:
        env.close()


class FixedController:
    def __init__(self, action: Any) -> None:
        self.action, self.seen = action, []

    def act(self, obs: np.ndarray) -> Any:
        self.seen.append(obs)
        return self.action


def test_keymaps() -> None:
    held = ([], ["left"], ["right"], ["left", "right"], ["up"])
    assert [takecover_keys(frozenset(h)) for h in held] == [1, 0, 2, 1, 1]
    np.testing.assert_array_equal(carracing_keys(frozenset()), np.float32([0, 0, 0]))
    np.testing.assert_array_equal(carracing_keys(frozenset({"left", "up"})), np.float32([-1, 1, 0]))
    np.testing.assert_array_equal(carracing_keys(frozenset({"right", "down"})), np.float32([1, 0, 0.8]))


def test_scripted_arrow_keys_give_takecover_actions(session_for: Callable[..., PlaySession]) -> None:
    session = session_for()
    script = [
        [down(pygame.K_LEFT)], [], [down(pygame.K_RIGHT)], [up(pygame.K_LEFT)], [up(pygame.K_RIGHT)],
        [down(pygame.K_d)], [pygame.event.Event(pygame.WINDOWFOCUSLOST)],
    ]  # fmt: skip
    actions = [session.tick(events).action for events in script]
    assert actions == [0, 0, 1, 2, 1, 2, 1]
    assert session.status().step == len(script) and session.status().driver == "human"


def test_scripted_keys_steer_carracing_in_the_dream(session_for: Callable[..., PlaySession]) -> None:
    session = session_for("dreamgym/CarRacingDream-v0")
    a = session.tick([down(pygame.K_UP), down(pygame.K_LEFT)]).action
    b = session.tick([up(pygame.K_UP), up(pygame.K_LEFT), down(pygame.K_DOWN)]).action
    np.testing.assert_array_equal(a, np.float32([-1, 1, 0]))
    np.testing.assert_array_equal(b, np.float32([0, 0, 0.8]))


def test_temperature_keys_change_the_dream_live(session_for: Callable[..., PlaySession]) -> None:
    session = session_for(temperature=1.0)
    env = session.env.unwrapped
    status = session.tick([down(pygame.K_RIGHTBRACKET), down(pygame.K_RIGHTBRACKET)])
    assert math.isclose(env.temperature, 1.1, abs_tol=1e-6) and math.isclose(status.temperature, 1.1, abs_tol=1e-6)
    session.tick([down(pygame.K_MINUS)])
    assert math.isclose(env.temperature, 1.05, abs_tol=1e-6)
    session.tick([down(pygame.K_LEFTBRACKET)] * 40)  # never below one step
    assert math.isclose(env.temperature, 0.05, abs_tol=1e-6)
    assert "tau 0.05" in status_lines(session.status())[0]


def test_controller_toggle_hands_control_back_and_forth(session_for: Callable[..., PlaySession]) -> None:
    controller = FixedController(2)
    session = session_for(controller=controller)
    assert session.tick().action == 2 and session.status().driver == "controller"  # the controller starts
    assert len(controller.seen) == 1 and controller.seen[0].shape == (TINY_Z + TINY_HIDDEN,)
    assert session.tick([down(pygame.K_c), down(pygame.K_LEFT)]).action == 0
    assert session.status().driver == "human"
    assert session.tick([down(pygame.K_c)]).action == 2


def test_toggle_without_a_controller_explains(session_for: Callable[..., PlaySession]) -> None:
    session = session_for()
    status = session.tick([down(pygame.K_c)])
    assert status.driver == "human" and "no controller" in status.message


def test_restart_and_quit(session_for: Callable[..., PlaySession]) -> None:
    session = session_for()
    for _ in range(3):
        session.tick()
    status = session.tick([down(pygame.K_r)])
    assert (status.episode, status.step, status.episode_return, status.done_probability) == (1, 0, 0.0, None)
    assert session.tick().step == 1
    session.tick([down(pygame.K_ESCAPE)])
    assert session.quit and session.tick().step == 1  # no more steps once quitting
    other = session_for()
    other.tick([pygame.event.Event(pygame.QUIT)])
    assert other.quit


def test_episode_end_starts_a_new_episode(session_for: Callable[..., PlaySession]) -> None:
    model = make_tiny_world_model("takecover")
    with torch.no_grad():  # calibrated done probability 1: every dream step ends the episode
        model.mdnrnn.done.weight.zero_()
        model.mdnrnn.done.bias.fill_(60.0)
    session = session_for(model=model)
    status = session.tick()
    assert (status.episode, status.step) == (1, 0) and session.finished_returns == [1.0]
    assert "episode 0 ended: return 1.0 in 1 steps" in status.message


def test_done_probability_is_the_dreams(session_for: Callable[..., PlaySession]) -> None:
    model = make_tiny_world_model("takecover")
    p = 0.02
    with torch.no_grad():
        model.mdnrnn.done.weight.zero_()
        model.mdnrnn.done.bias.fill_(math.log(p / (1 - p)) + math.log(model.config.mdnrnn.done_pos_weight))
    session = session_for(model=model)
    assert session.status().done_probability is None  # nothing happened yet
    assert math.isclose(session.tick().done_probability, p, rel_tol=1e-4)
    z_only = session_for(model=model, obs_mode="z")
    assert z_only.tick().done_probability is None
    assert done_probability(model, np.zeros(TINY_Z + 2 * TINY_HIDDEN, np.float32)) == pytest.approx(p, rel=1e-4)


def test_latent_id_plays_the_real_game(session_for: Callable[..., PlaySession], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini here
    session = session_for("dreamgym/TakeCoverLatent-v0")
    assert session.picture().shape == (256, 512, 3)  # real | reconstruction
    status = session.tick([down(pygame.K_RIGHTBRACKET), down(pygame.K_RIGHT)])
    assert status.temperature is None and "n/a" in status.message and status.action == 2
    assert 0.0 <= status.done_probability <= 1.0 and status.step == 1
    with pytest.raises(ValueError, match="dream ids"):
        make_play_env("dreamgym/TakeCoverLatent-v0", make_tiny_world_model(), temperature=1.0)


def test_window_loop_runs_off_screen_with_scripted_events(session_for: Callable[..., PlaySession],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    session = session_for(temperature=1.0)
    script = iter([[down(pygame.K_RIGHT)], [], [down(pygame.K_RIGHTBRACKET)], [], [down(pygame.K_q)], []])
    frames = run_window(session, scale=2, fps=0, events=lambda: next(script))
    assert frames == 5 and session.quit
    assert session.last_action == 2 and session.status().step == 4
    assert math.isclose(session.temperature, 1.05, abs_tol=1e-6)
    assert run_window(session_for(), scale=1, fps=0, max_frames=3, events=list) == 3


def test_no_display_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Callable[..., Path]) -> None:
    for name in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with pytest.raises(DisplayError, match="--headless-steps"):
        check_display()
    with pytest.raises(SystemExit, match="no display"):
        main(["--env", TAKECOVER_DREAM, "--world-model", str(tiny_bundle())])


def test_ids_and_obs_modes() -> None:
    assert env_kind("dreamgym/CarRacingLatent-v0") == ("latent", env_kind("dreamgym/CarRacingDream-v0")[1])
    with pytest.raises(ValueError, match="not a dreamgym id"):
        env_kind("CartPole-v1")
    model = make_tiny_world_model()
    sizes = (TINY_Z, TINY_Z + TINY_HIDDEN, TINY_Z + 2 * TINY_HIDDEN)
    assert [obs_mode_for(model, n) for n in sizes] == ["z", "zh", "zch"]
    with pytest.raises(ValueError, match="does not fit"):
        obs_mode_for(model, TINY_Z + 1)


def test_headless_script(run_module: Callable[..., Any], tiny_bundle: Callable[..., Path]) -> None:
    proc = run_module("dreamgym.tools.play", "--env", TAKECOVER_DREAM, "--world-model", str(tiny_bundle()),
                      "--headless-steps", "10", "--seed", "0")  # fmt: skip
    assert "play: 10 steps" in proc.stdout
