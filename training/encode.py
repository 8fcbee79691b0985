"""Encode every episode once with a trained V, so M trains on latents without re-running V.

    python -m training.encode --vae runs/takecover/vae --episodes data/takecover
    python -m training.encode --vae carracing --episodes data/carracing   # V of a (shipped) bundle

For each shard ``episode_000042.npz`` it writes ``<out>/episode_000042.npz`` holding mu and logvar
(T, Z) float32 of every frame plus the episode's actions, rewards, terminated and truncated flags (and the
expert's labels when the shard has them), so M never opens a frame shard. ``<out>`` defaults to
``<episodes>/../latents/<vae run name>``. Latents are stored as (mu, log sigma^2), not z: M's training
samples a fresh z from them every epoch. The run is resumable (finished files are skipped) and
refuses a folder encoded by different V weights. ``--vae`` may also name a world-model bundle (a folder
or a shipped name): its V encodes, so new rollouts join the features of the model that will use them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dreamgym.checkpoint import load_json, save_json
from dreamgym.cli_args import Count, parse_args
from dreamgym.data import (
    Episode,
    ShardError,
    list_episodes,
    load_arrays,
    load_episode,
    remove_stale_temps,
    save_arrays,
)
from dreamgym.locks import exit_if_busy, folder_lock
from dreamgym.models.vae import ConvVAE, frames_to_tensor
from dreamgym.runs import Compute, set_threads
from dreamgym.world_model import ARCHITECTURE as WORLD_MODEL_ARCHITECTURE
from dreamgym.world_model import WorldModel, resolve_bundle

from .common import CONFIG_FILE, MODEL_FILE, resolve_device
from .vae import load_vae

MANIFEST = "encode.json"
LATENT_KEYS = ("mu", "logvar", "actions", "rewards", "terminated", "truncated")


@dataclass(frozen=True)
class EncodeArgs(Compute):
    vae: str = "runs/takecover/vae"
    """V run folder (holds model.safetensors + config.json), or a world-model bundle folder or shipped name"""
    episodes: str = "data/takecover"
    """folder of episode shards"""
    out: str | None = None
    """latent folder (default: <episodes>/../latents/<name of the V folder>)"""
    batch_size: Count = 512
    """frames encoded per forward pass"""


@dataclass(frozen=True)
class Latents:
    """One encoded episode: mu, logvar (T, Z) float32; actions (T, ...); rewards, terminated, truncated (T,)."""

    mu: np.ndarray
    logvar: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __len__(self) -> int:
        return len(self.mu)


def default_latent_dir(episodes: str | os.PathLike, vae: str | os.PathLike) -> Path:
    return Path(episodes).resolve().parent / "latents" / Path(vae).resolve().name


def load_latents(path: str | os.PathLike) -> Latents:
    """Reads one latent file (a ShardError names a corrupt or foreign file)."""
    return Latents(**load_arrays(path, LATENT_KEYS))


@torch.inference_mode()
def encode_episode(model: WorldModel, path: Path, device: torch.device,
                   batch_size: int) -> tuple[Episode, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One real episode shard of ``model``'s game: (the episode, V's mean latents (T, Z), M's encoded actions
    (T, A)), both on ``device``; a bad shard or another game's is one ValueError naming the file."""
    try:
        episode = load_episode(path)
    except ShardError as err:
        raise ValueError(str(err)) from None
    if episode.game != model.config.game:
        raise ValueError(f"{path}: a {episode.game!r} episode, the world model is for {model.config.game!r}")
    mu = torch.from_numpy(encode_frames(model.vae, episode.frames, device, batch_size)[0]).to(device)
    actions = model.game.encode_action(torch.from_numpy(episode.actions).to(device)).reshape(len(mu), -1)
    return episode, mu, actions


@torch.inference_mode()
def encode_frames(
    vae: ConvVAE, frames: np.ndarray, device: torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(T, 64, 64, 3) uint8 -> mu, logvar, each (T, Z) float32."""
    parts = [
        vae.encode(frames_to_tensor(frames[i : i + batch_size], device)) for i in range(0, len(frames), batch_size)
    ]
    mu = torch.cat([p[0] for p in parts]).cpu().numpy()
    logvar = torch.cat([p[1] for p in parts]).cpu().numpy()
    return mu.astype(np.float32), logvar.astype(np.float32)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_encoder(vae: str, device: torch.device) -> tuple[ConvVAE, Path]:
    """The V named by ``vae`` (a V run folder, or a bundle folder or shipped name) and the folder it came from."""
    folder = Path(vae)
    config = folder / CONFIG_FILE
    if config.is_file() and load_json(config).get("architecture") != WORLD_MODEL_ARCHITECTURE:
        return load_vae(folder, device), folder
    try:
        bundle = resolve_bundle(vae)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--vae {vae!r} is neither a V run folder nor a world-model bundle ({err})") from None
    return WorldModel.load(bundle, device).vae, bundle


def check_manifest(out: Path, vae_dir: Path) -> None:
    """Records which V encoded ``out``, or refuses to mix latents from another V into it."""
    digest = file_digest(vae_dir / MODEL_FILE)
    path = out / MANIFEST
    if path.is_file():
        saved = load_json(path)
        if saved.get("vae_sha256") != digest:
            raise ValueError(f"{out} holds latents from other V weights ({saved.get('vae')}); "
                             "delete it or pass another --out")  # fmt: skip
    else:
        save_json(path, {"vae": str(vae_dir.resolve()), "vae_sha256": digest})


def encode(args: EncodeArgs) -> Path:
    """Encodes every shard of ``args.episodes`` not yet encoded; returns the latent folder."""
    set_threads(args.threads)
    device = resolve_device(args.device)
    shards = list_episodes(args.episodes)
    if not shards:
        raise ValueError(f"no episode shards in {args.episodes!r}")
    out = Path(args.out) if args.out else default_latent_dir(args.episodes, args.vae)
    vae, vae_dir = load_encoder(args.vae, device)
    with folder_lock(out):
        check_manifest(out, vae_dir)
        remove_stale_temps(out)
        _encode_missing(shards, out, vae, device, args.batch_size)
    print(f"encode: {len(shards)} episodes encoded in {out}")
    return out


def _encode_missing(shards: list[Path], out: Path, vae: ConvVAE, device: torch.device, batch_size: int) -> None:
    todo = [p for p in shards if not (out / p.name).is_file()]
    for path in tqdm(todo, desc="encode", total=len(shards), initial=len(shards) - len(todo)):
        episode = load_episode(path)
        mu, logvar = encode_frames(vae, episode.frames, device, batch_size)
        arrays = {"mu": mu, "logvar": logvar, "actions": episode.actions, "rewards": episode.rewards,
                  "terminated": episode.terminated, "truncated": episode.truncated}  # fmt: skip
        if episode.expert_actions is not None:
            arrays["expert_actions"] = episode.expert_actions
        save_arrays(out / path.name, arrays)


def main(argv: list[str] | None = None) -> None:
    with exit_if_busy():
        encode(parse_args(EncodeArgs, argv, __doc__))


if __name__ == "__main__":
    main()
