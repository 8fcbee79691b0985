"""V: the paper's convolutional VAE, 64x64x3 frames <-> latent z."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dreamgym.checkpoint import check_number


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of V. ``kl_tolerance`` floors the KL term at ``kl_tolerance * z_size`` ("free bits")."""

    z_size: int = 32
    kl_tolerance: float = 0.5

    def __post_init__(self) -> None:
        check_number("z_size", self.z_size, 1, integer=True)
        check_number("kl_tolerance", self.kl_tolerance, 0)


def frames_to_tensor(frames: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 64, 64, 3) uint8 frames -> (B, 3, 64, 64) float32 in [0, 1] on ``device``."""
    if isinstance(frames, np.ndarray) and not frames.flags.writeable:
        frames = frames.copy()  # torch warns on (and may not share) read-only buffers such as PIL's
    x = torch.as_tensor(frames).to(device)
    return x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """(B, 3, 64, 64) floats in [0, 1] -> (B, 64, 64, 3) uint8 numpy frames."""
    return x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class ConvVAE(nn.Module):
    """Encoder conv 32-64-128-256 (k4 s2) -> (mu, logvar); decoder dense 1024 -> deconv 128-64-32-3."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 128, 4, stride=2), nn.ReLU(),
            nn.Conv2d(128, 256, 4, stride=2), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        self.fc_mu = nn.Linear(1024, config.z_size)
        self.fc_logvar = nn.Linear(1024, config.z_size)
        self.fc_decode = nn.Linear(config.z_size, 1024)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(1024, 128, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 6, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 6, stride=2), nn.Sigmoid(),
        )  # fmt: skip

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 64, 64) in [0, 1] -> mu, logvar, each (B, Z)."""
        features = self.encoder(x)
        return self.fc_mu(features), self.fc_logvar(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Z) -> (B, 3, 64, 64) in [0, 1]."""
        return self.decoder(self.fc_decode(z).view(-1, 1024, 1, 1))

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction of x through a sampled z, plus (mu, logvar).

        z = mu + sigma * ``noise`` (B, Z) standard normals, drawn from ``generator`` when not given.
        """
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype) if noise is None else noise
        return self.decode(mu + eps * torch.exp(0.5 * logvar)), mu, logvar

    def loss(
        self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed squared pixel error + KL floored at ``kl_tolerance * Z``, both averaged over the batch."""
        recon, mu, logvar = self(x, generator, noise)
        r_loss = (recon - x).pow(2).sum(dim=(1, 2, 3)).mean()
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
        kl_loss = kl.clamp(min=self.config.kl_tolerance * self.config.z_size).mean()
        loss = r_loss + kl_loss
        return loss, {"loss": loss.item(), "recon": r_loss.item(), "kl": kl.mean().item()}

    @torch.no_grad()
    def reconstruction_mse(self, x: torch.Tensor) -> float:
        """Mean squared error per pixel of decode(mu) against x."""
        return F.mse_loss(self.decode(self.encode(x)[0]), x).item()
