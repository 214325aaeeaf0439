"""Spatial-temporal DiT (Latte, Open-Sora 1.0's STDiT): attention factorised into space and time.

Each block attends within a frame (spatial: the S = H'W' tokens of one frame), then across frames
(temporal: one position's T' tokens), then to the text (cross-attention), then an MLP. A block costs
T'S^2 + ST'^2 in attention instead of full 3-D attention's (T'S)^2, which is what makes long clips
trainable. As in Open-Sora's STDiT (and PixArt-alpha), the timestep embedding goes through one shared
`t_block` to six modulation vectors, and each block adds its own learned `scale_shift_table`
(adaLN-single); spatial attention and the MLP are modulated and gated, temporal attention and
cross-attention are plain residuals whose output projections start at zero, so at initialisation the
model is a per-frame image DiT; the final layer starts at zero, so the model's output does too.

Single-device code. Sequence parallelism splits the frames (`seq_in` / `seq_out` see the tokens as
(B, T', S*D)); only the temporal attention needs every frame, so it alone holds an `sp` strategy
(see opensora/parallel/sequence.py).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from opensora.models.dit import (
    CONDITIONINGS,
    Attention,
    CrossAttention,
    Mlp,
    PatchEmbed3D,
    SequenceBoundary,
    TextEmbedder,
    init_shared_weights,
    unpatchify,
)


def frame_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, T, S, D) * (1 + scale) + shift, with shift/scale (B, T or 1, D) broadcast over the frame's tokens."""
    return torch.addcmul(shift.unsqueeze(2), x, 1 + scale.unsqueeze(2))


