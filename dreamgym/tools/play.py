"""Step into the dream yourself: a pygame window on any dreamgym env, driven by the keyboard or a controller.

    python -m dreamgym.tools.play --env dreamgym/TakeCoverDream-v0 --world-model runs/takecover/world_model
    python -m dreamgym.tools.play --env dreamgym/CarRacingLatent-v0 --controller runs/carracing/controller

Keys: arrows (or WASD) act (TakeCover: left / right, nothing = stay; CarRacing: steer, up = gas, down =
brake); C hands control to the saved controller and back; ] or + raise and [ or - lower the dream's
temperature tau; R restarts the episode; Esc or Q quits. The status bar shows the step, the episode's
return, tau and M's done probability for the step just taken. Dream ids show V's decoding of the dreamed
z; latent ids show the real game next to V's reconstruction. ``--headless-steps N`` runs N steps without a
window (the controller drives, or the no-key action) and prints each episode's return.

The pure logic (:class:`PlaySession`: key events -> actions, temperature, restarts) is separate from the
pygame loop (:func:`run_window`), so it runs and is tested without a display.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from dreamgym.controller import Controller
from dreamgym.devices import resolve_device
from dreamgym.envs.dream import DreamEnv, ObsMode
from dreamgym.envs.latent import LatentObservation
from dreamgym.envs.registration import dream_id, latent_id
from dreamgym.games import GAMES, GameSpec
from dreamgym.world_model import WorldModel

DIRECTIONS = ("left", "right", "up", "down")
TEMPERATURE_STEP = 0.05
MIN_WINDOW_WIDTH = 560  # room for the status bar

Keymap = Callable[[frozenset[str]], Any]
"""Held direction keys (a subset of DIRECTIONS) -> an action of the game spec's action space."""


def takecover_keys(held: frozenset[str]) -> int:
    """Left -> 0 (move left), right -> 2 (move right), neither or both -> 1 (stay)."""
    left, right = "left" in held, "right" in held
    return 0 if left and not right else 2 if right and not left else 1


def carracing_keys(held: frozenset[str]) -> np.ndarray:
    """[steer, gas, brake]: left/right steer -1/+1, up = full gas, down = brake 0.8 (Gymnasium's own play)."""
    steer = float("right" in held) - float("left" in held)
    return np.array([steer, float("up" in held), 0.8 * float("down" in held)], dtype=np.float32)


KEYMAPS: dict[str, Keymap] = {"takecover": takecover_keys, "carracing": carracing_keys}
"""Keyboard mapping per game spec name; a game added with ``register_game`` adds its own here."""


class DisplayError(RuntimeError):
    """A window was asked for and none can open."""


