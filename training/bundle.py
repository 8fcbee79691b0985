"""Assemble a trained V, a trained M and real initial latents into a WorldModel folder.

    python -m training.bundle --vae runs/takecover/vae --mdnrnn runs/takecover/mdnrnn \
        --latents data/latents/vae --out runs/takecover/world_model

Dreams start from z sampled from one of ``--num-initial`` stored (mu, logvar) of real frames: frame
``--initial-step`` (default 0, the first) of that many episodes of the latent folder (a seeded random choice
when there are more). CarRacing's first ~50 frames are a zoom-in animation that M dreams badly (most dreams
lost the road there), so its bundles start at frame 60 and dream the remaining 940 steps.
The folder loads with ``WorldModel.load(out)`` and ``gymnasium.make("dreamgym/...", world_model=out)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dreamgym.checkpoint import load_json
from dreamgym.cli_args import Count, NonNegative, parse_args
from dreamgym.data import list_episodes, load_arrays
from dreamgym.runs import Seeded, numpy_rng
from dreamgym.world_model import WorldModel, WorldModelConfig

from .common import CONFIG_FILE
from .encode import load_encoder
from .mdnrnn import load_mdnrnn


@dataclass(frozen=True)
class BundleArgs(Seeded):
    """``--seed`` seeds the choice of episodes when the folder has more than ``--num-initial``."""

    vae: str = "runs/takecover/vae"
    """V run folder, or a world-model bundle folder or shipped name whose V is kept (a new M for an old V)"""
    mdnrnn: str = "runs/takecover/mdnrnn"
    """M run folder"""
    latents: str = "data/latents/vae"
    """latent folder (written by training.encode with this V) giving the initial latents"""
    out: str = "runs/takecover/world_model"
    """bundle folder to write"""
    num_initial: Count = 1000
    """initial latents stored (the paper: ~1,000)"""
    initial_step: NonNegative = 0
    """frame of each episode the dreams start from (episodes that end before it are not used)"""


def initial_latents(latents: str | os.PathLike, count: int, seed: int,
                    step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(mu, logvar), each (N, Z): frame ``step`` of N = min(count, available) episodes of a latent folder
    (those longer than ``step``)."""
    paths = list_episodes(latents)
    if not paths:
        raise ValueError(f"no latent files in {str(latents)!r}; run `python -m training.encode` first")
    if count < 1 or step < 0:
        raise ValueError(f"--num-initial must be >= 1 and --initial-step >= 0, got {count} and {step}")
    if step > 0:
        paths = [p for p in paths if len(load_arrays(p, ("rewards",))["rewards"]) > step]
    if not paths:
        raise ValueError(f"no episode in {str(latents)!r} is longer than --initial-step {step}")
    if len(paths) > count:
        paths = [paths[i] for i in sorted(numpy_rng(seed, 6).choice(len(paths), size=count, replace=False))]
    episodes = [load_arrays(p, ("mu", "logvar")) for p in paths]
    mu = torch.stack([torch.from_numpy(e["mu"][step]) for e in episodes])
    logvar = torch.stack([torch.from_numpy(e["logvar"][step]) for e in episodes])
    return mu, logvar


def build_bundle(args: BundleArgs) -> WorldModel:
    """Writes the bundle folder and returns the loaded bundle (the round trip checks what was written)."""
    (vae, vae_dir), mdnrnn = load_encoder(args.vae, torch.device("cpu")), load_mdnrnn(args.mdnrnn)
    game = load_json(Path(args.mdnrnn) / CONFIG_FILE)["provenance"]["game"]
    mu, logvar = initial_latents(args.latents, args.num_initial, args.seed, args.initial_step)
    if mu.shape[1] != vae.config.z_size:
        raise ValueError(f"latents in {args.latents} have z size {mu.shape[1]}, V has {vae.config.z_size}")
    config = WorldModelConfig(game, vae.config, mdnrnn.config)
    provenance = {"vae": str(vae_dir.resolve()), "mdnrnn": str(Path(args.mdnrnn).resolve()),
                  "latents": str(Path(args.latents).resolve()), "num_initial": len(mu)}  # fmt: skip
    model = WorldModel(config, mu, logvar, provenance, args.initial_step)
    model.vae.load_state_dict(vae.state_dict())
    model.mdnrnn.load_state_dict(mdnrnn.state_dict())
    model.save(args.out)
    print(f"bundle: world model written to {args.out} ({len(mu)} initial latents, frame {args.initial_step})")
    return WorldModel.load(args.out)


def main(argv: list[str] | None = None) -> None:
    build_bundle(parse_args(BundleArgs, argv, __doc__))


if __name__ == "__main__":
    main()
