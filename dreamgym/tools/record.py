"""Dream vs reality on video: the real game (left), V's reconstruction (middle), the dream (right).

    python -m dreamgym.tools.record --world-model runs/takecover/world_model --out takecover.mp4 \
        [--controller runs/takecover/controller] [--steps 300] [--seed 0]

The controller (or, without one, the game's random exploration policy) plays the real game through the
latent wrapper; every real frame, the z V made of it and every action are kept. Then the dream starts from
the first real frame's z and replays the same actions, so each column shows the same moment and a viewer
sees where the dream drifts from the game. After the dream's episode ends its last frame stays, darkened.
Writes ``.mp4`` (H.264 through imageio-ffmpeg, streamed) or ``.gif`` (held in memory until written: prefer
mp4 for long recordings), atomically.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from dreamgym.controller import Controller
from dreamgym.data import atomic_write
from dreamgym.devices import resolve_device
from dreamgym.envs.dream import DreamEnv, ObsMode
from dreamgym.envs.latent import LatentObservation, ZMode, upscale
from dreamgym.episodes import Policy, play_episode
from dreamgym.tools.pictures import decode
from dreamgym.tools.play import obs_mode_for
from dreamgym.world_model import WorldModel

HEADER = 16  # pixels of label strip above the panels (a multiple of 16 keeps H.264 sizes exact)
VIDEO_SUFFIXES = (".mp4", ".gif")


@dataclass(frozen=True)
class RealRollout:
    """One real episode (T steps): frames (T+1, 64, 64, 3) uint8, the latents z (T+1, Z) the wrapper made
    of them, and the T actions taken."""

    frames: np.ndarray
    z: np.ndarray
    actions: list[Any]


def make_recording_env(model: WorldModel, steps: int, obs_mode: ObsMode = "zh", z_mode: ZMode = "mean"
                       ) -> LatentObservation:  # fmt: skip
    """The real game capped at ``steps``, seen through the latent wrapper (whose ``frame`` is the real one)."""
    spec = model.game
    return LatentObservation(spec.make_real_env(steps), model, game=spec.name, obs_mode=obs_mode, device=model.device,
                             z_mode=z_mode)  # fmt: skip


def roll_real(env: LatentObservation, policy: Policy, seed: int) -> RealRollout:
    """Plays one real episode (until it ends or hits the env's cap), keeping every frame and latent."""
    z_size = env.model.config.mdnrnn.z_size
    frames: list[np.ndarray] = []
    zs: list[np.ndarray] = []
    actions: list[Any] = []

    def keep(obs: np.ndarray, *_: Any) -> None:
        frames.append(env.frame)
        zs.append(obs[:z_size])

    def keep_step(t: int, obs: np.ndarray, action: Any, *_: Any) -> None:
        keep(obs)
        actions.append(action)

    play_episode(env, policy, seed, on_step=keep_step, on_reset=keep)
    return RealRollout(np.stack(frames), np.stack(zs), actions)


def start_dream_at(env: DreamEnv, z0: np.ndarray) -> np.ndarray:
    """Makes a just-reset dream start from ``z0`` (Z,) instead of a stored initial latent; returns its obs.

    After ``reset`` the dream's state is (z_0, h = c = 0, restart = 1, step 0); only z_0 is replaced.
    """
    core = env.core
    if core.steps[0] != 0:
        raise ValueError("start_dream_at needs a dream that was just reset")
    core.z = torch.as_tensor(np.asarray(z0), dtype=torch.float32, device=core.device).reshape(1, core.z_size)
    return core.observation()[0].cpu().numpy()


@dataclass(frozen=True)
class DreamRollout:
    """The dream under a real episode's actions: latents z (T'+1, Z), the step it ended at (None: it ran
    through all T actions, T' = T) and its temperature."""

    z: np.ndarray
    ended_at: int | None
    temperature: float


def roll_dream(model: WorldModel, z0: np.ndarray, actions: list[Any], seed: int,
               temperature: float | None = None) -> DreamRollout:  # fmt: skip
    """The dream from ``z0`` (Z,) replaying ``actions`` (``temperature`` None: the game's default)."""
    env = DreamEnv(model, temperature=temperature, obs_mode="z", device=model.device,
                   max_episode_steps=max(1, len(actions)))  # fmt: skip
    replay = iter(actions)
    zs: list[np.ndarray] = []

    def start(obs: np.ndarray, info: dict[str, Any]) -> None:
        zs.append(start_dream_at(env, z0))

    def keep(t: int, obs: np.ndarray, *_: Any) -> None:
        zs.append(obs)

    result = play_episode(env, lambda obs: next(replay), seed, on_step=keep, on_reset=start, max_steps=len(actions))
    return DreamRollout(np.stack(zs), result.steps if result.terminated else None, env.temperature)


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    """The panel (H, W, 3) under a HEADER-pixel strip with ``text``."""
    strip = Image.new("RGB", (panel.shape[1], HEADER), (0, 0, 0))
    ImageDraw.Draw(strip).text((3, 2), text, fill=(255, 255, 255), font=ImageFont.load_default())
    return np.concatenate([np.asarray(strip), panel])


def compose(real: np.ndarray, recon: np.ndarray, dream: np.ndarray, ended_at: int | None, scale: int,
            temperature: float) -> Iterator[np.ndarray]:  # fmt: skip
    """Video frames [real | recon | dream], each panel ``64 * scale`` square under a label strip.

    real and recon are (T+1, 64, 64, 3); dream may be shorter (ended_at), its last frame then stays, darkened.
    Each frame is (HEADER + 64*scale, 3 * 64*scale, 3) uint8.
    """
    for t in range(len(real)):
        if t < len(dream):
            dreamed, dream_text = dream[t], f"dream  tau {temperature:.2f}"
        else:
            dreamed, dream_text = dream[-1] // 2, f"dream ended at t={ended_at}"
        panels = [
            _label(upscale(real[t], scale), f"real  t={t}"),
            _label(upscale(recon[t], scale), "V reconstruction"),
            _label(upscale(dreamed, scale), dream_text),
        ]
        yield np.concatenate(panels, axis=1)


def save_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float, colors: int = 128) -> None:
    """A looping GIF with one palette for all frames, taken from up to 16 frames spread over the clip.

    Per-frame palettes (imageio's default) cost ~5x the bytes on decoded-latent frames, whose noise defeats
    LZW; one shared palette without dithering keeps a 600-frame 64x64 dream near 0.6 MB.
    """
    if not frames:
        raise ValueError("no frames to write")
    images = [Image.fromarray(np.ascontiguousarray(frame[..., :3])) for frame in frames]
    picks = images[:: max(1, len(images) // 16)][:16]
    sample = Image.new("RGB", (picks[0].width, picks[0].height * len(picks)))
    for i, image in enumerate(picks):
        sample.paste(image, (0, i * picks[0].height))
    palette = sample.quantize(colors=colors)
    indexed = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]
    indexed[0].save(path, format="GIF", save_all=True, append_images=indexed[1:], duration=round(1000 / fps), loop=0)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> int:
    """Writes (H, W, 3) uint8 frames as .mp4 (streamed to ffmpeg) or .gif, atomically; returns the count."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"{path}: the video must end in one of {VIDEO_SUFFIXES}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    count = 0

    def write_gif(tmp: str) -> None:
        nonlocal count
        stack = list(frames)
        count = len(stack)
        save_gif(tmp, stack, fps)

    def write_mp4(tmp: str) -> None:
        nonlocal count
        import imageio_ffmpeg

        writer = None
        for frame in frames:
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = imageio_ffmpeg.write_frames(tmp, size, fps=fps, codec="libx264", quality=8,
                                                     macro_block_size=16, output_params=["-f", "mp4"])  # fmt: skip
                writer.send(None)
            writer.send(np.ascontiguousarray(frame))
            count += 1
        if writer is None:
            raise ValueError("no frames to write")
        writer.close()

    atomic_write(path, write_gif if suffix == ".gif" else write_mp4)
    return count


@dataclass(frozen=True)
class RecordResult:
    path: Path
    frames: int
    real_steps: int
    dream_ended_at: int | None


def record(world_model: str | os.PathLike | WorldModel, out: str | os.PathLike,
           controller: str | os.PathLike | None = None, seed: int = 0, steps: int = 300, scale: int = 4,
           fps: float | None = None, temperature: float | None = None, z_mode: ZMode = "mean",
           device: str = "cpu") -> RecordResult:  # fmt: skip
    """Plays the real game (at most ``steps`` steps), dreams the same actions and writes the video ``out``.

    ``controller`` is a saved controller folder; without one the game's exploration policy (seeded) acts.
    ``fps`` defaults to the game's; ``temperature`` to the game's dream default.
    """
    if Path(out).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{out}: the video must end in one of {VIDEO_SUFFIXES}")
    if steps < 1 or scale < 1:
        raise ValueError(f"steps and scale must be >= 1, got {steps} and {scale}")
    model = world_model if isinstance(world_model, WorldModel) else WorldModel.load(world_model, resolve_device(device))
    spec = model.game
    agent = Controller.load(controller) if controller is not None else None
    obs_mode = obs_mode_for(model, agent.config.obs_dim) if agent is not None else "zh"
    env = make_recording_env(model, steps, obs_mode, z_mode)
    try:
        if agent is not None:
            agent.config.check_env(env, f"controller {controller}")
            policy: Policy = agent.act
        else:
            explore = spec.exploration(np.random.default_rng(seed))
            policy = lambda obs: explore(env.frame)  # noqa: E731
        real = roll_real(env, policy, seed)
    finally:
        env.close()
    dream = roll_dream(model, real.z[0], real.actions, seed, temperature)
    pictures = decode(model.vae, real.z), decode(model.vae, dream.z)
    frames = compose(real.frames, *pictures, dream.ended_at, scale, dream.temperature)
    count = write_video(out, frames, fps or spec.render_fps)
    return RecordResult(Path(out), count, len(real.actions), dream.ended_at)


@dataclass(frozen=True)
class RecordArgs:
    world_model: str
    out: str
    controller: str | None = None
    seed: int = 0
    steps: int = 300
    scale: int = 4
    fps: float | None = None
    temperature: float | None = None
    z_mode: ZMode = "mean"
    device: str = "cpu"


def parse_args(argv: list[str] | None = None) -> RecordArgs:
    p = argparse.ArgumentParser(prog="python -m dreamgym.tools.record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--world-model", required=True, help="bundle folder or shipped name")
    p.add_argument("--out", required=True, help="video file: .mp4 or .gif")
    p.add_argument("--controller", help="saved controller folder (default: the game's random exploration policy)")
    p.add_argument("--seed", type=int, default=0, help="seed of the real episode, the policy and the dream")
    p.add_argument("--steps", type=int, default=300, help="at most this many steps")
    p.add_argument("--scale", type=int, default=4, help="each 64x64 panel is 64*scale pixels square")
    p.add_argument("--fps", type=float, help="frames per second (default: the game's)")
    p.add_argument("--temperature", type=float, help="dream tau (default: the game's)")
    p.add_argument("--z-mode", choices=("mean", "sample"), default="mean", help="z = mu (default) or a sample")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    return RecordArgs(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    result = record(a.world_model, a.out, a.controller, a.seed, a.steps, a.scale, a.fps, a.temperature,
                    a.z_mode, a.device)  # fmt: skip
    ended = f"the dream ended at step {result.dream_ended_at}" if result.dream_ended_at else "the dream ran to the end"
    print(f"record: {result.frames} frames ({result.real_steps} real steps; {ended}) written to {result.path}")


if __name__ == "__main__":
    main()
