"""Video compressions behind one interface: raw pixels, a video VQ-VAE, an image VAE."""

from __future__ import annotations

from opensora.compression.base import VideoCompressor
from opensora.errors import UserError

COMPRESSIONS = ("raw", "vqvae", "sdvae")
# Which axes of a stored latent are frames, height and width (raw: T,H,W,3; vqvae: T,h,w; sdvae: C,T,h,w).
THW_AXES = {"raw": (0, 1, 2), "vqvae": (0, 1, 2), "sdvae": (1, 2, 3)}


def load_compressor(name: str, path: str | None = None, device: str = "cpu", batch_size: int = 16) -> VideoCompressor:
    """Build the compression `name` (raw | vqvae | sdvae), loading weights from `path` if it has any."""
    if name == "raw":
        from opensora.compression.raw import RawCompressor

        return RawCompressor()
    if name == "sdvae":
        from opensora.compression.sdvae import DEFAULT_SDVAE, SDVAECompressor

        return SDVAECompressor(path or DEFAULT_SDVAE, device=device, batch_size=batch_size)
    if name == "vqvae":
        from opensora.compression.vqvae import DEFAULT_VQVAE, VQVAECompressor

        return VQVAECompressor(path or DEFAULT_VQVAE, device=device, batch_size=batch_size)
    raise UserError(f"--compression {name!r} is not one of {', '.join(COMPRESSIONS)}")


def compressor_from_spec(spec: dict, device: str = "cpu") -> VideoCompressor:
    """Rebuild the compression recorded in a dataset or checkpoint."""
    return load_compressor(spec["name"], spec.get("path"), device=device)
