"""The WorldModel bundle: V + M + the game they model + the real initial latents dreams start from.

On disk a bundle is a folder with ``config.json`` (architecture, sizes, game, provenance, versions) and
``model.safetensors`` (``vae.*``, ``mdnrnn.*``, ``initial_mu``, ``initial_logvar``, all of the dtype named by
the config's ``provenance.weights_dtype``, float32 when absent). Shipped bundles live in
``dreamgym/pretrained/<name>/`` and load by name. Loading checks the files against the folder's ``SHA256SUMS``
when it has one (shipped bundles do), every config field, and every tensor's shape, dtype and finiteness.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dreamgym.checkpoint import (
    WEIGHT_DTYPES,
    CheckpointError,
    check_number,
    config_from_json,
    load_json,
    load_state_dict,
    load_tensors,
    save_json,
    save_tensors,
    verify_listed,
    versions,
)
from dreamgym.games import GameSpec, get_game
from dreamgym.models.mdnrnn import MDNRNN, MDNRNNConfig
from dreamgym.models.vae import ConvVAE, VAEConfig

ARCHITECTURE = "dreamgym.WorldModel/v1"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class WorldModelConfig:
    game: str
    vae: VAEConfig
    mdnrnn: MDNRNNConfig

    @classmethod
    def for_game(cls, game: str, **mdnrnn_overrides: Any) -> WorldModelConfig:
        """Default (paper) sizes for a game spec; ``mdnrnn_overrides`` replace M config fields."""
        spec = get_game(game)
        mdnrnn = MDNRNNConfig(
            z_size=spec.z_size,
            action_dim=spec.action_dim,
            hidden_size=spec.hidden_size,
            restart_flag=spec.restart_flag,
            reward_head=spec.reward_mode == "predicted",
        )
        return cls(spec.name, VAEConfig(z_size=spec.z_size), dataclasses.replace(mdnrnn, **mdnrnn_overrides))


def provenance_dtype(provenance: dict[str, Any]) -> torch.dtype:
    """The dtype a bundle's weights are stored in, as its provenance records it (float32 when it does not)."""
    return WEIGHT_DTYPES[provenance.get("weights_dtype", "float32")]


@dataclass(frozen=True)
class BundleFile:
    """The fields of a bundle's config.json, checked on load (V's and M's configs are checked on their own)."""

    architecture: str
    game: str
    vae: dict[str, Any]
    mdnrnn: dict[str, Any]
    num_initial_latents: int = 1
    initial_step: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_number("num_initial_latents", self.num_initial_latents, 1, integer=True)
        try:
            get_game(self.game)
        except KeyError as err:
            raise ValueError(f"game {err.args[0]}") from None
        dtype = self.provenance.get("weights_dtype", "float32")
        if dtype not in WEIGHT_DTYPES:
            raise ValueError(f"provenance.weights_dtype must be one of {sorted(WEIGHT_DTYPES)}, got {dtype!r}")

    @property
    def weights_dtype(self) -> torch.dtype:
        return provenance_dtype(self.provenance)

    def world_model_config(self, path: Path) -> WorldModelConfig:
        """V's and M's configs, each field checked (CheckpointError naming ``path`` and the field)."""
        vae = config_from_json(VAEConfig, self.vae, path, "vae")
        return WorldModelConfig(self.game, vae, config_from_json(MDNRNNConfig, self.mdnrnn, path, "mdnrnn"))


def resolve_bundle(name_or_path: str | os.PathLike) -> Path:
    """A folder path, or the name of a shipped bundle in ``dreamgym/pretrained``."""
    path = Path(name_or_path)
    if (path / CONFIG_FILE).is_file():
        return path
    shipped = PRETRAINED_DIR / str(name_or_path)
    if (shipped / CONFIG_FILE).is_file():
        return shipped
    available = sorted(p.name for p in PRETRAINED_DIR.glob("*") if (p / CONFIG_FILE).is_file())
    raise FileNotFoundError(
        f"no world model at {str(name_or_path)!r}: pass world_model= a bundle folder (train one with "
        f"`python -m recipes.pipeline --game <game>`) or the name of a shipped bundle {available}"
    )


