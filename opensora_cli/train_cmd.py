"""`opensora train`: DiT training through Colossal-AI, on one process or many."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from opensora.errors import Interrupted, UserError
from opensora_cli.relaunch import NPROC_CHILD, relaunch
from opensora_cli.render import console, next_line, print_json, progress_bars, table
from opensora_cli.settings import Settings, build_config


def train(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option("--data", "-d")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    condition: Annotated[str | None, typer.Option("--condition")] = None,
    plugin: Annotated[str | None, typer.Option("--plugin")] = None,
    precision: Annotated[str | None, typer.Option("--precision")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b")] = None,
    max_tokens_per_batch: Annotated[int | None, typer.Option("--max-tokens-per-batch")] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    warmup_steps: Annotated[int | None, typer.Option("--warmup-steps")] = None,
    lr_schedule: Annotated[str | None, typer.Option("--lr-schedule")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay")] = None,
    steps: Annotated[int | None, typer.Option("--steps")] = None,
    ckpt_every: Annotated[int | None, typer.Option("--ckpt-every")] = None,
    keep: Annotated[int | None, typer.Option("--keep")] = None,
    ema_decay: Annotated[float | None, typer.Option("--ema-decay")] = None,
    grad_clip: Annotated[float | None, typer.Option("--grad-clip")] = None,
    grad_checkpoint: Annotated[bool | None, typer.Option("--grad-checkpoint/--no-grad-checkpoint")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    sp: Annotated[str | None, typer.Option("--sp")] = None,
    sp_size: Annotated[int | None, typer.Option("--sp-size")] = None,
    nproc: Annotated[int | None, typer.Option("--nproc")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers")] = None,
    objective: Annotated[str | None, typer.Option("--objective")] = None,
    prediction_type: Annotated[str | None, typer.Option("--prediction")] = None,
    flow_shift: Annotated[float | None, typer.Option("--flow-shift")] = None,
    cfg_dropout: Annotated[float | None, typer.Option("--cfg-dropout")] = None,
    image_ratio: Annotated[float | None, typer.Option("--image-ratio")] = None,
    temporal_patch: Annotated[int | None, typer.Option("--temporal-patch")] = None,
    frame_condition: Annotated[float | None, typer.Option("--frame-condition")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir")] = None,
    resume: Annotated[str | None, typer.Option("--resume")] = None,
    init_from: Annotated[Path | None, typer.Option("--init-from")] = None,
    val_data: Annotated[Path | None, typer.Option("--val-data")] = None,
    val_every: Annotated[int | None, typer.Option("--val-every")] = None,
    val_samples: Annotated[int | None, typer.Option("--val-samples")] = None,
    sample_prompts: Annotated[Path | None, typer.Option("--sample-prompts")] = None,
    sample_every: Annotated[int | None, typer.Option("--sample-every")] = None,
    sample_steps: Annotated[int | None, typer.Option("--sample-steps")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    pg_timeout: Annotated[float | None, typer.Option("--pg-timeout")] = None,
    hang_timeout: Annotated[float | None, typer.Option("--hang-timeout")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Print buckets, model, layout, predicted memory and time per step; do not train.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --plan: print JSON.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Train even when the predicted memory exceeds what is available.")] = False,
) -> None:
    """Train a video DiT on an encoded dataset through Colossal-AI's Booster.

    Runs on one process, on --nproc N local processes, or under torchrun on many nodes
    (the same command). Checkpoints go to RUN/ckpt-NNNNNNN; --resume auto continues exactly.

    Latents are centre-cropped to multiples of the model's patch (space) and the first multiple
    of --temporal-patch frames. Before step 1 each bucket of latent shape is listed (rows, tokens,
    batch); a shape no patch fits is refused with the fix.

    [bold]Examples[/bold]
      opensora train --data out/ --model DiT/S-2 --steps 2000
      opensora train --data train/ --val-data val/ --val-every 200 --sample-prompts prompts.txt
      opensora train --model DiT/XL-2 --sp ulysses --nproc 8
      torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m opensora_cli train --model DiT/XL-2
    """
    from opensora.data.dataset import newest_dataset
    from opensora.parallel.launch import under_torchrun
    from opensora.runs import newest_run

    s: Settings = ctx.obj
    worker = under_torchrun()
    cfg = build_config(s, "train", ctx.params)  # every bad value is reported before any data is read
    if cfg.run_dir is None:
        newest = newest_run(s.home / "runs") if cfg.resume == "auto" else None
        cfg.run_dir = str(newest or s.home / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model.replace('/', '_')}")
        if not worker and not plan:
            console.print(f"run: {cfg.run_dir}")
    saved = _saved_config(cfg.resume, Path(cfg.run_dir))
    _inherit(s, ctx.params, cfg, saved)
    if cfg.data is None:
        newest = newest_dataset(s.home / "datasets")
        if newest is None:
            raise UserError(f"no --data given and no encoded dataset under {s.home / 'datasets'}; "
                            "run `opensora data encode` first or pass --data")
        cfg.data = str(newest)
        if not worker and not as_json:
            console.print(f"data: {cfg.data} (the newest encoded dataset; pass --data to choose)")
    cfg.validate()
    for name in ("data", "val_data", "sample_prompts"):  # recorded in checkpoints: `eval` finds them from anywhere
        if getattr(cfg, name) is not None:
            setattr(cfg, name, str(Path(getattr(cfg, name)).resolve()))
    if not os.environ.get(NPROC_CHILD):  # the --nproc parent checked already
        _preflight(cfg, plan, as_json, force)
        if plan:
            return
    if cfg.nproc > 1 and not worker:  # rank 0 of the workers draws the progress and prints the summary
        try:
            relaunch(cfg.nproc, {"--run-dir": cfg.run_dir, "--data": cfg.data})
        except KeyboardInterrupt:
            raise Interrupted(_how_to_resume(Path(cfg.run_dir))) from None
        return
    from opensora.training.trainer import train as run_training

    main_rank = int(os.environ.get("RANK", 0)) == 0
    try:
        if main_rank:
            with progress_bars() as progress:
                r = run_training(cfg, progress)
            _print_summary(r)
        else:
            run_training(cfg)
    except KeyboardInterrupt:
        if os.environ.get(NPROC_CHILD) or not main_rank:
            raise typer.Exit(130) from None  # the --nproc parent (or rank 0) says it once for every rank
        raise Interrupted(_how_to_resume(Path(cfg.run_dir))) from None


# TrainConfig fields a resumed run takes from its checkpoint unless given by a flag or an OPENSORA_TRAIN_*
# variable (the layout, device, workers and data loading are this launch's own).
_INHERITED = ("model", "condition", "plugin", "precision", "batch_size", "max_tokens_per_batch", "lr", "warmup_steps",
              "lr_schedule", "weight_decay", "steps", "ckpt_every", "keep", "ema_decay", "grad_clip", "grad_checkpoint",
              "objective", "prediction_type", "flow_shift", "cfg_dropout", "temporal_patch", "frame_condition",
              "image_ratio", "data", "val_data", "val_every", "val_samples", "sample_prompts", "sample_every",
              "sample_steps")


def _saved_config(resume: str | None, run_dir: Path) -> dict:
    """The train config of the checkpoint `--resume` names (auto: the run's newest good one), or {}."""
    from opensora.checkpoint import checkpoint_problem, checkpoints_of

    if resume is None:
        return {}
    if resume == "auto":
        good = [c for c in (checkpoints_of(run_dir) if run_dir.is_dir() else []) if not checkpoint_problem(c, True)]
        ckpt = good[-1] if good else None
    else:
        ckpt = Path(resume)
    try:
        meta = json.loads((ckpt / "opensora.json").read_text()) if ckpt is not None else {}
    except (OSError, ValueError):
        return {}  # the trainer names what is wrong with it
    return {**meta.get("train_config", {}), "model": meta.get("model_name", meta.get("train_config", {}).get("model"))}


def _inherit(s: Settings, flags: dict, cfg, saved: dict) -> None:
    """Settings given neither as a flag nor in the environment take the resumed run's values."""
    for key in _INHERITED:
        if key in saved and saved[key] is not None and flags.get(key) is None and s.source(f"train.{key}") != "env":
            setattr(cfg, key, saved[key])


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _preflight(cfg, show_all: bool, as_json: bool, force: bool) -> None:
    """Print the buckets (and with --plan the model, layout, memory and time); refuse what cannot fit."""
    from opensora.devices import resolve_device
    from opensora.training.plan import plan_training

    world = max(cfg.nproc, int(os.environ.get("WORLD_SIZE", 1)))
    local = max(cfg.nproc, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    device = str(resolve_device(cfg.device))
    buckets, p = plan_training(cfg, world, local, device, estimate_time=show_all)
    main_rank = int(os.environ.get("RANK", 0)) == 0
    if as_json and show_all:
        print_json({"buckets": [vars(b) for b in buckets.buckets], "steps_per_epoch": buckets.steps_per_epoch,
                    "model": cfg.model, "params": p.cost.params, "tokens": p.max_tokens,
                    "flops_per_sample": p.cost.flops_per_sample(p.max_tokens, frames=p.frames), "dp": p.dp_size, "sp": p.sp_size,
                    "batch_per_rank": p.per_rank_batch, "device": device,
                    "memory": {**p.memory.parts(), "total": p.memory.total(),
                               "total_with_grad_checkpoint": p.memory.total(True),
                               "total_without_grad_checkpoint": p.memory.total(False), "available": p.available},
                    "step_seconds": p.step_seconds, "fits": p.fits, "fixes": p.fixes})
        return
    if main_rank:
        rows = [("x".join(map(str, b.thw)) + ("" if b.thw == b.train_thw else " -> " + "x".join(map(str, b.train_thw))),
                 b.rows, b.tokens, b.batch) for b in sorted(buckets.buckets, key=lambda b: -b.rows)]
        shown = rows[:12] + ([(f"… {len(rows) - 12} more", "", "", "")] if len(rows) > 12 else [])
        console.print(table(f"latent buckets: patch {'x'.join(map(str, buckets.patch))}, {buckets.steps_per_epoch} "
                            f"steps/epoch, dp {buckets.dp_size}", shown, ("latent TxHxW", "rows", "tokens", "batch/rank")))
    if show_all:
        m = p.memory
        rows = [("model", f"{cfg.model}: {p.cost.params / 1e6:.1f}M parameters, "
                          f"{p.cost.flops_per_sample(p.max_tokens, frames=p.frames) / 1e12:.3g} TFLOP per sample (train step)"),
                ("layout", f"{world} rank{'s' if world > 1 else ''} = dp {p.dp_size} x sp {p.sp_size}, "
                           f"{p.per_rank_batch} per rank in the heaviest bucket ({p.max_tokens} tokens each)"),
                *[(k, _gib(v)) for k, v in m.parts().items()],
                ("peak per rank", f"{_gib(m.total(False))} ({_gib(m.total(True))} with --grad-checkpoint)"),
                ("available per rank", f"{_gib(p.available)} ({device})"),
                ("time per step", f"about {p.step_seconds:.3g} s" if p.step_seconds else "-")]
        console.print(table("plan", rows))
        if not p.fits:
            console.print(f"[yellow]does not fit; would fit with: {', '.join(p.fixes)}[/yellow]")
        return
    disk = _free_disk(Path(cfg.run_dir))
    ckpt_bytes = 20 * p.cost.params  # fp32 model + EMA + AdamW moments (+ fp32 masters in 16 bit), about
    if disk is not None and disk < 2 * ckpt_bytes and not force:
        raise UserError(f"--run-dir {cfg.run_dir}: {_gib(disk)} free on its disk, and a checkpoint of {cfg.model} takes "
                        f"about {_gib(ckpt_bytes)} (written beside the previous one); free some space, choose another "
                        "--run-dir, or pass --force")
    if not p.fits and not force:
        raise UserError(f"{cfg.model} needs about {_gib(p.memory.total())} per rank for the heaviest bucket "
                        f"({p.max_tokens} tokens x {p.per_rank_batch}) but {_gib(p.available)} is available; "
                        f"would fit with: {', '.join(p.fixes)}; see `opensora train --plan`, or pass --force")


def _free_disk(path: Path) -> int | None:
    """Free bytes on the file system that will hold `path` (its nearest existing parent)."""
    import shutil

    for p in (path, *path.parents):
        if p.exists():
            return shutil.disk_usage(p).free
    return None


def _how_to_resume(run_dir: Path) -> str:
    from opensora.checkpoint import checkpoints_of

    ckpts = checkpoints_of(run_dir) if run_dir.is_dir() else []
    if not ckpts:
        return f"interrupted before the first checkpoint; nothing in {run_dir} to resume from"
    return (f"interrupted; the last checkpoint is {ckpts[-1]}; continue with: "
            f"opensora train --resume auto --run-dir {run_dir} (and the same options)")


def _print_summary(r) -> None:
    rows = [("run", r.run_dir), ("steps", f"{r.start_step} -> {r.steps}"), ("processes", r.world_size),
            ("first loss", f"{r.losses[0]:.4f}" if r.losses else "-"),
            ("last loss", f"{r.losses[-1]:.4f}" if r.losses else "-"),
            *([("validation loss", f"{r.val_loss:.4f}")] if r.val_loss is not None else []),
            ("samples/s", f"{r.samples_per_s:.2f}"), ("checkpoint", r.last_checkpoint)]
    console.print(table("training done", rows))
    next_line(f"opensora sample \"a prompt\" --ckpt {r.last_checkpoint}")

