"""V (ConvVAE) and M (MDN-RNN)."""

from dreamgym.models.mdnrnn import MDNRNN, MDNOutput, MDNRNNConfig, mixture_nll
from dreamgym.models.vae import ConvVAE, VAEConfig, frames_to_tensor, tensor_to_frames

__all__ = [
    "ConvVAE", "MDNOutput", "MDNRNN", "MDNRNNConfig", "VAEConfig",
    "frames_to_tensor", "mixture_nll", "tensor_to_frames",
]  # fmt: skip
