"""A causal 3D video VAE from diffusers (Wan, CogVideoX, LTX-Video, HunyuanVideo): time compressed too.

The class comes from the model's config.json (`_class_name`), loaded with `from_pretrained` (a local
directory or hub id of the VAE, or of a whole diffusers pipeline whose `vae/` holds it; never
remote code). Its compression is
measured, not read from the config: the model is built on the meta device and a probe video is
encoded there (no memory, no weights), which gives the exact strides of any architecture.

These VAEs are causal in time: the first frame is encoded alone and every `st` frames after it
become one latent frame, so a clip of 1 + st*k frames gives 1 + k latent frames. Encoding keeps the
first 1 + st*floor((T-1)/st) frames (at most st-1 dropped from the end) and centre-crops height and
width to multiples of the spatial stride. Stored latents are the posterior means (C, T', h, w) in
the VAE's own units; the diffusion model sees them normalised with the VAE's latents_mean,
latents_std and scaling_factor (as the diffusers pipelines do), and sampling undoes that.

Memory: diffusers' spatial tiling is turned on for frames larger than TILE_ABOVE pixels, and the
VAEs run time causally in chunks (Wan 4 frames, CogVideoX 8 latent frames) with cached context, so
memory grows with the frame size, not the clip's length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from opensora.compression.base import VideoCompressor, float_to_frames
from opensora.errors import UserError

# diffusers' causal video autoencoders this toolkit loads (the class named in config.json).
VIDEO_VAES = ("AutoencoderKLWan", "AutoencoderKLCogVideoX", "AutoencoderKLLTXVideo", "AutoencoderKLHunyuanVideo",
              "AutoencoderKLMochi")
TILE_ABOVE = 256 * 256  # frame pixels above which spatial tiling is turned on


def _vae_dir(path: str) -> tuple[str, str | None]:
    """(path, subfolder): a pipeline directory's `vae/`, or the path itself."""
    local = Path(path).expanduser()
    if local.is_dir() and not (local / "config.json").exists() and (local / "vae" / "config.json").exists():
        return str(local), "vae"
    return str(path), None


