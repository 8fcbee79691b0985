"""Assemble a trained V, a trained M and real initial latents into a WorldModel folder.

    python -m training.bundle --vae runs/takecover/vae --mdnrnn runs/takecover/mdnrnn \
        --latents data/latents/vae --out runs/takecover/world_model

Dreams start from z sampled from one of ``--num-initial`` stored (mu, logvar) of real first frames: the
first frame of that many episodes of the latent folder (a seeded random choice when there are more).
The folder loads with ``WorldModel.load(out)`` and ``gymnasium.make("dreamgym/...", world_model=out)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dreamgym.checkpoint import load_json
from dreamgym.data import list_episodes, load_arrays
from dreamgym.world_model import WorldModel, WorldModelConfig
from training.cli import parse_args
from training.common import CONFIG_FILE, numpy_rng
from training.mdnrnn import load_mdnrnn
from training.vae import load_vae


@dataclass(frozen=True)
class BundleArgs:
    vae: str = "runs/takecover/vae"
    """V run folder"""
    mdnrnn: str = "runs/takecover/mdnrnn"
    """M run folder"""
    latents: str = "data/latents/vae"
    """latent folder (written by training.encode with this V) giving the initial latents"""
    out: str = "runs/takecover/world_model"
    """bundle folder to write"""
    num_initial: int = 1000
    """initial latents stored (the paper: ~1,000)"""
    seed: int = 0
    """seed of the choice of episodes when the folder has more than --num-initial"""


def initial_latents(latents: str | os.PathLike, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar), each (N, Z): first frames of N = min(count, available) episodes of a latent folder."""
    paths = list_episodes(latents)
    if not paths:
        raise ValueError(f"no latent files in {str(latents)!r}; run `python -m training.encode` first")
    if count < 1:
        raise ValueError(f"--num-initial must be >= 1, got {count}")
    if len(paths) > count:
        paths = [paths[i] for i in sorted(numpy_rng(seed, 6).choice(len(paths), size=count, replace=False))]
    firsts = [load_arrays(p, ("mu", "logvar")) for p in paths]
    mu = torch.stack([torch.from_numpy(f["mu"][0]) for f in firsts])
    logvar = torch.stack([torch.from_numpy(f["logvar"][0]) for f in firsts])
    return mu, logvar


def build_bundle(args: BundleArgs) -> WorldModel:
    """Writes the bundle folder and returns the loaded bundle (the round trip checks what was written)."""
    vae, mdnrnn = load_vae(args.vae), load_mdnrnn(args.mdnrnn)
    game = load_json(Path(args.mdnrnn) / CONFIG_FILE)["provenance"]["game"]
    mu, logvar = initial_latents(args.latents, args.num_initial, args.seed)
    if mu.shape[1] != vae.config.z_size:
        raise ValueError(f"latents in {args.latents} have z size {mu.shape[1]}, V has {vae.config.z_size}")
    config = WorldModelConfig(game, vae.config, mdnrnn.config)
    provenance = {"vae": str(Path(args.vae).resolve()), "mdnrnn": str(Path(args.mdnrnn).resolve()),
                  "latents": str(Path(args.latents).resolve()), "num_initial": len(mu)}  # fmt: skip
    model = WorldModel(config, mu, logvar, provenance)
    model.vae.load_state_dict(vae.state_dict())
    model.mdnrnn.load_state_dict(mdnrnn.state_dict())
    model.save(args.out)
    print(f"bundle: world model written to {args.out} ({len(mu)} initial latents)")
    return WorldModel.load(args.out)


def main(argv: list[str] | None = None) -> None:
    build_bundle(parse_args(BundleArgs, argv, __doc__))


if __name__ == "__main__":
    main()
