"""No compression: the diffusion model works on pixels in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch

from opensora.compression.base import VideoCompressor, float_to_frames, frames_to_float


class RawCompressor(VideoCompressor):
    """Stores uint8 frames (T, H, W, 3) as they are."""

    name = "raw"
    stride = (1, 1, 1)
    latent_channels = 3
    latent_dtype = "uint8"
    thw_axes = (0, 1, 2)  # stored (T, H, W, 3)

    def __init__(self, path: str | None = None, device: str = "cpu", batch_size: int = 16):
        pass  # nothing to load or run: the registry builds every compression with these arguments

    def spec(self) -> dict:
        """Nothing to load: just the name."""
        return {"name": self.name}

    def encode(self, videos: list[np.ndarray]) -> list[np.ndarray]:
        """The frames themselves."""
        return [np.ascontiguousarray(v, dtype=np.uint8) for v in videos]

    def to_diffusion(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) in [-1, 1]."""
        return frames_to_float(latent)

    def from_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, T, H, W, 3) uint8."""
        return float_to_frames(x)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Stored frames are the video."""
        return latent.to(torch.uint8)