class WorldModel(torch.nn.Module):
    """V, M and the initial latents, on one device."""

    initial_mu: torch.Tensor  # (L, Z) buffers: the stored initial latents' means and log-variances
    initial_logvar: torch.Tensor

    def __init__(
        self,
        config: WorldModelConfig,
        initial_mu: torch.Tensor | None = None,
        initial_logvar: torch.Tensor | None = None,
        provenance: dict[str, Any] | None = None,
        initial_step: int = 0,
    ) -> None:
        """``initial_step``: the step of the real episodes whose latents the dreams start from (0: their first
        frames); a dream then lasts the game's step cap minus it, the rest of a real episode."""
        super().__init__()
        cap = get_game(config.game).max_episode_steps
        if isinstance(initial_step, bool) or not isinstance(initial_step, int) or not 0 <= initial_step < cap:
            raise ValueError(
                f"initial_step must be an integer >= 0 and below the game's cap {cap}, got {initial_step!r}"
            )
        if config.vae.z_size != config.mdnrnn.z_size:
            raise ValueError(f"V's z_size {config.vae.z_size} != M's z_size {config.mdnrnn.z_size}")
        self.config = config
        self.vae = ConvVAE(config.vae)
        self.mdnrnn = MDNRNN(config.mdnrnn)
        z = config.vae.z_size
        self.register_buffer("initial_mu", initial_mu if initial_mu is not None else torch.zeros(1, z))
        self.register_buffer("initial_logvar", initial_logvar if initial_logvar is not None else torch.zeros(1, z))
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.initial_step = initial_step

    @property
    def game(self) -> GameSpec:
        return get_game(self.config.game)

    @property
    def device(self) -> torch.device:
        return self.initial_mu.device

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype the weights were stored in (a loaded bundle's; float32 for a model never saved)."""
        return provenance_dtype(self.provenance)

    def save(self, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Writes config.json + model.safetensors (optionally cast, e.g. fp16 for shipping); the config records the
        weights' dtype, which loading checks."""
        folder = Path(folder)
        tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
                   for k, v in self.state_dict().items()}  # fmt: skip
        names = {v: k for k, v in WEIGHT_DTYPES.items()}
        saved_dtype = tensors["initial_mu"].dtype
        if saved_dtype not in names or any(v.dtype != saved_dtype for v in tensors.values()):
            raise ValueError(f"bundle weights must all be one of {sorted(WEIGHT_DTYPES)}; pass dtype= to cast them")
        save_tensors(folder / WEIGHTS_FILE, tensors)
        save_json(
            folder / CONFIG_FILE,
            {
                "architecture": ARCHITECTURE,
                "game": self.config.game,
                "vae": dataclasses.asdict(self.config.vae),
                "mdnrnn": dataclasses.asdict(self.config.mdnrnn),
                "num_initial_latents": int(self.initial_mu.shape[0]),
                "initial_step": self.initial_step,
                "provenance": {**self.provenance, "weights_dtype": names[saved_dtype]},
                "versions": versions(),
            },
        )

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: torch.device | str = "cpu") -> WorldModel:
        """Loads a bundle folder or shipped bundle name; weights are cast to float32 on ``device``.

        Every check (checksums, config fields, tensor shapes, dtypes and values) fails with a CheckpointError.
        """
        folder = resolve_bundle(name_or_path)
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        verify_listed(folder, [config_path, weights_path])
        meta = config_from_json(BundleFile, load_json(config_path, ARCHITECTURE), config_path, "config")
        config = meta.world_model_config(config_path)
        tensors = load_tensors(weights_path, dtype=meta.weights_dtype)
        z, n = config.vae.z_size, meta.num_initial_latents
        try:
            model = cls(config, torch.zeros(n, z), torch.zeros(n, z), meta.provenance, meta.initial_step)
        except ValueError as err:
            raise CheckpointError(f"{config_path}: {err}") from err
        load_state_dict(model, tensors, weights_path)
        return model.to(device).eval()
