"""Sequence parallelism for VideoDiT and STDiT: split the token sequence across an SP group.

The model stays single-device code: `sequence_parallelize` (called by `parallelize`) swaps its
`seq_in`/`seq_out` boundaries for a split/gather pair and puts a strategy in every
self-attention's `sp` slot. `SP_STRATEGIES` is the registry: a new strategy is one registered class
here with an `attention(attn, x, key_mask)` method and its `theoretical_bytes`.
Everything outside self-attention (MLP, adaLN, cross-attention to the full, unsplit text) is
token-wise and runs on the local shard as it is.

Communication per block and forward pass, for a local shard x of B x N/P tokens x D (P = sp size,
e = bytes per element); the backward pass sends the same again:

  Ulysses (DeepSpeed-Ulysses)  qkv projected locally; one all-to-all turns (B, N/P, 3, H, Dh) into
                               (B, N, 3, H/P, Dh) (the Q, K and V all-to-alls, packed into one);
                               attention on H/P heads; one all-to-all back to (B, N/P, H, Dh).
                               Sent per rank: 3BND e (P-1)/P^2 + BND e (P-1)/P^2 = 4 BND e (P-1)/P^2.
  FastSeq (OpenDiT)            one all-gather rebuilds the full (B, N, D) input; each rank projects
                               Q, K, V for its own H/P heads only (its slice of the qkv weight);
                               attention on those heads; one all-to-all returns (B, N/P, H, Dh).
                               Sent per rank: BND e (P-1)/P + BND e (P-1)/P^2.
                               The gather is not overlapped with the local projection here (the
                               original did so with point-to-point exchange at P=2).

STDiT hands `seq_in` its tokens as (B, T', S*D), so the split is along frames: spatial attention,
cross-attention and the MLP run on whole local frames, and only the temporal attention holds the
strategy, over sequences of T' tokens for each of the B*S positions. Its bytes per block are the
formulas above with N = T'S (the same tokens cross the wire, once per block instead of in every
self-attention of a full-attention block).

Sequences whose length is not a multiple of P are padded at `seq_in`; padded positions are masked
as attention keys and dropped at `seq_out`, so results equal the unsplit model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opensora.errors import UserError
from opensora.models.dit import sdpa_attention
from opensora.parallel.comm import CommCounter, all_to_all, gather_seq
from opensora.registry import Registry


class SPContext:
    """The SP group of this rank, its position in it, and the bytes its collectives send."""

    def __init__(self, group, rank: int, size: int, counter: CommCounter | None = None):
        self.group, self.rank, self.size = group, rank, size
        self.counter = counter or CommCounter()


class SplitSequence(nn.Module):
    """Replaces `seq_in`: pad to a multiple of P, mask the padding as keys, keep this rank's shard."""

    def __init__(self, ctx: SPContext):
        super().__init__()
        self.ctx = ctx

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None):
        B, L, _ = x.shape
        P = self.ctx.size
        pad = (-L) % P
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
            real = torch.ones(B, L, dtype=torch.bool, device=x.device) if key_mask is None else key_mask
            key_mask = torch.cat([real, torch.zeros(B, pad, dtype=torch.bool, device=x.device)], dim=1)
        n = (L + pad) // P
        return x[:, self.ctx.rank * n : (self.ctx.rank + 1) * n], key_mask  # key_mask stays full-length


class GatherSequence(nn.Module):
    """Replaces `seq_out`: all-gather the shards and drop the padding (the model passes the true length)."""

    def __init__(self, ctx: SPContext):
        super().__init__()
        self.ctx = ctx

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, length: int | None = None):
        x = gather_seq(x, self.ctx.group, 1, self.ctx.counter, "gather_output")
        return x[:, :length], None


def _heads_to_sequence(attn, qkv: torch.Tensor, key_mask, ctx: SPContext, name: str, n: int) -> torch.Tensor:
    """SDPA on this rank's heads over the full sequence, then one all-to-all back to the sequence shard.

    qkv: (B, N, 3, H/P, Dh) -> (B, N/P, D) after the output projection.
    """
    B = qkv.shape[0]
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H/P, N, Dh)
    o = sdpa_attention(q, k, v, key_mask).transpose(1, 2)  # (B, N, H/P, Dh)
    o = all_to_all(o, ctx.group, scatter_dim=1, gather_dim=2, counter=ctx.counter, name=name)  # (B, N/P, H, Dh)
    return attn.proj(o.reshape(B, n, -1))


