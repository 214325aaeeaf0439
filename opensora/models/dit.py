"""Video DiT: patchify (T, H, W) latents, transformer blocks with one of three conditionings, unpatchify.

Single-device model code. Parallelism attaches from outside (opensora/parallel): `seq_in`/`seq_out`
mark where the token sequence may be split and gathered, and each attention's `sp` slot may hold a
sequence-parallel strategy; with neither set, this is plain DiT.

How text enters the model (`condition`) is one of the `Conditioning` classes registered in
`CONDITIONINGS` below; a new conditioning is one more registered class.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import (
    TimestepEmbedding,
    Timesteps,
    get_1d_sincos_pos_embed_from_grid,
    get_2d_sincos_pos_embed_from_grid,
    get_3d_sincos_pos_embed,
)
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from opensora.registry import Registry

POS_EMBEDS = ("sum", "concat")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, broadcast over tokens (one fused pass over x)."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """adaLN-zero's residual x + gate * y, broadcast over tokens (one fused pass)."""
    return torch.addcmul(x, gate.unsqueeze(1), y)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, H, Lq, Dh) attention through SDPA (flash / memory-efficient kernels on GPU).

    key_mask: (B, Lk) bool, True where a key may be attended to.
    """
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head self-attention; `sp` may hold a sequence-parallel strategy (Ulysses, FastSeq)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sp = None

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.sp is not None:
            return self.sp.attention(self, x, key_mask)
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, Dh)
        o = sdpa_attention(q, k, v, key_mask)  # (B, H, N, Dh)
        return self.proj(o.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


class CrossAttention(nn.Module):
    """Video tokens attend to text tokens (text is never split by sequence parallelism)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor | None) -> torch.Tensor:
        B, N, D = x.shape
        S = ctx.shape[1]
        q = self.q(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, Dh)
        k, v = self.kv(ctx).view(B, S, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 2 x (B, H, S, Dh)
        o = sdpa_attention(q, k, v, ctx_mask)  # (B, H, N, Dh)
        return self.proj(o.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    """Linear -> GELU(tanh) -> Linear, as in DiT."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Conditioning:
    """How the text reaches the blocks; the base class is timestep-only adaLN-zero."""

    modulated = True  # blocks are adaLN-zero modulated by the global embedding c
    cross_attention = False  # blocks attend to the text tokens

    def global_embedding(self, t_emb: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor | None) -> torch.Tensor:
        """c (B, D) that modulates every block, from the timestep (B, D) and text (B, S, D)."""
        return t_emb

    @staticmethod
    def prefix_tokens(text_len: int) -> int:
        """How many tokens `prefix` prepends (for the FLOP model)."""
        return 0

    def prefix(self, tokens, t_emb, ctx, ctx_mask):
        """Tokens to prepend to the video tokens: (tokens, key_mask or None, number prepended)."""
        return tokens, None, 0


CONDITIONINGS: Registry[type[Conditioning]] = Registry("conditioning", "--condition")


@CONDITIONINGS.register("adaln", "adaLN-zero blocks modulated by timestep + pooled text (DiT's best variant)")
class AdaLNConditioning(Conditioning):
    def global_embedding(self, t_emb, ctx, ctx_mask):
        if ctx_mask is None:
            pooled = ctx.mean(1)
        else:
            m = ctx_mask.unsqueeze(-1).to(ctx.dtype)
            pooled = (ctx * m).sum(1) / m.sum(1).clamp_min(1)  # mean over real text tokens
        return t_emb + pooled  # (B, D)


@CONDITIONINGS.register("cross-attn", "adaLN-zero on the timestep, plus cross-attention to the text in every block")
class CrossAttnConditioning(Conditioning):
    cross_attention = True


@CONDITIONINGS.register("token-concat", "timestep and text tokens prepended to the video tokens (DiT's in-context)")
class TokenConcatConditioning(Conditioning):
    modulated = False  # plain pre-LN blocks; only video tokens are decoded

    @staticmethod
    def prefix_tokens(text_len: int) -> int:
        return 1 + text_len

    def prefix(self, tokens, t_emb, ctx, ctx_mask):
        B, n_prefix = tokens.shape[0], 1 + ctx.shape[1]
        tokens = torch.cat([t_emb.unsqueeze(1), ctx, tokens], dim=1)  # (B, 1 + S + N, D)
        key_mask = None
        if ctx_mask is not None:
            ones = torch.ones(B, 1, dtype=torch.bool, device=tokens.device)
            video = torch.ones(B, tokens.shape[1] - n_prefix, dtype=torch.bool, device=tokens.device)
            key_mask = torch.cat([ones, ctx_mask, video], dim=1)  # (B, L)
        return tokens, key_mask, n_prefix


class DiTBlock(nn.Module):
    """A transformer block: adaLN-zero modulated, or plain pre-LN; with cross-attention if the conditioning asks."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, conditioning: Conditioning):
        super().__init__()
        self.modulated = conditioning.modulated
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not self.modulated, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        cross = conditioning.cross_attention
        self.cross_attn = CrossAttention(dim, num_heads) if cross else None
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if cross else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not self.modulated, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if self.modulated else None

    def forward(self, x, c, key_mask, ctx, ctx_mask):
        # x: (B, N, D), c: (B, D), ctx: (B, S, D)
        if not self.modulated:
            x = x + self.attn(self.norm1(x), key_mask)
            return x + self.mlp(self.norm2(x))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = gated_residual(x, gate_msa, self.attn(modulate(self.norm1(x), shift_msa, scale_msa), key_mask))
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), ctx, ctx_mask)
        return gated_residual(x, gate_mlp, self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm + Linear back to patch pixels (zero-initialised)."""

    def __init__(self, dim: int, patch_volume: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_volume * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class PatchEmbed3D(nn.Module):
    """(B, C, T, H, W) -> (B, N, D) tokens in (t, h, w) order, plus 3D sin-cos positions for the shape at hand."""

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, dim: int, pos_embed: str = "sum"):
        super().__init__()
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed {pos_embed!r} is not one of {POS_EMBEDS}")
        self.patch_size = tuple(patch_size)
        self.pos_embed_kind = pos_embed
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self._pos_cache: dict = {}

    def pos_embed(self, grid: tuple[int, int, int], device, dtype) -> torch.Tensor:
        """(N, D) positions, computed once per (grid, device, dtype)."""
        key = (grid, device, dtype)
        if key not in self._pos_cache:
            nt, nh, nw = grid
            dim = self.proj.out_channels
            if self.pos_embed_kind == "concat":
                # diffusers' 3D sin-cos (as in CogVideoX): 1/4 of the channels encode t, 3/4 (h, w).
                pe = get_3d_sincos_pos_embed(dim, (nw, nh), nt, output_type="pt")  # (nt, nh*nw, D)
            else:
                # "sum" (as in Latte / Open-Sora 1.0): a full-width 2D (h, w) sin-cos plus a
                # full-width 1D sin-cos of t. Every channel carries time, so frames of a short clip
                # differ in many channels, not in the few low-frequency ones of a quarter-width code.
                # Integer token coordinates, so a position means the same place at every resolution.
                hh, ww = torch.meshgrid(torch.arange(nh), torch.arange(nw), indexing="ij")
                spatial = get_2d_sincos_pos_embed_from_grid(dim, torch.stack([hh.flatten(), ww.flatten()]).float())
                temporal = get_1d_sincos_pos_embed_from_grid(dim, torch.arange(nt).float())  # (nt, D)
                pe = temporal.unsqueeze(1) + spatial.unsqueeze(0)  # (nt, nh*nw, D)
            self._pos_cache[key] = pe.reshape(nt * nh * nw, -1).to(device=device, dtype=dtype)
        return self._pos_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, nt, nh, nw)
        grid = tuple(x.shape[2:])
        # Contiguous (B, N, D): the residual stream keeps the layout of its first tensor, and a
        # transposed one made every LayerNorm copy its input forward and backward.
        x = x.flatten(2).transpose(1, 2).contiguous()  # (B, N, D)
        return x + self.pos_embed(grid, x.device, x.dtype)


class TextEmbedder(nn.Module):
    """Projects text features to the model width; holds the learned null text for classifier-free guidance."""

    def __init__(self, text_dim: int, text_len: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.null_text = nn.Parameter(torch.randn(text_len, text_dim) / math.sqrt(text_dim))

    def forward(self, text, text_mask, drop_text):
        # text: (B, S, Dt); text_mask: (B, S) bool; drop_text: (B,) bool -> replace by the null text
        if drop_text is not None:
            drop = drop_text.view(-1, 1, 1)
            text = torch.where(drop, self.null_text.to(text.dtype).expand_as(text), text)
            if text_mask is not None:
                text_mask = text_mask | drop_text.view(-1, 1)
        return self.proj(text), text_mask  # (B, S, D)


class SequenceBoundary(nn.Module):
    """Identity marking where the token sequence starts/ends; sequence parallelism replaces it."""

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, length: int | None = None):
        # length: the sequence's true length, for a gather that must drop padding added at the split
        return x, key_mask


def init_shared_weights(model: nn.Module) -> None:
    """DiT's initialisation of the parts every family shares: Linear layers, patch, timestep and text embedders."""
    def _basic(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    model.apply(_basic)
    w = model.x_embedder.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # like nn.Linear, as DiT does
    nn.init.zeros_(model.x_embedder.proj.bias)
    nn.init.normal_(model.t_embedder.linear_1.weight, std=0.02)
    nn.init.normal_(model.t_embedder.linear_2.weight, std=0.02)
    nn.init.normal_(model.y_embedder.proj[0].weight, std=0.02)
    nn.init.normal_(model.y_embedder.proj[2].weight, std=0.02)


def unpatchify(x: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int], channels: int) -> torch.Tensor:
    """Patch tokens (B, nt*nh*nw in (t, h, w) order, pt*ph*pw*C) -> (B, C, T, H, W)."""
    B = x.shape[0]
    pt, ph, pw = patch
    nt, nh, nw = grid
    x = x.reshape(B, nt, nh, nw, pt, ph, pw, channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, nt, pt, nh, ph, nw, pw)
    return x.reshape(B, channels, nt * pt, nh * ph, nw * pw)


class VideoDiT(ModelMixin, ConfigMixin):
    """Diffusion transformer over video latents (B, C, T, H, W) of any T, H, W divisible by the patch."""

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
        model_name: str = "DiT/XL-2",
        pos_embed: str = "sum",
    ):
        super().__init__()
        self.conditioning = CONDITIONINGS.lookup(condition)()
        self.patch_size = tuple(patch_size)
        self.gradient_checkpointing = False
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size, pos_embed)
        self.t_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.t_embedder = TimestepEmbedding(256, hidden_size)
        self.y_embedder = TextEmbedder(text_dim, text_len, hidden_size)
        self.seq_in, self.seq_out = SequenceBoundary(), SequenceBoundary()
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, self.conditioning) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, int(np.prod(self.patch_size)), in_channels)
        self.initialize_weights()

    def sequence_attentions(self) -> list[Attention]:
        """The self-attentions that see the whole (split) sequence: every block's."""
        return [b.attn for b in self.blocks]

    def initialize_weights(self) -> None:
        """DiT's initialisation, ending with the zero-init of adaLN modulation and output layers."""
        init_shared_weights(self)
        # zero-out adaLN modulation
        for block in self.blocks:
            if block.adaLN_modulation is not None:
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
        # zero-out output layers
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, N, pt*ph*pw*C) -> (B, C, T, H, W)."""
        return unpatchify(x, grid, self.patch_size, self.config.in_channels)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict noise (or v) for latents x (B, C, T, H, W) at `timestep` (B,) given text (B, S, Dt).

        text_mask (B, S) bool marks real text tokens; drop_text (B,) bool swaps in the null text
        (classifier-free guidance).
        """
        B, _, T, H, W = x.shape
        pt, ph, pw = self.patch_size
        if T % pt or H % ph or W % pw:
            raise ValueError(f"latent {T}x{H}x{W} is not divisible by the patch size {self.patch_size}")
        grid = (T // pt, H // ph, W // pw)
        tokens = self.x_embedder(x)  # (B, N, D)
        t_emb = self.t_embedder(self.t_proj(timestep.reshape(-1).expand(B)).to(tokens.dtype))  # (B, D)
        ctx, ctx_mask = self.y_embedder(text.to(tokens.dtype), text_mask, drop_text)  # (B, S, D)
        c = self.conditioning.global_embedding(t_emb, ctx, ctx_mask)  # (B, D)
        tokens, key_mask, n_prefix = self.conditioning.prefix(tokens, t_emb, ctx, ctx_mask)  # (B, L, D)
        length = tokens.shape[1]
        tokens, key_mask = self.seq_in(tokens, key_mask)  # sequence parallelism may split here
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens = self._gradient_checkpointing_func(block, tokens, c, key_mask, ctx, ctx_mask)
            else:
                tokens = block(tokens, c, key_mask, ctx, ctx_mask)  # (B, L, D)
        tokens, _ = self.seq_out(tokens, length=length)  # ... and gather here
        tokens = tokens[:, n_prefix:]  # (B, N, D): only video tokens are decoded
        return self.unpatchify(self.final_layer(tokens, c), grid)  # (B, C, T, H, W)

