"""Safe weight files: safetensors tensors + a JSON config beside them, written atomically.

Loading never unpickles anything. Every failure (missing file, truncated or foreign file, a checkpoint
for another architecture, missing or misshapen tensors) raises :class:`CheckpointError` naming the file
and the mismatch.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dreamgym.data import atomic_write


class CheckpointError(ValueError):
    """A weight or config file is missing, corrupt, or for another architecture."""


def versions() -> dict[str, str]:
    """Package versions recorded in every saved config (provenance)."""
    import gymnasium
    import numpy

    import dreamgym

    return {
        "dreamgym": dreamgym.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def save_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    atomic_write(path, write)


def load_json(path: str | os.PathLike, architecture: str | None = None) -> dict[str, Any]:
    """Reads a JSON config; with ``architecture``, checks its ``architecture`` field matches."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: config file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if architecture is not None and data.get("architecture") != architecture:
        raise CheckpointError(
            f"{path}: checkpoint is for architecture {data.get('architecture')!r}, expected {architecture!r}"
        )
    return data


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> None:
    """Atomically writes contiguous CPU copies of ``tensors`` as safetensors."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, tmp))


def load_tensors(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({err})") from err


def load_state_dict(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Loads ``tensors`` into ``module``, converting dtype; any missing/extra/misshapen key is an error."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]  # fmt: skip
    if missing or extra or shapes:
        raise CheckpointError(
            f"{path}: weights do not match the configured architecture"
            + (f"; missing {missing[:5]}" if missing else "")
            + (f"; unexpected {extra[:5]}" if extra else "")
            + (f"; shape mismatch {shapes[:5]}" if shapes else "")
        )
    module.load_state_dict({k: tensors[k].to(v.dtype) for k, v in expected.items()})