SP_STRATEGIES: Registry = Registry("sequence parallelism", "--sp")
SP_STRATEGIES.add("none", None, "no sequence parallelism: each rank holds whole sequences")


@SP_STRATEGIES.register("ulysses", "all-to-all to head shards around attention (DeepSpeed-Ulysses)")
class UlyssesAttention:
    """All-to-all from sequence shards to head shards and back around local SDPA."""

    @staticmethod
    def bytes_per_block(B: int, N: int, D: int, P: int, elem: int) -> dict[str, int]:
        """Bytes one rank sends per block in the forward pass, by collective (see the module docstring)."""
        n = N // P
        return {"ulysses_qkv": 3 * B * n * D * elem * (P - 1) // P, "ulysses_out": B * n * D * elem * (P - 1) // P}

    def __init__(self, ctx: SPContext):
        self.ctx = ctx

    def attention(self, attn, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        B, n, _ = x.shape
        c = self.ctx
        qkv = attn.qkv(x).view(B, n, 3, attn.num_heads, attn.head_dim)  # (B, N/P, 3, H, Dh)
        qkv = all_to_all(qkv, c.group, scatter_dim=3, gather_dim=1, counter=c.counter, name="ulysses_qkv")
        return _heads_to_sequence(attn, qkv, key_mask, c, "ulysses_out", n)  # (B, N/P, D)


@SP_STRATEGIES.register("fastseq", "all-gather of the input, local-head attention, all-to-all back (OpenDiT)")
class FastSeqAttention:
    """All-gather of the input, local-head QKV projection, SDPA, one all-to-all back."""

    @staticmethod
    def bytes_per_block(B: int, N: int, D: int, P: int, elem: int) -> dict[str, int]:
        """Bytes one rank sends per block in the forward pass, by collective (see the module docstring)."""
        n = N // P
        return {"fastseq_gather": B * n * D * elem * (P - 1), "fastseq_out": B * N * (D // P) * elem * (P - 1) // P}

    def __init__(self, ctx: SPContext):
        self.ctx = ctx

    def attention(self, attn, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        B, n, D = x.shape
        H, Dh = attn.num_heads, attn.head_dim
        c = self.ctx
        h = H // c.size
        x_full = gather_seq(x, c.group, 1, c.counter, "fastseq_gather")  # (B, N, D)
        # This rank's heads: rows [3, h0:h1, Dh] of the (3*H*Dh, D) qkv weight.
        w = attn.qkv.weight.view(3, H, Dh, D)[:, c.rank * h : (c.rank + 1) * h].reshape(3 * h * Dh, D)
        b = attn.qkv.bias.view(3, H, Dh)[:, c.rank * h : (c.rank + 1) * h].reshape(-1)
        qkv = F.linear(x_full, w, b).view(B, x_full.shape[1], 3, h, Dh)  # (B, N, 3, H/P, Dh)
        return _heads_to_sequence(attn, qkv, key_mask, c, "fastseq_out", n)  # (B, N/P, D)


def theoretical_bytes(mode: str, B: int, N: int, D: int, P: int, elem: int) -> dict[str, int]:
    """Bytes one rank sends per block in the forward pass (N already padded to a multiple of P)."""
    return SP_STRATEGIES.lookup(mode).bytes_per_block(B, N, D, P, elem)


def sequence_parallelize(model, mode: str, group, rank: int, size: int, counter: CommCounter | None = None) -> SPContext:
    """Make `model` split its token sequence over `group` with Ulysses or FastSeq."""
    heads = model.config.num_heads
    if heads % size:
        raise UserError(f"--sp-size {size} does not divide the model's {heads} attention heads; "
                        f"choose an sp size that divides {heads}")
    ctx = SPContext(group, rank, size, counter)
    model.seq_in = SplitSequence(ctx)
    model.seq_out = GatherSequence(ctx)
    strategy = SP_STRATEGIES.lookup(mode)(ctx)
    for attn in model.sequence_attentions():  # VideoDiT: every self-attention; STDiT: the temporal ones
        attn.sp = strategy
    return ctx