class STDiTBlock(nn.Module):
    """Spatial attention, temporal attention, cross-attention (when the conditioning asks), MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, cross_attention: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)  # spatial: within a frame
        self.norm_temporal = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(dim, num_heads)  # across frames; the one SP acts on
        self.cross_attn = CrossAttention(dim, num_heads) if cross_attention else None
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if cross_attention else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(self, x, t6, frame_mask, ctx, ctx_mask):
        # x: (B, T, S, D); t6: (B, T or 1, 6, D); frame_mask: (B, T_all) bool or None (padded frames under SP)
        B, T, S, D = x.shape
        mods = (self.scale_shift_table + t6).unbind(2)  # 6 x (B, T or 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        h = frame_modulate(self.norm1(x), shift_msa, scale_msa).reshape(B * T, S, D)
        h = self.attn(h).view(B, T, S, D)  # spatial attention
        x = torch.addcmul(x, gate_msa.unsqueeze(2), h)  # (B, T, S, D)
        xt = x.transpose(1, 2).reshape(B * S, T, D)  # (B*S, T, D): one sequence per position
        key_mask = None if frame_mask is None else frame_mask.repeat_interleave(S, dim=0)  # (B*S, T_all)
        xt = xt + self.temporal_attn(self.norm_temporal(xt), key_mask)
        x = xt.view(B, S, T, D).transpose(1, 2)  # (B, T, S, D)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x).reshape(B, T * S, D), ctx, ctx_mask).view(B, T, S, D)
        h = self.mlp(frame_modulate(self.norm2(x), shift_mlp, scale_mlp))
        return torch.addcmul(x, gate_mlp.unsqueeze(2), h)  # (B, T, S, D)


class STDiTFinalLayer(nn.Module):
    """LayerNorm modulated by the timestep (adaLN-single) + Linear back to patch pixels (zero-initialised)."""

    def __init__(self, dim: int, patch_volume: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_volume * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # x: (B, T, S, D); c: (B, T or 1, D)
        shift, scale = (self.scale_shift_table + c.unsqueeze(2)).unbind(2)  # 2 x (B, T or 1, D)
        return self.linear(frame_modulate(self.norm_final(x), shift, scale))


class STDiT(ModelMixin, ConfigMixin):
    """Spatial-temporal diffusion transformer over video latents (B, C, T, H, W)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        condition: str = "cross-attn",
        text_dim: int = 512,
        text_len: int = 77,
        model_name: str = "STDiT/XL-2",
        pos_embed: str = "sum",
    ):
        super().__init__()
        self.conditioning = CONDITIONINGS.lookup(condition)()
        if not self.conditioning.modulated or self.conditioning.prefix_tokens(text_len):
            raise ValueError(f"condition {condition!r} prepends tokens, which have no frame in a spatial-temporal "
                             "model; use cross-attn or adaln")
        self.patch_size = tuple(patch_size)
        self.gradient_checkpointing = False
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size, pos_embed)
        self.t_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.t_embedder = TimestepEmbedding(256, hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.y_embedder = TextEmbedder(text_dim, text_len, hidden_size)
        self.seq_in, self.seq_out = SequenceBoundary(), SequenceBoundary()
        self.blocks = nn.ModuleList([STDiTBlock(hidden_size, num_heads, mlp_ratio, self.conditioning.cross_attention)
                                     for _ in range(depth)])
        self.final_layer = STDiTFinalLayer(hidden_size, int(np.prod(self.patch_size)), in_channels)
        self.initialize_weights()

    def sequence_attentions(self) -> list[Attention]:
        """The self-attentions that see the whole (split) sequence: the temporal ones."""
        return [b.temporal_attn for b in self.blocks]

    def initialize_weights(self) -> None:
        """DiT's initialisation; temporal and cross-attention outputs and the final layer start at zero."""
        init_shared_weights(self)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        for block in self.blocks:  # a per-frame image DiT at first: time and text enter through zero projections
            nn.init.zeros_(block.temporal_attn.proj.weight)
            nn.init.zeros_(block.temporal_attn.proj.bias)
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        nn.init.zeros_(self.final_layer.linear.weight)  # zero-out output layers
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, T', S, pt*ph*pw*C) -> (B, C, T, H, W)."""
        B = x.shape[0]
        pt, ph, pw = self.patch_size
        nt, nh, nw = grid
        C = self.config.in_channels
        x = x.reshape(B, nt, nh, nw, pt, ph, pw, C).permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, nt, pt, nh, ph, nw, pw)
        return x.reshape(B, C, nt * pt, nh * ph, nw * pw)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict noise (or v, or velocity) for latents x (B, C, T, H, W) at `timestep` given text (B, S, Dt).

        `timestep` is (B,), or (B, T') for one timestep per latent frame group (frames given clean
        carry timestep 0). text_mask (B, S) marks real text tokens; drop_text (B,) swaps in the null text.
        """
        B, _, T, H, W = x.shape
        pt, ph, pw = self.patch_size
        if T % pt or H % ph or W % pw:
            raise ValueError(f"latent {T}x{H}x{W} is not divisible by the patch size {self.patch_size}")
        grid = (T // pt, H // ph, W // pw)
        nt, S = grid[0], grid[1] * grid[2]
        tokens = self.x_embedder(x)  # (B, T'S, D) in (t, h, w) order, with space and time positions
        D = tokens.shape[-1]
        t = timestep.reshape(B, -1) if timestep.dim() > 0 else timestep.reshape(1, 1).expand(B, 1)
        if t.shape[1] not in (1, nt):
            raise ValueError(f"timestep of shape {tuple(timestep.shape)}: one per sample, or one per each of the {nt} "
                             "latent frames")
        t_emb = self.t_embedder(self.t_proj(t.flatten()).to(tokens.dtype)).view(B, t.shape[1], D)  # (B, Tt, D)
        ctx, ctx_mask = self.y_embedder(text.to(tokens.dtype), text_mask, drop_text)  # (B, S_text, D)
        c = torch.stack([self.conditioning.global_embedding(t_emb[:, i], ctx, ctx_mask)
                         for i in range(t_emb.shape[1])], dim=1)  # (B, Tt, D)
        t6 = self.t_block(c).view(B, -1, 6, D)  # (B, Tt, 6, D)
        seq, frame_mask = self.seq_in(tokens.view(B, nt, S * D))  # sequence parallelism may split frames here
        n_local = seq.shape[1]
        if t6.shape[1] > 1:  # per-frame modulation follows the split
            t6, _ = self.seq_in(t6.reshape(B, nt, 6 * D))
            c, _ = self.seq_in(c)
            t6 = t6.view(B, n_local, 6, D)
        x_tokens = seq.view(B, n_local, S, D)
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x_tokens = self._gradient_checkpointing_func(block, x_tokens, t6, frame_mask, ctx, ctx_mask)
            else:
                x_tokens = block(x_tokens, t6, frame_mask, ctx, ctx_mask)  # (B, T'_local, S, D)
        out = self.final_layer(x_tokens, c)  # (B, T'_local, S, P*C)
        out, _ = self.seq_out(out.reshape(B, n_local, -1), length=nt)  # ... and gathered here
        return unpatchify(out.reshape(B, nt * S, -1), grid, self.patch_size, self.config.in_channels)  # (B, C, T, H, W)

