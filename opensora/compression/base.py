"""The interface every video compression implements: video <-> stored latent <-> diffusion tensor."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from opensora.errors import UserError


class VideoCompressor(ABC):
    """Turns uint8 videos (T, H, W, 3) into stored latents and back.

    A stored latent is what the dataset keeps (uint8 pixels, VQ codes, VAE latents); the diffusion
    tensor (C, T', H', W') float is what the DiT sees. `stride` is (t, h, w) per latent cell.
    """

    name: str = ""
    stride: tuple[int, int, int] = (1, 1, 1)
    latent_channels: int = 3
    latent_dtype: str = "float32"
    thw_axes: tuple[int, int, int] = (0, 1, 2)  # which axes of a stored latent are frames, height, width
    causal: bool = False  # True: 1 + stride*k frames make 1 + k latent frames (the first frame alone)

    @abstractmethod
    def spec(self) -> dict:
        """What to record so the same compression can be rebuilt (name, weights path, ...)."""

    def crop(self, video: np.ndarray) -> np.ndarray:
        """Crop (T, H, W, 3) to multiples of the stride (centre crop in space, keep the start in time)."""
        st, sh, sw = self.stride
        t, h, w = video.shape[:3]
        nt, nh, nw = t - t % st, h - h % sh, w - w % sw
        if nt == 0 and t == 1:
            raise ValueError(f"one frame (an image) is shorter than {self.name}'s {st}-frame temporal stride; encode "
                             "images with raw, sdvae or video-vae")
        if min(nt, nh, nw) == 0:
            raise ValueError(f"video of {t}x{h}x{w} (TxHxW) is smaller than the compression stride {self.stride}")
        top, left = (h - nh) // 2, (w - nw) // 2
        return video[:nt, top : top + nh, left : left + nw]

    def latent_thw(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """Latent (T', H', W') of a video (T, H, W) already cropped to the stride."""
        st, sh, sw = self.stride
        return t // st, h // sh, w // sw

    @abstractmethod
    def encode(self, videos: list[np.ndarray]) -> list[np.ndarray]:
        """Stored latents for cropped uint8 videos (each (T, H, W, 3))."""

    @abstractmethod
    def to_diffusion(self, latent: torch.Tensor) -> torch.Tensor:
        """Stored latents (B, *stored) to diffusion tensors (B, C, T', H', W') float."""

    @abstractmethod
    def from_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """Diffusion tensors (B, C, T', H', W') back to stored latents."""

    @abstractmethod
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Stored latents (B, *stored) to uint8 videos (B, T, H, W, 3)."""

    def decode_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """Diffusion tensors straight to uint8 videos."""
        return self.decode(self.from_diffusion(x))


def check_multiples(values, stride, option_names, what: str) -> None:
    """A UserError for every value that is not a positive multiple of its stride, suggesting the nearest."""
    problems = []
    for value, s, opt in zip(values, stride, option_names):
        if value <= 0 or value % s:
            lo, hi = max(s, value // s * s), (value // s + 1) * s
            near = f"{lo} or {hi}" if lo != hi else str(hi)
            problems.append(f"{opt} {value} is not a multiple of {s} for {what} (try {near})")
    if problems:
        raise UserError("; ".join(problems))


def frames_to_float(video: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) to float (B, 3, T, H, W) in [-1, 1]."""
    return video.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def float_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, T, H, W) in [-1, 1] to uint8 (B, T, H, W, 3)."""
    return x.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()
