"""The eager baseline of benchmarks/train_step.py: VideoDiT (adaLN) written the way the original DiT code is.

Same architecture and parameter names as `opensora.models.dit.VideoDiT` with condition "adaln" (so
it loads the same state dict and computes the same function), but with the original code's
operations: timm's PatchEmbed layout (flatten + transpose, no copy), timm's Attention
(materialised softmax(QK^T)V), and DiT's unfused `x * (1 + scale) + shift` and `x + gate * y`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dit_modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimmAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class TimmMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = TimmAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = TimmMlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(dit_modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(dit_modulate(self.norm2(x), shift_mlp, scale_mlp))


class _Embedder(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        for name, layer in layers:
            self.add_module(name, layer)


class EagerVideoDiT(nn.Module):
    """adaLN video DiT in the original code's style; `pos_embed(grid)` gives the (N, D) positions."""

    def __init__(self, config, pos_embed):
        super().__init__()
        D, C = config.hidden_size, config.in_channels
        self.patch_size, self.in_channels, self.pos_embed = tuple(config.patch_size), C, pos_embed
        self.x_embedder = _Embedder(("proj", nn.Conv3d(C, D, self.patch_size, self.patch_size)))
        self.t_embedder = _Embedder(("linear_1", nn.Linear(256, D)), ("linear_2", nn.Linear(D, D)))
        self.y_embedder = _Embedder(("proj", nn.Sequential(nn.Linear(config.text_dim, D), nn.GELU("tanh"),
                                                           nn.Linear(D, D))))
        self.y_embedder.null_text = nn.Parameter(torch.zeros(config.text_len, config.text_dim))
        self.blocks = nn.ModuleList([DiTBlock(D, config.num_heads, config.mlp_ratio) for _ in range(config.depth)])
        self.final_layer = _Embedder(("norm_final", nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)),
                                     ("linear", nn.Linear(D, math.prod(self.patch_size) * C)),
                                     ("adaLN_modulation", nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))))

    def forward(self, x, t, text):
        B, _, T, H, W = x.shape
        pt, ph, pw = self.patch_size
        grid = (T // pt, H // ph, W // pw)
        x = self.x_embedder.proj(x).flatten(2).transpose(1, 2)  # timm's PatchEmbed: NCTHW -> NLC
        x = x + self.pos_embed(grid, x.device, x.dtype)
        te = timestep_embedding(t, 256).to(x.dtype)
        c = self.t_embedder.linear_2(F.silu(self.t_embedder.linear_1(te)))
        c = c + self.y_embedder.proj(text).mean(1)
        for block in self.blocks:
            x = block(x, c)
        fl = self.final_layer
        shift, scale = fl.adaLN_modulation(c).chunk(2, dim=1)
        x = fl.linear(dit_modulate(fl.norm_final(x), shift, scale))
        x = x.view(B, *grid, pt, ph, pw, self.in_channels).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(B, self.in_channels, T, H, W)


def eager_twin(model) -> EagerVideoDiT:
    """An EagerVideoDiT holding a copy of `model`'s (an adaLN VideoDiT's) weights."""
    twin = EagerVideoDiT(model.config, model.x_embedder.pos_embed)
    missing, unexpected = twin.load_state_dict(model.state_dict(), strict=True)
    assert not missing and not unexpected
    return twin.to(next(model.parameters()).dtype)
