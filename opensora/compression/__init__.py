"""Video compressions behind one interface (`base.VideoCompressor`): raw pixels, a video VQ-VAE, an image
VAE per frame, a causal 3D video VAE.

`COMPRESSIONS` is the registry; a new compression is a `VideoCompressor` subclass and one entry here.
Every class is built as `cls(path, device=..., batch_size=...)`; `path` None means its default weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opensora.registry import Registry

if TYPE_CHECKING:
    from opensora.compression.base import VideoCompressor

COMPRESSIONS: Registry[type[VideoCompressor]] = Registry("compression", "--compression")
COMPRESSIONS.add("raw", "opensora.compression.raw:RawCompressor", "pixels as they are (uint8)")
COMPRESSIONS.add("vqvae", "opensora.compression.vqvae:VQVAECompressor", "VideoGPT's video VQ-VAE: codes, 4x8x8")
COMPRESSIONS.add("sdvae", "opensora.compression.sdvae:SDVAECompressor", "Stable Diffusion's image VAE, per frame: 1x8x8")
COMPRESSIONS.add("video-vae", "opensora.compression.videovae:VideoVAECompressor",
                 "a diffusers causal 3D video VAE (Wan, CogVideoX, LTX-Video, ...): time compressed too")


def load_compressor(name: str, path: str | None = None, device: str = "cpu", batch_size: int = 16) -> VideoCompressor:
    """Build the compression `name`, loading weights from `path` (None: its default) if it has any."""
    return COMPRESSIONS.lookup(name)(path, device=device, batch_size=batch_size)


def compressor_from_spec(spec: dict, device: str = "cpu") -> VideoCompressor:
    """Rebuild the compression recorded in a dataset or checkpoint."""
    return load_compressor(spec["name"], spec.get("path"), device=device)
