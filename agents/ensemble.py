"""Average several controllers into one: an ensemble that is itself an ordinary controller.

    python -m agents.ensemble --controllers runs/carracing/round_03,runs/carracing/round_04 \
        --out runs/carracing/ensemble

Controllers with one tanh hidden layer, fit to the same teacher (e.g. DAgger's rounds, or fits with other
seeds), err in different states; averaging their pre-tanh outputs cancels part of those errors. The average
of K such controllers is exactly one controller with the K hidden layers side by side:
tanh(mean_k(W_k tanh(H_k obs + c_k) + S_k obs + b_k)) has hidden weights [H_1; ...; H_K], output weights
[W_1, ..., W_K] / K, and the mean skip map and output bias. So the result is saved, scored
(``agents.evaluate``) and shipped like any other controller folder. Linear controllers (CMA-ES's, no hidden
layer) average into the linear controller of their mean weights, whose pre-squash outputs are their mean.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from dreamgym.cli_args import parse_args
from dreamgym.controller import Controller, flatten


@dataclass(frozen=True)
class EnsembleArgs:
    controllers: str
    """comma-separated controller folders, all with a hidden layer and the same observations and actions"""
    out: str
    """folder of the averaged controller"""


def average_controllers(members: list[Controller]) -> Controller:
    """The controller whose pre-tanh outputs are the mean of ``members``' (see the module docstring)."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 controllers, got {len(members)}")
    first = members[0].config
    shape_fields = ("obs_dim", "action_out", "bias", "action_space", "game")
    linear = not first.hidden
    for index, member in enumerate(members):
        c = member.config
        if (not c.hidden) != linear:
            raise ValueError(f"controller {index} is {'linear' if not c.hidden else 'not linear'} and controller 0 "
                             "is not: an ensemble averages linear controllers or hidden-layer ones")  # fmt: skip
        different = [f for f in shape_fields if getattr(c, f) != getattr(first, f)]
        if different:
            raise ValueError(f"controller {index} differs from controller 0 in {', '.join(different)}")
    if linear:  # the mean of linear maps is the linear map of the mean weights
        return Controller(first, np.mean([m.params for m in members], axis=0, dtype=np.float64).astype(np.float32))
    config = dataclasses.replace(
        first, hidden=sum(m.config.hidden for m in members), skip=any(m.config.skip for m in members)
    )
    parts = [{k: torch.from_numpy(v) for k, v in m.tensors().items()} for m in members]
    k = len(members)
    tensors = {
        "hidden.weight": torch.cat([p["hidden.weight"] for p in parts]),
        "weight": torch.cat([p["weight"] for p in parts], dim=1) / k,
    }
    if config.bias:
        tensors["hidden.bias"] = torch.cat([p["hidden.bias"] for p in parts])
        tensors["bias"] = torch.stack([p["bias"] for p in parts]).mean(0)
    if config.skip:
        zeros = torch.zeros(config.action_out, config.obs_dim)
        tensors["skip.weight"] = torch.stack([p.get("skip.weight", zeros) for p in parts]).mean(0)
    return Controller(config, flatten(config, tensors))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(EnsembleArgs, argv, __doc__)
    folders = [part for part in args.controllers.split(",") if part]
    ensemble = average_controllers([Controller.load(folder) for folder in folders])
    ensemble.save(args.out, {"ensemble": {"controllers": folders}})
    print(f"averaged {len(folders)} controllers into hidden {ensemble.config.hidden} "
          f"({ensemble.config.n_params} parameters); "
          f"wrote {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
