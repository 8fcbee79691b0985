"""One rule for turning a ``device`` argument into a torch device, used by every env, stage and agent."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (cuda when available) -> a torch device.

    Asking for an absent GPU or an unknown device is a ValueError naming it.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or auto") from err
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {str(device)!r}: use cpu, cuda, cuda:N or auto")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but torch sees no CUDA GPU; use cpu or auto")
    return resolved
