"""A video-native VQ-VAE (VideoGPT's architecture): 3D convolutions, axial attention, a codebook.

Our own module whose parameter names follow VideoGPT's, so VideoGPT checkpoints (and ports such as
`hpcai-tech/vqvae`) load into it without `trust_remote_code`. The latent is integer codes
(T/ds_t, H/ds_h, W/ds_w); for diffusion the codes become codebook vectors, and diffusion outputs are
snapped back to the nearest code before decoding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from opensora.compression.base import VideoCompressor
from opensora.errors import UserError

DEFAULT_VQVAE = "hpcai-tech/vqvae"
ARCH_KEYS = ("embedding_dim", "n_codes", "n_hiddens", "n_res_layers", "downsample")


def _same_pad(kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    pads = []
    for k, s in zip(reversed(kernel), reversed(stride)):  # F.pad starts from the last dim
        p = k - s
        pads += [p // 2 + p % 2, p // 2]
    return tuple(pads)


class SamePadConv3d(nn.Module):
    """Conv3d with TensorFlow-style "same" padding (input divisible by the stride)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride=1, bias: bool = True):
        super().__init__()
        k, s = (kernel,) * 3, (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.pad = _same_pad(k, s)
        self.conv = nn.Conv3d(cin, cout, k, stride=s, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class SamePadConvTranspose3d(nn.Module):
    """ConvTranspose3d that exactly inverts SamePadConv3d's downsampling."""

    def __init__(self, cin: int, cout: int, kernel: int, stride=1, bias: bool = True):
        super().__init__()
        k, s = (kernel,) * 3, (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.pad = _same_pad(k, s)
        self.convt = nn.ConvTranspose3d(cin, cout, k, stride=s, bias=bias, padding=tuple(x - 1 for x in k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convt(F.pad(x, self.pad))


class AxialAttention(nn.Module):
    """Multi-head attention along one axis of a (B, T, H, W, C) grid."""

    def __init__(self, dim: int, heads: int, axis: int):
        super().__init__()
        self.heads, self.axis = heads, axis
        self.w_qs = nn.Linear(dim, dim, bias=False)
        self.w_ks = nn.Linear(dim, dim, bias=False)
        self.w_vs = nn.Linear(dim, dim, bias=False)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, H, W, C); attend along self.axis (1=T, 2=H, 3=W)
        x_ax = x.movedim(self.axis, -2)  # (B, a, b, L, C)
        lead = x_ax.shape[:-2]
        L, C = x_ax.shape[-2:]
        def heads(t):  # (N, L, C) -> (N, heads, L, d)
            return t.reshape(-1, L, self.heads, C // self.heads).transpose(1, 2)
        q, k, v = (heads(w(x_ax)) for w in (self.w_qs, self.w_ks, self.w_vs))
        o = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, d)
        o = o.transpose(1, 2).reshape(*lead, L, C)
        return self.fc(o).movedim(-2, self.axis)


class AxialBlock(nn.Module):
    """Sum of axial attention over W, H and T (VideoGPT's attention block)."""

    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        self.attn_w = AxialAttention(dim, heads, 3)
        self.attn_h = AxialAttention(dim, heads, 2)
        self.attn_t = AxialAttention(dim, heads, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)  # (B, T, H, W, C)
        x = self.attn_w(x) + self.attn_h(x) + self.attn_t(x)
        return x.movedim(-1, 1)


class AttentionResidualBlock(nn.Module):
    """BN-ReLU-conv3 -> BN-ReLU-conv1 -> BN-ReLU-axial attention, added to the input."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.BatchNorm3d(dim), nn.ReLU(), SamePadConv3d(dim, dim // 2, 3, bias=False),
            nn.BatchNorm3d(dim // 2), nn.ReLU(), SamePadConv3d(dim // 2, dim, 1, bias=False),
            nn.BatchNorm3d(dim), nn.ReLU(), AxialBlock(dim, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """Strided 3D convolutions down to the latent grid, then residual attention blocks."""

    def __init__(self, n_hiddens: int, n_res_layers: int, downsample: tuple[int, int, int]):
        super().__init__()
        times = np.array([int(math.log2(d)) for d in downsample])
        self.convs = nn.ModuleList()
        for i in range(times.max()):
            stride = tuple(2 if d > 0 else 1 for d in times)
            self.convs.append(SamePadConv3d(3 if i == 0 else n_hiddens, n_hiddens, 4, stride=stride))
            times = times - 1
        self.conv_last = SamePadConv3d(n_hiddens, n_hiddens, 3)
        self.res_stack = nn.Sequential(*[AttentionResidualBlock(n_hiddens) for _ in range(n_res_layers)],
                                       nn.BatchNorm3d(n_hiddens), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.res_stack(self.conv_last(x))


class Decoder(nn.Module):
    """Residual attention blocks, then transposed 3D convolutions back to pixels."""

    def __init__(self, n_hiddens: int, n_res_layers: int, upsample: tuple[int, int, int]):
        super().__init__()
        self.res_stack = nn.Sequential(*[AttentionResidualBlock(n_hiddens) for _ in range(n_res_layers)],
                                       nn.BatchNorm3d(n_hiddens), nn.ReLU())
        times = np.array([int(math.log2(d)) for d in upsample])
        n = times.max()
        self.convts = nn.ModuleList()
        for i in range(n):
            stride = tuple(2 if d > 0 else 1 for d in times)
            self.convts.append(SamePadConvTranspose3d(n_hiddens, 3 if i == n - 1 else n_hiddens, 4, stride=stride))
            times = times - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_stack(x)
        for i, convt in enumerate(self.convts):
            x = convt(x)
            if i < len(self.convts) - 1:
                x = F.relu(x)
        return x


class Codebook(nn.Module):
    """The code vectors (EMA-trained in VideoGPT; here used for lookup only)."""

    def __init__(self, n_codes: int, embedding_dim: int):
        super().__init__()
        self.register_buffer("embeddings", torch.randn(n_codes, embedding_dim))
        self.register_buffer("N", torch.zeros(n_codes))
        self.register_buffer("z_avg", self.embeddings.clone())

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, T, H, W) vectors -> (B, T, H, W) indices of the nearest codes."""
        flat = z.movedim(1, -1).reshape(-1, z.shape[1]).float()
        emb = self.embeddings.float()
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ emb.t() + emb.pow(2).sum(1)[None]
        return d.argmin(1).view(z.shape[0], *z.shape[2:])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W) indices -> (B, D, T, H, W) vectors."""
        return F.embedding(codes.long(), self.embeddings).movedim(-1, 1)


class VQVAE(nn.Module):
    """VideoGPT's VQ-VAE; inputs are videos in [-0.5, 0.5], (B, 3, T, H, W)."""

    def __init__(self, embedding_dim: int = 256, n_codes: int = 2048, n_hiddens: int = 240,
                 n_res_layers: int = 4, downsample: tuple[int, int, int] = (2, 4, 4)):
        super().__init__()
        self.config = {"embedding_dim": embedding_dim, "n_codes": n_codes, "n_hiddens": n_hiddens,
                       "n_res_layers": n_res_layers, "downsample": list(downsample)}
        self.encoder = Encoder(n_hiddens, n_res_layers, tuple(downsample))
        self.decoder = Decoder(n_hiddens, n_res_layers, tuple(downsample))
        self.pre_vq_conv = SamePadConv3d(n_hiddens, embedding_dim, 1)
        self.post_vq_conv = SamePadConv3d(embedding_dim, n_hiddens, 1)
        self.codebook = Codebook(n_codes, embedding_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-0.5, 0.5] -> codes (B, T', H', W')."""
        return self.codebook.nearest(self.pre_vq_conv(self.encoder(x)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T', H', W') -> (B, 3, T, H, W) in about [-0.5, 0.5]."""
        return self.decoder(self.post_vq_conv(self.codebook.lookup(codes)))

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json + model.safetensors."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"model_type": "videogpt_vqvae", **self.config}, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, d / "model.safetensors")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> VQVAE:
        """Load from a directory (config.json + safetensors/bin), a VideoGPT .ckpt, or a hub id."""
        p = Path(path)
        if not p.exists():
            from opensora.hub import check_loadable

            check_loadable(str(path), "--vae")
            p = _hub_download(str(path))
        if p.is_file():  # a VideoGPT Lightning checkpoint: hyper_parameters + state_dict
            ckpt = _load_lightning(p)
            args = ckpt.get("hyper_parameters", {})
            args = args.get("args", args)
            config = {k: (getattr(args, k, None) if not isinstance(args, dict) else args.get(k)) for k in ARCH_KEYS}
            state = ckpt["state_dict"]
        else:
            cfg_file = p / "config.json"
            if not cfg_file.exists():
                raise UserError(f"--vae {path}: no config.json; pass a VQ-VAE directory saved by opensora or VideoGPT")
            cfg = json.loads(cfg_file.read_text())
            config = {k: cfg[k] for k in ARCH_KEYS if k in cfg}
            state = _load_state(p)
        missing_cfg = [k for k in ARCH_KEYS if config.get(k) is None]
        if missing_cfg:
            raise UserError(f"--vae {path}: its config lacks {', '.join(missing_cfg)}")
        model = cls(**{k: (tuple(v) if k == "downsample" else v) for k, v in config.items()})
        state = _strip_prefix(state, set(model.state_dict()))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing:
            raise UserError(f"--vae {path}: weights do not match the VideoGPT VQ-VAE layout (missing {missing[:3]} ...)")
        return model.eval()


def _load_lightning(path: Path) -> dict:
    # Lightning checkpoints pickle an argparse.Namespace of hyper-parameters: allow exactly that.
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_state(d: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(d.glob("*.safetensors"))
    if files:
        state = {}
        for f in files:
            state.update(load_file(f))
        return state
    bins = sorted(d.glob("*.bin")) + sorted(d.glob("*.pt")) + sorted(d.glob("*.pth"))
    if not bins:
        raise UserError(f"--vae {d}: no weights (*.safetensors or *.bin) in the directory")
    state = {}
    for f in bins:
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def _strip_prefix(state: dict, wanted: set[str]) -> dict:
    """Drop wrapper prefixes ("model.", "vqvae.", ...) that ports add before VideoGPT's names."""
    for prefix in ("", "model.", "vqvae.", "module.", "model.vqvae."):
        out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if wanted <= set(out) | {k for k in wanted if k.endswith("num_batches_tracked")}:
            return out
    return state


def _hub_download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    except Exception as e:  # offline, unknown repo, ...
        raise UserError(f"--vae {repo_id}: not a local path and the hub download failed ({type(e).__name__}); "
                        "pass a local VQ-VAE directory") from None


class VQVAECompressor(VideoCompressor):
    """Stores int16 codes (T', H', W'); diffusion sees codebook vectors scaled to unit variance."""

    name = "vqvae"
    thw_axes = (0, 1, 2)  # stored codes (T, h, w)
    latent_dtype = "int16"

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu", batch_size: int = 16):
        path = path or DEFAULT_VQVAE
        self.path, self.device = path, torch.device(device)
        self.model = VQVAE.from_pretrained(path).to(self.device)
        self.model.requires_grad_(False)
        self.stride = tuple(self.model.config["downsample"])
        self.latent_channels = self.model.config["embedding_dim"]
        # Codebook vectors are not unit-scale; diffusion wants roughly unit variance.
        self.scale = float(1.0 / self.model.codebook.embeddings.float().std().clamp_min(1e-6))

    def spec(self) -> dict:
        """Name and the VQ-VAE's location."""
        return {"name": self.name, "path": str(self.path)}

    @torch.no_grad()
    def encode(self, videos: list[np.ndarray]) -> list[np.ndarray]:
        """Videos (T, H, W, 3) uint8 -> codes (T', H', W') int16."""
        out = []
        for v in videos:
            x = torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
            x = x.permute(3, 0, 1, 2)[None].float().div(255).sub(0.5)  # (1, 3, T, H, W) in [-0.5, 0.5]
            out.append(self.model.encode(x)[0].to(torch.int16).cpu().numpy())
        return out

    def to_diffusion(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, T', H', W') codes -> (B, D, T', H', W') scaled codebook vectors."""
        return self.model.codebook.lookup(latent.to(self.device)).float() * self.scale

    def from_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """Snap each vector to its nearest code."""
        return self.model.codebook.nearest(x.to(self.device).float() / self.scale).to(torch.int16)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """codes -> uint8 (B, T, H, W, 3)."""
        x = self.model.decode(latent.to(self.device).long())
        return x.float().add(0.5).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()
