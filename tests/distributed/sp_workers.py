"""Worker bodies for the sequence-parallel tests (module-level so spawn can import them)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.distributed as dist

from opensora.models.presets import create_model
from opensora.parallel.dims import ParallelDims
from opensora.parallel.sequence import sequence_parallelize, theoretical_bytes

TEXT_DIM, TEXT_LEN = 16, 8


def _model(condition: str, seed: int = 0, family: str = "DiT"):
    torch.manual_seed(seed)
    m = create_model(f"{family}/T-2", 4, condition, TEXT_DIM, TEXT_LEN)
    with torch.no_grad():  # leave DiT's zero init so outputs and all gradients are non-trivial
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def _inputs(b: int, shape, seed: int, device: torch.device | None = None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, *shape, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    text = torch.randn(b, TEXT_LEN, TEXT_DIM, generator=g)
    mask = torch.arange(TEXT_LEN)[None] < torch.randint(2, TEXT_LEN + 1, (b, 1), generator=g)
    target = torch.randn(b, 4, *shape, generator=g)
    return tuple(v.to(device or "cpu") for v in (x, t, text, mask, target))


def _device() -> torch.device:
    """This rank's GPU under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def exactness(rank: int, world: int, mode: str, out: str, family: str = "DiT") -> None:
    """SP forward/backward on `world` ranks vs the same model unsplit, for every conditioning of `family`.

    DiT splits its tokens: (1, 6, 6) gives 9 video tokens (odd), (2, 4, 6) 12, token-concat adds
    1 + TEXT_LEN more. STDiT splits frames: (3, 4, 6) gives 3 latent frames (odd) of 6 tokens, (2, 4, 6) 2,
    and (4, 4, 6) with one timestep per frame (frames given clean, as image-to-video trains).
    """
    report = []
    device = _device()
    group = dist.new_group(list(range(world)))
    stdit = family == "STDiT"
    conditions = ("adaln", "cross-attn") if stdit else ("adaln", "cross-attn", "token-concat")
    shapes = ((3, 4, 6), (2, 4, 6), (4, 4, 6)) if stdit else ((1, 6, 6), (2, 4, 6))
    for condition in conditions:
        for shape in shapes:
            ref = _model(condition, family=family).to(device)
            sp = copy.deepcopy(ref)
            ctx = sequence_parallelize(sp, mode, group, rank, world)
            x, t, text, mask, target = _inputs(2, shape, seed=7, device=device)
            if stdit and shape[0] == 4:  # per-frame timesteps: the first frame given (0), the rest noised
                t = torch.stack([torch.zeros_like(t), t, t, t], dim=1)
            y_ref = ref(x, t, text, mask)
            ((y_ref - target) ** 2).mean().backward()
            ctx.counter.reset()
            y_sp = sp(x, t, text, mask)
            fwd_bytes = dict(ctx.counter.bytes)
            ((y_sp - target) ** 2).mean().backward()
            scale = y_ref.abs().max().item()
            out_err = (y_sp - y_ref).abs().max().item() / scale
            grad_err = 0.0
            for (name, p_ref), p_sp in zip(ref.named_parameters(), sp.parameters()):
                g = p_sp.grad.clone() if p_sp.grad is not None else torch.zeros_like(p_sp)
                dist.all_reduce(g)
                g /= world  # what the data-parallel all-reduce of the booster does over the world
                if p_ref.grad is None:
                    assert g.abs().max() == 0, name
                    continue
                grad_err = max(grad_err, ((g - p_ref.grad).abs().max() / p_ref.grad.abs().max().clamp_min(1e-12)).item())
            if stdit:  # the temporal attention's sequences: B x S of them, T' (padded) frames long
                L, S = shape[0], (shape[1] // 2) * (shape[2] // 2)
                expect = theoretical_bytes(mode, 2 * S, L + (-L) % world, sp.config.hidden_size, world, 4)
            else:
                L = (shape[0] * shape[1] * shape[2]) // 4 + (1 + TEXT_LEN if condition == "token-concat" else 0)
                expect = theoretical_bytes(mode, 2, L + (-L) % world, sp.config.hidden_size, world, 4)
            measured = {k[1]: v // len(sp.blocks) for k, v in fwd_bytes.items() if k[1] != "gather_output"}
            report.append({"condition": condition, "shape": shape, "tokens": L, "out_err": out_err,
                           "grad_err": grad_err, "bytes": measured, "expected": expect})
    if rank == 0:
        Path(out).write_text(json.dumps(report))


def dp_sp_equivalence(rank: int, world: int, out: str) -> None:
    """dp=2 x sp=2 vs dp=4 on 4 ranks, same global batch of 4: same loss and gradients."""
    results = {}
    for sp_size, mode in ((1, "none"), (2, "ulysses"), (2, "fastseq")):
        dims = ParallelDims(world, sp_size, mode, rank)
        dims.build_groups()
        model = _model("cross-attn")
        if dims.sp_enabled:
            sequence_parallelize(model, mode, dims.sp_group, dims.sp_rank, dims.sp_size)
        per = 4 // dims.dp_size
        x, t, text, mask, target = _inputs(4, (1, 6, 6), seed=3)
        sl = slice(dims.dp_rank * per, (dims.dp_rank + 1) * per)
        y = model(x[sl], t[sl], text[sl], mask[sl])
        loss = ((y - target[sl]) ** 2).mean()
        loss.backward()
        logged = loss.detach().clone()
        dist.all_reduce(logged)
        grads = []
        for p in model.parameters():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(g)
            grads.append((g / world).flatten())
        results[mode] = {"loss": logged.item() / world, "grad": torch.cat(grads)}
    if rank == 0:
        base = results["none"]
        rep = {m: {"loss_diff": abs(r["loss"] - base["loss"]),
                   "grad_err": ((r["grad"] - base["grad"]).abs().max() / base["grad"].abs().max()).item()}
               for m, r in results.items()}
        Path(out).write_text(json.dumps(rep))