def import_pygame() -> Any:
    """pygame, imported quietly, or an ImportError naming what to install."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as err:
        raise ImportError("dreamgym.tools.play needs pygame: pip install pygame-ce (or 'gymnasium[box2d]')") from err
    return pygame


def key_bindings(pygame: Any) -> dict[int, str]:
    """pygame key code -> a direction (held while down) or a command (on key down)."""
    k = pygame
    return {
        k.K_LEFT: "left", k.K_RIGHT: "right", k.K_UP: "up", k.K_DOWN: "down",
        k.K_a: "left", k.K_d: "right", k.K_w: "up", k.K_s: "down",
        k.K_c: "toggle", k.K_r: "restart", k.K_ESCAPE: "quit", k.K_q: "quit",
        k.K_RIGHTBRACKET: "hotter", k.K_EQUALS: "hotter", k.K_PLUS: "hotter", k.K_KP_PLUS: "hotter",
        k.K_LEFTBRACKET: "colder", k.K_MINUS: "colder", k.K_KP_MINUS: "colder",
    }  # fmt: skip


def world_model_of(env: gym.Env) -> WorldModel | None:
    """The world model behind a dream or latent env (through any wrappers), or None."""
    while True:
        if isinstance(env, LatentObservation):
            return env.model
        if isinstance(env, DreamEnv):
            return env.core.model
        if not isinstance(env, gym.Wrapper):
            return None
        env = env.env


@torch.inference_mode()
def done_probability(model: WorldModel, obs: np.ndarray) -> float | None:
    """M's calibrated done probability of the step that led to ``obs``, from the h it carries.

    The dream samples "terminated" from exactly this probability (the done head on h_{t+1}); on a latent
    env it is M's belief that the real step ended the episode. None when M has no done head or the
    observation has no h (``obs_mode="z"``).
    """
    cfg = model.config.mdnrnn
    if model.mdnrnn.done is None or obs.shape[-1] < cfg.z_size + cfg.hidden_size:
        return None
    h = torch.as_tensor(obs[-cfg.hidden_size :], dtype=torch.float32, device=model.device)[None]
    return float(model.mdnrnn.done_probability(model.mdnrnn.heads(h).done_logit)[0])


@dataclass(frozen=True)
class Status:
    """What the overlay shows after a tick."""

    episode: int
    step: int
    episode_return: float
    temperature: float | None  # None on a real game
    done_probability: float | None  # None at an episode's first frame or without a done head
    driver: Literal["human", "controller"]
    action: Any
    message: str


def status_lines(status: Status) -> list[str]:
    """Overlay lines: the numbers, who drives and the keys, then the last message (if any)."""
    tau = "n/a" if status.temperature is None else f"{status.temperature:.2f}"
    p = "n/a" if status.done_probability is None else f"{status.done_probability:.3f}"
    lines = [
        f"ep {status.episode}  step {status.step}  return {status.episode_return:.1f}  tau {tau}  p(done) {p}",
        f"{status.driver.upper()}  C: controller  [ ]: tau  R: restart  Esc: quit",
    ]
    return [*lines, status.message] if status.message else lines


class PlaySession:
    """One env being played: key events in, one env step per :meth:`tick`, :class:`Status` out.

    Args:
        env: a dreamgym dream or latent env with ``render_mode="rgb_array"`` (or any env, without overlay numbers).
        keymap: held directions -> action, or None when the game has no keyboard mapping (controller only).
        controller: anything with ``act(obs) -> action`` (e.g. ``dreamgym.controller.Controller``), or None.
        seed: seed of the first episode (later episodes continue the env's random stream).
        temperature_step: how much one ] or [ changes tau.

    The controller drives from the start when given; C toggles. An episode that ends is followed by a new one.
    """

    def __init__(self, env: gym.Env, keymap: Keymap | None, controller: Any | None = None, seed: int | None = None,
                 temperature_step: float = TEMPERATURE_STEP) -> None:  # fmt: skip
        if keymap is None and controller is None:
            raise ValueError("this game has no keyboard mapping (dreamgym.tools.play.KEYMAPS): pass a controller")
        if not temperature_step > 0:
            raise ValueError(f"temperature_step must be > 0, got {temperature_step}")
        self.env, self.keymap, self.controller = env, keymap, controller
        self.model = world_model_of(env)
        self.temperature_step = temperature_step
        self.held: set[str] = set()
        self.agent = controller is not None
        self.quit = False
        self.episode = 0
        self.finished_returns: list[float] = []
        self.message = ""
        self._restart = False
        self._bindings: dict[int, str] | None = None
        self._new_episode(seed)

    # --- input ----------------------------------------------------------------------------------
    def handle(self, event: Any) -> None:
        """Applies one pygame event (QUIT, KEYDOWN, KEYUP, WINDOWFOCUSLOST; others are ignored)."""
        pygame = import_pygame()
        if self._bindings is None:
            self._bindings = key_bindings(pygame)
        if event.type == pygame.QUIT:
            self.quit = True
        elif event.type == pygame.WINDOWFOCUSLOST:
            self.held.clear()  # keys released outside the window never send KEYUP
        elif event.type in (pygame.KEYDOWN, pygame.KEYUP):
            name = self._bindings.get(event.key)
            if name in DIRECTIONS:
                (self.held.add if event.type == pygame.KEYDOWN else self.held.discard)(name)
            elif name is not None and event.type == pygame.KEYDOWN:
                self.command(name)

    def command(self, name: str) -> None:
        """``toggle`` (who drives), ``hotter`` / ``colder`` (tau), ``restart`` or ``quit``."""
        if name == "quit":
            self.quit = True
        elif name == "restart":
            self._restart = True
        elif name == "toggle":
            self._toggle()
        elif name in ("hotter", "colder"):
            self._change_temperature(1 if name == "hotter" else -1)
        else:
            raise ValueError(f"unknown command {name!r}")

    def _toggle(self) -> None:
        if self.controller is None:
            self.message = "no controller loaded (pass --controller)"
        elif self.keymap is None:
            self.message = "this game has no keyboard mapping"
        else:
            self.agent = not self.agent
            self.message = "controller drives" if self.agent else "you drive"

    @property
    def temperature(self) -> float | None:
        """The dream's tau, or None on a real game."""
        unwrapped = self.env.unwrapped
        return unwrapped.temperature if isinstance(unwrapped, DreamEnv) else None

    def _change_temperature(self, sign: int) -> None:
        tau = self.temperature
        if tau is None:
            self.message = "temperature: n/a (the real game)"
            return
        new = max(self.temperature_step, round(tau + sign * self.temperature_step, 6))
        dream = self.env.unwrapped
        assert isinstance(dream, DreamEnv)  # the only env with a temperature
        dream.temperature = new
        self.message = f"tau = {new:.2f}"

    # --- stepping -------------------------------------------------------------------------------
    def action(self) -> Any:
        """The action for the current observation: the controller's, or the keymap's for the held keys."""
        if self.agent:
            assert self.controller is not None  # only a session with a controller lets it drive
            return self.controller.act(self.obs)
        assert self.keymap is not None  # without a keymap the controller always drives
        return self.keymap(frozenset(self.held))

    def _new_episode(self, seed: int | None = None) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.step_count, self.episode_return = 0, 0.0
        self.p_done: float | None = None
        self.last_action: Any = None

    def tick(self, events: Iterable[Any] = ()) -> Status:
        """Handles ``events``, then restarts if asked or takes one env step (a new episode follows an end)."""
        for event in events:
            self.handle(event)
        if self.quit:
            return self.status()
        if self._restart:
            self._restart = False
            self.episode += 1
            self._new_episode()
            self.message = "restarted"
            return self.status()
        self.last_action = self.action()
        self.obs, reward, terminated, truncated, _ = self.env.step(self.last_action)
        self.step_count += 1
        self.episode_return += float(reward)
        self.p_done = done_probability(self.model, self.obs) if self.model is not None else None
        if terminated or truncated:
            self.finished_returns.append(self.episode_return)
            end = "ended" if terminated else "hit the step cap"
            self.message = f"episode {self.episode} {end}: return {self.episode_return:.1f} in {self.step_count} steps"
            self.episode += 1
            self._new_episode()
        return self.status()

    def status(self) -> Status:
        return Status(self.episode, self.step_count, self.episode_return, self.temperature, self.p_done,
                      "controller" if self.agent else "human", self.last_action, self.message)  # fmt: skip

    def picture(self) -> np.ndarray:
        """The env's current (H, W, 3) uint8 picture (``render()``)."""
        frame = self.env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3:
            raise ValueError("the env must be made with render_mode='rgb_array' to be shown")
        return frame


# --- the window -----------------------------------------------------------------------------------
def check_display() -> None:
    """Raises DisplayError when no window can open: Linux without DISPLAY / WAYLAND_DISPLAY (unless
    SDL_VIDEODRIVER names a driver explicitly)."""
    if os.environ.get("SDL_VIDEODRIVER"):
        return
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DisplayError(
            "no display to open a window on (DISPLAY and WAYLAND_DISPLAY are unset). Run with "
            "--headless-steps N to play without a window, record a video with `python -m dreamgym.tools.record`, "
            "or set SDL_VIDEODRIVER=dummy to run the window loop off-screen."
        )


def _font(pygame: Any, size: int) -> Any | None:
    """pygame's default font, or None where pygame was built without font support (the title bar still shows)."""
    try:
        pygame.font.init()
        return pygame.font.Font(None, size)
    except (ImportError, NotImplementedError, pygame.error):
        return None


def draw(pygame: Any, screen: Any, picture: np.ndarray, lines: Sequence[str], font: Any | None, height: int) -> None:
    """Blits ``picture`` scaled to ``height`` pixels tall (nearest neighbour) above a status bar of ``lines``."""
    surface = pygame.surfarray.make_surface(np.ascontiguousarray(picture.transpose(1, 0, 2)))
    width = round(picture.shape[1] * height / picture.shape[0])
    screen.fill((0, 0, 0))
    screen.blit(pygame.transform.scale(surface, (width, height)), ((screen.get_width() - width) // 2, 0))
    if font is not None:
        for i, line in enumerate(lines):
            screen.blit(font.render(line, True, (255, 255, 255)), (6, height + 4 + i * font.get_linesize()))


def run_window(session: PlaySession, scale: int = 8, fps: float | None = None, max_frames: int | None = None,
               events: Callable[[], list[Any]] | None = None) -> int:  # fmt: skip
    """The pygame loop: events -> :meth:`PlaySession.tick` -> draw, at ``fps`` (default: the game's).

    The picture is scaled so a 64-pixel frame is ``64 * scale`` pixels tall. ``events`` replaces
    ``pygame.event.get`` (scripted play); ``max_frames`` stops the loop early. Returns the frames shown.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    check_display()
    pygame = import_pygame()
    try:
        pygame.display.init()
        font = _font(pygame, 20)
        bar = 3 * font.get_linesize() + 8 if font is not None else 0
        picture = session.picture()
        height = 64 * scale
        width = round(picture.shape[1] * height / picture.shape[0])
        screen = pygame.display.set_mode((max(width, MIN_WINDOW_WIDTH), height + bar))
    except pygame.error as err:
        pygame.display.quit()
        raise DisplayError(f"cannot open a window ({err}); use --headless-steps N or dreamgym.tools.record") from err
    fps = session.env.metadata.get("render_fps", 30) if fps is None else fps
    clock = pygame.time.Clock()
    frames = 0
    try:
        while not session.quit and (max_frames is None or frames < max_frames):
            lines = status_lines(session.tick((events or pygame.event.get)()))
            pygame.display.set_caption(f"dreamgym: {lines[0]}")
            draw(pygame, screen, session.picture(), lines, font, height)
            pygame.display.flip()
            clock.tick(fps)
            frames += 1
    finally:
        pygame.display.quit()
    return frames


def run_headless(session: PlaySession, steps: int) -> Status:
    """``steps`` ticks without a window; prints each finished episode's return. Returns the last status."""
    if steps < 1:
        raise ValueError(f"--headless-steps must be >= 1, got {steps}")
    done = 0
    status = session.status()
    for _ in range(steps):
        status = session.tick()
        if len(session.finished_returns) > done:
            done = len(session.finished_returns)
            print(f"play: {status.message}")
    print(f"play: {steps} steps, {done} finished episodes; current episode at step {status.step}, "
          f"return {status.episode_return:.1f}")  # fmt: skip
    return status


# --- making the env -------------------------------------------------------------------------------
def env_kind(env_id: str) -> tuple[Literal["dream", "latent"], GameSpec]:
    """Whether ``env_id`` is a dream or a latent (real game) id, and its game; ValueError for other ids."""
    for spec in GAMES.values():
        if env_id == dream_id(spec.name):
            return "dream", spec
        if env_id == latent_id(spec.name):
            return "latent", spec
    known = sorted(i for s in GAMES.values() for i in (dream_id(s.name), latent_id(s.name)))
    raise ValueError(f"{env_id!r} is not a dreamgym id; known ids: {known}")


def obs_mode_for(model: WorldModel, obs_dim: int) -> ObsMode:
    """The obs_mode whose observations have ``obs_dim`` values for this model (z: Z, zh: Z+H, zch: Z+2H)."""
    z, h = model.config.mdnrnn.z_size, model.config.mdnrnn.hidden_size
    modes: dict[int, ObsMode] = {z: "z", z + h: "zh", z + 2 * h: "zch"}
    if obs_dim not in modes:
        raise ValueError(f"a controller for {obs_dim} inputs does not fit this world model (Z={z}, H={h}: "
                         f"z={z}, zh={z + h}, zch={z + 2 * h}); was it trained with another world model?")  # fmt: skip
    return modes[obs_dim]


def make_play_env(env_id: str, model: WorldModel, obs_mode: str = "zh", temperature: float | None = None) -> gym.Env:
    """``gymnasium.make(env_id)`` over ``model`` with an rgb_array picture (a latent id shows real | reconstruction)."""
    kind, _ = env_kind(env_id)
    kwargs: dict[str, Any] = {"world_model": model, "obs_mode": obs_mode, "device": model.device,
                              "render_mode": "rgb_array"}  # fmt: skip
    if kind == "dream":
        kwargs["temperature"] = temperature
    elif temperature is not None:
        raise ValueError(f"--temperature applies to dream ids; {env_id} is the real game")
    else:
        kwargs["side_by_side"] = True
    return gym.make(env_id, **kwargs)


# --- command line ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlayArgs:
    env: str
    world_model: str | None = None
    controller: str | None = None
    obs_mode: str | None = None
    temperature: float | None = None
    seed: int | None = None
    scale: int = 8
    fps: float | None = None
    device: str = "cpu"
    headless_steps: int | None = None


def parse_args(argv: list[str] | None = None) -> PlayArgs:
    p = argparse.ArgumentParser(prog="python -m dreamgym.tools.play", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--env", required=True, help="a dreamgym id, e.g. dreamgym/TakeCoverDream-v0 or ...Latent-v0")
    p.add_argument("--world-model", help="bundle folder or shipped name (default: the game's shipped bundle)")
    p.add_argument("--controller", help="saved controller folder (controller.json + controller.safetensors)")
    p.add_argument("--obs-mode", choices=("zh", "zch", "z"), help="default: the controller's, else zh")
    p.add_argument("--temperature", type=float, help="dream tau at the start (default: the game's)")
    p.add_argument("--seed", type=int, help="seed of the first episode")
    p.add_argument("--scale", type=int, default=8, help="window height = 64 * scale pixels")
    p.add_argument("--fps", type=float, help="frames per second (default: the game's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--headless-steps", type=int, help="run N steps without a window and print the returns")
    return PlayArgs(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _, spec = env_kind(args.env)
    try:
        if args.headless_steps is None:
            check_display()  # before starting a game engine
    except DisplayError as err:
        raise SystemExit(f"dreamgym.tools.play: {err}") from None
    model = WorldModel.load(args.world_model or spec.name, resolve_device(args.device))
    controller = Controller.load(args.controller) if args.controller else None
    obs_mode = args.obs_mode or (obs_mode_for(model, controller.config.obs_dim) if controller else "zh")
    env = make_play_env(args.env, model, obs_mode, args.temperature)
    try:
        if controller is not None:
            controller.config.check_env(env, f"controller {args.controller}")
        session = PlaySession(env, KEYMAPS.get(spec.name), controller, seed=args.seed)
        if args.headless_steps is not None:
            run_headless(session, args.headless_steps)
        else:
            run_window(session, args.scale, args.fps)
    except DisplayError as err:
        raise SystemExit(f"dreamgym.tools.play: {err}") from None
    finally:
        env.close()


if __name__ == "__main__":
    main()
