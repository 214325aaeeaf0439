"""An image VAE (diffusers AutoencoderKL, e.g. SD-VAE) applied frame by frame."""

from __future__ import annotations

import numpy as np
import torch

from opensora.compression.base import VideoCompressor, float_to_frames
from opensora.errors import UserError

DEFAULT_SDVAE = "stabilityai/sd-vae-ft-ema"


def load_autoencoder_kl(path: str):
    """AutoencoderKL.from_pretrained on a hub id or a local directory, with a clear error."""
    from diffusers import AutoencoderKL

    from opensora.hub import check_loadable

    check_loadable(str(path), "--vae")
    try:
        return AutoencoderKL.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(
            f"--vae {path}: cannot load an AutoencoderKL ({str(e).splitlines()[0]}); "
            "pass a local diffusers VAE directory or a reachable hub id"
        ) from None


class SDVAECompressor(VideoCompressor):
    """Latents (C, T, H/8, W/8) scaled by the VAE's scaling factor; frames encoded in batches."""

    name = "sdvae"
    thw_axes = (1, 2, 3)  # stored (C, T, h, w)
    latent_dtype = "float32"

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu", batch_size: int = 16):
        path = path or DEFAULT_SDVAE
        from diffusers import AutoencoderKL

        self.path, self.device, self.batch_size = path, torch.device(device), batch_size
        try:  # the config alone tells the stride and channels; the weights load on first use
            config = AutoencoderKL.load_config(path)
        except (OSError, ValueError) as e:
            raise UserError(f"--vae {path}: cannot load an AutoencoderKL ({str(e).splitlines()[0]}); "
                            "pass a local diffusers VAE directory or a reachable hub id") from None
        f = 2 ** (len(config["block_out_channels"]) - 1)
        self.stride = (1, f, f)
        self.latent_channels = int(config.get("latent_channels", 4))
        self.scale = float(config.get("scaling_factor", 0.18215))
        self._vae = None

    @property
    def vae(self):
        """The AutoencoderKL, loaded on first use (training only needs the latents)."""
        if self._vae is None:
            self._vae = load_autoencoder_kl(self.path).to(self.device).eval()
            self._vae.requires_grad_(False)
        return self._vae

    def spec(self) -> dict:
        """Name and the VAE's location."""
        return {"name": self.name, "path": str(self.path)}

    @torch.no_grad()
    def encode(self, videos: list[np.ndarray]) -> list[np.ndarray]:
        """Encode each video's frames in batches, take the posterior mean, scale: (C, T, h, w)."""
        lat = []
        for video in videos:
            outs = []
            for i in range(0, len(video), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(video[i : i + self.batch_size])).to(self.device)
                x = x.permute(0, 3, 1, 2).to(self.vae.dtype).div(127.5).sub(1)  # (N, 3, H, W)
                z = self.vae.encode(x).latent_dist.mode() * self.scale  # (N, C, h, w)
                outs.append(z.float().cpu())
            lat.append(torch.cat(outs).permute(1, 0, 2, 3).contiguous().numpy())  # (C, T, h, w)
        return lat

    def to_diffusion(self, latent: torch.Tensor) -> torch.Tensor:
        """Stored latents are already the diffusion space."""
        return latent.float()

    def from_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """Identity."""
        return x

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) -> uint8 (B, T, H, W, 3), frames decoded in batches."""
        b, c, t, h, w = latent.shape
        z = latent.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).to(self.device, self.vae.dtype) / self.scale
        outs = [self.vae.decode(z[i : i + self.batch_size]).sample.float().cpu() for i in range(0, len(z), self.batch_size)]
        x = torch.cat(outs)  # (B*T, 3, H, W)
        x = x.reshape(b, t, 3, x.shape[-2], x.shape[-1]).permute(0, 2, 1, 3, 4)
        return float_to_frames(x)
