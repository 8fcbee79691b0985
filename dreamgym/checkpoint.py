"""Safe weight files: safetensors tensors + a JSON config beside them, written atomically.

Loading never unpickles anything. Every failure (missing file, truncated or foreign file, a checkpoint
for another architecture, a config field of the wrong type or out of range, missing or misshapen tensors,
a tensor of another dtype or with NaN/inf, a file differing from the folder's ``SHA256SUMS``) raises
:class:`CheckpointError` naming the file and the mismatch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import platform
import string
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dreamgym.data import atomic_write

CHECKSUM_FILE = "SHA256SUMS"
WEIGHT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
"""Weight dtypes a saved file may hold, by the name its config records."""

C = TypeVar("C")


class CheckpointError(ValueError):
    """A weight or config file is missing, corrupt, or for another architecture."""


def check_number(name: str, value: object, minimum: float, integer: bool = False, exclusive: bool = False) -> None:
    """Raises ValueError naming ``name`` unless ``value`` is a finite number (an integer if ``integer``) at least
    ``minimum`` (above it if ``exclusive``): the range checks of the config dataclasses."""
    kind = numbers.Integral if integer else numbers.Real
    if (
        not isinstance(value, kind)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < minimum
        or (exclusive and value == minimum)
    ):
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {what} {'>' if exclusive else '>='} {minimum}, got {value!r}")


def json_type_matches(value: object, hint: Any) -> bool:
    """Whether a JSON value fits a dataclass field annotation (int, float, bool, str, None, dict, list, unions)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(json_type_matches(value, h) for h in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, typing.get_origin(hint) or hint)


def config_from_json(cls: type[C], data: object, path: str | os.PathLike, field: str) -> C:
    """The dataclass ``cls`` from the JSON object ``data`` (``field`` of the config file ``path``).

    Unknown or missing fields, values of the wrong type (checked against ``cls``'s annotations) and values its
    ``__post_init__`` rejects (a ValueError whose message starts with the field's name) each raise one
    CheckpointError naming the file, the field and the problem, instead of an error deep inside torch later.
    """
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {field} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]  # fmt: skip
    if unknown or missing:
        raise CheckpointError(f"{path}: {field} has " + "; ".join(
            ([f"unknown fields {unknown}"] if unknown else []) + ([f"no {missing}"] if missing else [])))  # fmt: skip
    for name, value in data.items():
        if not json_type_matches(value, hints[name]):
            expected = getattr(hints[name], "__name__", hints[name])  # int, dict, str | None
            raise CheckpointError(f"{path}: {field}.{name} must be of type {expected}, got {value!r}")
    try:
        return cls(**data)
    except ValueError as err:
        raise CheckpointError(f"{path}: {field}.{err}") from err


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """``sha256sum`` lines (``<hex digest>  <relative path>``) -> {path: digest}; CheckpointError when malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: not a text checksum file ({err})") from err
    recorded = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if line and (not sep or not name or len(digest) != 64 or not set(digest) <= set(string.hexdigits)):
            raise CheckpointError(f"{path}: line {number} is not '<sha256 hex digest>  <file>': {line[:80]!r}")
        if line:
            recorded[name] = digest.lower()
    return recorded


def verify_listed(folder: str | os.PathLike, files: Iterable[str | os.PathLike]) -> None:
    """When ``folder`` has a ``SHA256SUMS``, each of ``files`` (below ``folder``) must be listed there and match.

    Catches flipped bytes that leave a file loadable. Files that do not exist are left to their loader's error.
    """
    folder = Path(folder)
    sums = folder / CHECKSUM_FILE
    if not sums.is_file():
        return
    recorded = read_checksums(sums)
    for path in map(Path, files):
        if not path.is_file():
            continue
        name = path.relative_to(folder).as_posix()
        if name not in recorded:
            raise CheckpointError(f"{path}: not listed in {sums}")
        if sha256(path) != recorded[name]:
            raise CheckpointError(f"{path}: sha256 differs from the one in {sums} (corrupt or modified file)")


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
    """Reads a JSON object; with ``architecture``, checks its ``architecture`` field matches."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: config file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got a JSON {type(data).__name__}")
    if architecture is not None and data.get("architecture") != architecture:
        raise CheckpointError(
            f"{path}: checkpoint is for architecture {data.get('architecture')!r}, expected {architecture!r}"
        )
    return data


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> None:
    """Atomically writes contiguous CPU copies of ``tensors`` as safetensors."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, tmp))


def load_tensors(path: str | os.PathLike, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Reads a safetensors file; every floating tensor must be finite and, with ``dtype``, every tensor of it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({err})") from err
    for name, tensor in tensors.items():
        if dtype is not None and tensor.dtype != dtype:
            raise CheckpointError(f"{path}: tensor {name!r} is {tensor.dtype}, the config says {dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values")
    return tensors


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