class VideoVAECompressor(VideoCompressor):
    """Latents (C, 1 + (T-1)/st, H/ss, W/ss) of a diffusers video VAE; see the module docstring."""

    name = "video-vae"
    thw_axes = (1, 2, 3)  # stored (C, T', h, w)
    latent_dtype = "float16"
    causal = True

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu", batch_size: int = 16):
        if path is None:
            raise UserError("--compression video-vae needs --vae: a diffusers video VAE directory or hub id "
                            "(AutoencoderKLWan, AutoencoderKLCogVideoX, AutoencoderKLLTXVideo, ...)")
        from opensora.hub import check_loadable

        check_loadable(str(path), "--vae")
        self.path, self.device, self.batch_size = str(path), torch.device(device), batch_size
        self._where = _vae_dir(self.path)
        import diffusers

        try:  # any model class reads the raw config.json; the class it names is chosen below
            try:
                config = diffusers.AutoencoderKL.load_config(self._where[0], subfolder=self._where[1])
            except OSError:
                if self._where[1] is not None or Path(self.path).expanduser().exists():
                    raise
                self._where = (self.path, "vae")  # a pipeline's hub id: its VAE is in vae/
                config = diffusers.AutoencoderKL.load_config(self.path, subfolder="vae")
        except (OSError, ValueError) as e:
            raise UserError(f"--vae {path}: cannot read a diffusers config ({str(e).splitlines()[0]}); pass a "
                            "diffusers video VAE directory or hub id") from None
        self.class_name = config.get("_class_name")
        if self.class_name not in VIDEO_VAES:
            raise UserError(f"--vae {path} is a {self.class_name}, not a video VAE; --compression video-vae takes "
                            f"{', '.join(VIDEO_VAES)} (an image VAE is --compression sdvae)")
        self.cls = getattr(diffusers, self.class_name)
        self.config = config
        st, ss, channels = self._probe()
        self.stride, self.latent_channels = (st, ss, ss), channels
        mean, std = config.get("latents_mean"), config.get("latents_std")
        self.mean = torch.tensor(mean if mean else [0.0] * channels).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(std if std else [1.0] * channels).view(1, -1, 1, 1, 1)
        self.factor = float(config.get("scaling_factor") or 1.0)
        self._vae = None

    def _probe(self) -> tuple[int, int, int]:
        """(temporal stride, spatial stride, latent channels), by encoding a probe on the meta device."""
        with torch.device("meta"):
            vae = self.cls.from_config(self.config)
            z = vae.encode(torch.empty(1, 3, 17, 256, 256)).latent_dist.mean  # (1, C, 1 + 16/st, 256/ss, 256/ss)
        return 16 // (z.shape[2] - 1), 256 // z.shape[3], z.shape[1]

    @property
    def vae(self):
        """The autoencoder, loaded on first use (training only needs the latents)."""
        if self._vae is None:
            try:
                vae = self.cls.from_pretrained(self._where[0], subfolder=self._where[1])
            except (OSError, ValueError) as e:
                raise UserError(f"--vae {self.path}: cannot load its weights ({str(e).splitlines()[0]})") from None
            self._vae = vae.to(self.device).eval().requires_grad_(False)
        return self._vae

    def spec(self) -> dict:
        """Name, location, class and the normalisation the diffusion model sees."""
        return {"name": self.name, "path": self.path, "class": self.class_name,
                "latents_mean": self.mean.flatten().tolist(), "latents_std": self.std.flatten().tolist(),
                "scaling_factor": self.factor}

    def crop(self, video: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) -> the first 1 + st*k frames, centre-cropped to multiples of the spatial stride."""
        st, sh, sw = self.stride
        t, h, w = video.shape[:3]
        nt, nh, nw = 1 + (t - 1) // st * st, h - h % sh, w - w % sw
        if min(nh, nw) == 0 or t == 0:
            raise ValueError(f"video of {t}x{h}x{w} (TxHxW) is smaller than the compression stride {self.stride}")
        top, left = (h - nh) // 2, (w - nw) // 2
        return video[:nt, top : top + nh, left : left + nw]

    def latent_thw(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """Latent (T', H', W') of a cropped video: 1 + (T-1)/st latent frames."""
        st, sh, sw = self.stride
        return 1 + (t - 1) // st, h // sh, w // sw

    def frames_for(self, latent_t: int) -> int:
        """Video frames that `latent_t` latent frames decode to."""
        return 1 + (latent_t - 1) * self.stride[0]

    @torch.no_grad()
    def encode(self, videos: list[np.ndarray]) -> list[np.ndarray]:
        """Posterior means (C, T', h, w), one video at a time (tiled when its frames are large)."""
        out = []
        for video in videos:
            vae = self.vae
            if video.shape[1] * video.shape[2] > TILE_ABOVE and hasattr(vae, "enable_tiling"):
                vae.enable_tiling()
            x = torch.from_numpy(np.ascontiguousarray(video)).to(self.device)
            x = x.permute(3, 0, 1, 2).unsqueeze(0).to(vae.dtype).div(127.5).sub(1)  # (1, 3, T, H, W)
            z = vae.encode(x).latent_dist.mean  # (1, C, T', h, w)
            out.append(z[0].float().cpu().numpy().astype(np.float16))
        return out

    def to_diffusion(self, latent: torch.Tensor) -> torch.Tensor:
        """Stored (B, C, T', h, w) -> normalised: (z - mean) * scaling_factor / std."""
        mean, std = self.mean.to(latent.device), self.std.to(latent.device)
        return (latent.float() - mean) * self.factor / std

    def from_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised latents back to the VAE's units."""
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return x.float() * std / self.factor + mean

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, T', h, w) in the VAE's units -> uint8 (B, 1 + st*(T'-1), H, W, 3), one video at a time."""
        vae = self.vae
        videos = []
        for z in latent:
            if z.shape[-1] * z.shape[-2] * self.stride[1] * self.stride[2] > TILE_ABOVE and hasattr(vae, "enable_tiling"):
                vae.enable_tiling()
            videos.append(float_to_frames(vae.decode(z[None].to(self.device, vae.dtype)).sample.float().cpu()))
        return torch.cat(videos)

