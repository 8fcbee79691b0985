"""Scripted experts: players that read a real game's internal state instead of its pixels.

A game spec's ``expert`` (its own game's env -> controller action) plays the game or labels the states
another policy visits (``training.collect``, ``training.relabel``): demonstrations and DAgger labels for
``agents.imitate``. Its settings are a frozen dataclass, so command lines can change them by name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from dreamgym.games import GameSpec


@dataclass(frozen=True)
class TrackExpert:
    """Pure pursuit of the track's centre line at a speed set by the bends ahead: the CarRacing expert.

    It reads the car's pose, speed and spin and the track's waypoints from the Box2D game (privileged: the
    controller that imitates it sees only [z, h]). Steering: towards the waypoint 2 + speed/15 ahead with
    ``gain``, damped by ``damping`` x the car's angular velocity. Speed (``braking_plan`` False): gas while
    below ``top_speed`` - ``slow_down`` x (largest heading change over the next 30 waypoints, rad), at least
    50, never braking; True: each of the next 30 waypoints allows ``top_speed - slow_down`` x (heading change
    across it), at least 50, plus 2 per waypoint before it, and it brakes 0.5 when 5 above the lowest.
    docs/carracing.md compares settings and their scores.
    """

    gain: float = 1.2
    damping: float = 0.1
    top_speed: float = 65.0
    slow_down: float = 30.0
    gas: float = 0.3
    braking_plan: bool = False

    def __call__(self, env: gym.Env) -> np.ndarray:
        game = env.unwrapped
        car = game.car.hull  # type: ignore[attr-defined]
        track = game.track  # type: ignore[attr-defined]  # (alpha, beta, x, y) per waypoint
        points = np.array([(t[2], t[3]) for t in track])
        headings = np.array([t[1] for t in track])
        x, y = car.position
        nearest = int(np.hypot(points[:, 0] - x, points[:, 1] - y).argmin())
        speed = float(np.hypot(*car.linearVelocity))
        tx, ty = points[(nearest + 2 + int(speed / 15)) % len(points)]
        aim = _wrap_angle(math.atan2(ty - y, tx - x) - (car.angle + math.pi / 2))
        steer = float(np.clip(-self.gain * aim + self.damping * car.angularVelocity, -1.0, 1.0))
        ahead = (nearest + np.arange(30)) % len(track)
        if self.braking_plan:
            turn = np.abs(_wrap_angle(headings[(ahead + 3) % len(track)] - headings[ahead - 3]))
            target = float((np.maximum(50.0, self.top_speed - self.slow_down * turn) + 2.0 * np.arange(30)).min())
            brake = 0.5 * (speed > target + 5.0)
        else:
            bend = float(np.abs(_wrap_angle(headings[ahead] - headings[nearest])).max())
            target, brake = max(50.0, self.top_speed - self.slow_down * bend), 0.0
        return np.array([steer, self.gas * (speed < target), brake], np.float32)


def with_expert_settings(spec: GameSpec, settings: str | None) -> GameSpec:
    """``spec`` with its expert's settings replaced by ``settings``, a JSON object of some of the expert
    dataclass's fields (CarRacing: ``'{"braking_plan": true, "top_speed": 70}'``); None or ``{}``: ``spec``.

    Command lines pass settings this way so that worker processes, which look games up by name, rebuild
    the same expert; one clear ValueError names a bad setting.
    """
    if not settings:
        return spec
    if spec.expert is None or not dataclasses.is_dataclass(spec.expert):
        raise ValueError(f"game {spec.name!r} has no expert with settings (GameSpec.expert is not a dataclass)")
    try:
        values = json.loads(settings)
    except json.JSONDecodeError as err:
        raise ValueError(f"expert settings {settings!r} are not JSON: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"expert settings must be a JSON object of field: value, got {settings!r}")
    fields = {f.name: getattr(spec.expert, f.name) for f in dataclasses.fields(spec.expert)}
    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"{type(spec.expert).__name__} has no setting {name!r}; it has {sorted(fields)}")
        default = fields[name]
        kind = (int, float) if isinstance(default, float) else type(default)
        if not isinstance(value, kind) or (isinstance(value, bool) and not isinstance(default, bool)):
            raise ValueError(f"expert setting {name!r} must be a {type(default).__name__}, got {value!r}")
    expert = dataclasses.replace(spec.expert, **values)
    return dataclasses.replace(spec, expert=expert)


def _wrap_angle(angle: Any) -> Any:
    """Angle(s) (float or array) wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi
