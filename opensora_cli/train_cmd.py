"""`opensora train`: DiT training through Colossal-AI, on one process or many."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from opensora.errors import Interrupted, UserError
from opensora.training.plugins import PLUGINS
from opensora_cli import choices
from opensora_cli.relaunch import NPROC_CHILD, relaunch
from opensora_cli.render import console, next_line, print_json, progress_bars, table
from opensora_cli.settings import Settings, default_help


def newest_dataset(home: Path) -> Path | None:
    """The most recently finished dataset under HOME/datasets."""
    from opensora.data.dataset import is_complete

    root = home / "datasets"
    if not root.is_dir():
        return None
    done = [d for d in root.iterdir() if is_complete(d)]
    return max(done, key=lambda d: (d / "manifest.json").stat().st_mtime) if done else None


def newest_run(home: Path) -> Path | None:
    """The most recently modified run directory under HOME/runs."""
    root = home / "runs"
    runs = [r for r in root.iterdir() if r.is_dir()] if root.is_dir() else []
    return max(runs, key=lambda r: r.stat().st_mtime) if runs else None


def train(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Encoded dataset \\[default: the newest under HOME/datasets].")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", autocompletion=choices.complete_model, help="DiT/{T,S,B,L,XL}-{2,4,8}." + default_help("train.model"))] = None,
    condition: Annotated[str | None, typer.Option("--condition", autocompletion=choices.complete_condition, help="adaln | cross-attn | token-concat." + default_help("train.condition"))] = None,
    plugin: Annotated[str | None, typer.Option("--plugin", autocompletion=choices.complete_plugin, help="Colossal-AI plugin: " + " | ".join(n for n, p in PLUGINS.items() if not p.refusal) + " (zero2: CUDA only)." + default_help("train.plugin"))] = None,
    precision: Annotated[str | None, typer.Option("--precision", autocompletion=choices.complete_precision, help="auto | fp32 | bf16 | fp16." + default_help("train.precision"))] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", help="Global batch size." + default_help("train.batch_size"))] = None,
    max_tokens_per_batch: Annotated[int | None, typer.Option("--max-tokens-per-batch", help="Per-rank batch of each latent shape from this token budget (replaces --batch-size): small shapes get big batches.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate." + default_help("train.lr"))] = None,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Linear learning-rate warm-up.")] = 0,
    lr_schedule: Annotated[str, typer.Option("--lr-schedule", help="constant | cosine (to 10% at --steps).")] = "constant",
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps to train to." + default_help("train.steps"))] = None,
    ckpt_every: Annotated[int | None, typer.Option("--ckpt-every", help="Checkpoint every N steps (and at the end)." + default_help("train.ckpt_every"))] = None,
    keep: Annotated[int | None, typer.Option("--keep", help="Keep the last N checkpoints." + default_help("train.keep"))] = None,
    ema_decay: Annotated[float, typer.Option("--ema-decay", help="EMA decay of the weights.")] = 0.9999,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="Clip the gradient norm (0: off).")] = 1.0,
    grad_checkpoint: Annotated[bool, typer.Option("--grad-checkpoint", help="Recompute activations per block.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of initialisation, data order and noise \\[default: 0; a resumed run keeps its own].")] = None,
    sp: Annotated[str, typer.Option("--sp", autocompletion=choices.complete_sp, help="Sequence parallelism: none | ulysses | fastseq.")] = "none",
    sp_size: Annotated[int | None, typer.Option("--sp-size", help="Ranks per sequence \\[default: all when --sp is set].")] = None,
    nproc: Annotated[int, typer.Option("--nproc", help="Start N local processes (torchrun's machinery).")] = 1,
    num_workers: Annotated[int, typer.Option("--num-workers", help="Data-loading workers per process.")] = 2,
    prediction: Annotated[str, typer.Option("--prediction", help="epsilon | v_prediction.")] = "epsilon",
    cfg_dropout: Annotated[float, typer.Option("--cfg-dropout", help="Probability of training on the null text.")] = 0.1,
    temporal_patch: Annotated[int, typer.Option("--temporal-patch", help="Frames per patch (spatial patch from --model).")] = 1,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Run directory \\[default: HOME/runs/TIME-MODEL].")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="auto (newest checkpoint of the run) or RUN/ckpt-N; options not given are the run's own.")] = None,
    init_from: Annotated[Path | None, typer.Option("--init-from", help="Start a new run from a checkpoint's model and EMA weights (fresh optimizer and data order).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    hang_timeout: Annotated[float, typer.Option("--hang-timeout", help="Several processes: stop the run when a rank makes no progress for this many seconds.")] = 600.0,
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
      opensora train --model DiT/XL-2 --sp ulysses --nproc 8
      torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m opensora_cli train --model DiT/XL-2
    """
    from opensora.training.config import TrainConfig
    from opensora.training.launch import under_torchrun

    s: Settings = ctx.obj
    worker = under_torchrun()
    name = s.get("train.model", model)
    if run_dir is None:
        if resume == "auto" and newest_run(s.home) is not None:
            run_dir = newest_run(s.home)
        else:
            run_dir = s.home / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{name.replace('/', '_')}"
        if not worker and not plan:
            console.print(f"run: {run_dir}")
    saved = _saved_config(resume, run_dir)
    if data is None and saved.get("data"):
        data = Path(saved["data"])  # a resumed run keeps its dataset
    if data is None:
        data = newest_dataset(s.home)
        if data is None:
            raise UserError(f"no --data given and no encoded dataset under {s.home / 'datasets'}; "
                            "run `opensora data encode` first or pass --data")
        if not worker and not as_json:
            console.print(f"data: {data} (the newest encoded dataset; pass --data to choose)")
    cfg = TrainConfig(  # every bad value is reported before the data is read or a process started
        data=str(data), run_dir=str(run_dir), model=name, condition=s.get("train.condition", condition),
        plugin=s.get("train.plugin", plugin), precision=s.get("train.precision", precision),
        batch_size=s.get("train.batch_size", batch_size), max_tokens_per_batch=max_tokens_per_batch,
        lr=s.get("train.lr", lr), warmup_steps=warmup_steps, lr_schedule=lr_schedule, steps=s.get("train.steps", steps),
        ckpt_every=s.get("train.ckpt_every", ckpt_every), keep=s.get("train.keep", keep), ema_decay=ema_decay,
        grad_clip=grad_clip, grad_checkpoint=grad_checkpoint, seed=seed, sp=sp,
        sp_size=sp_size if sp_size is not None else (1 if sp == "none" else 0), num_workers=num_workers,
        prediction_type=prediction, cfg_dropout=cfg_dropout, temporal_patch=temporal_patch, resume=resume,
        init_from=str(init_from) if init_from else None, device=device, hang_timeout=hang_timeout,
    )
    _inherit(ctx, cfg, saved)
    cfg.validate()
    if nproc < 1:
        raise UserError(f"--nproc {nproc} must be at least 1")
    if not os.environ.get(NPROC_CHILD):  # the --nproc parent checked already
        _preflight(cfg, nproc, plan, as_json, force)
        if plan:
            return
    if nproc > 1 and not worker:  # rank 0 of the workers draws the progress and prints the summary
        try:
            relaunch(nproc, {"--run-dir": str(run_dir), "--data": str(data)})
        except KeyboardInterrupt:
            raise Interrupted(_how_to_resume(run_dir)) from None
        return
    if cfg.sp_size == 0:  # --sp without --sp-size: every rank holds a piece of each sequence
        cfg.sp_size = int(os.environ.get("WORLD_SIZE", 1))
        if cfg.sp_size == 1:
            raise UserError(f"--sp {sp} splits each video's sequence over processes, and this is one process; "
                            "pass --nproc N (N >= 2), run under torchrun, or drop --sp")
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
        raise Interrupted(_how_to_resume(run_dir)) from None


# TrainConfig fields a resumed run takes from its checkpoint unless the option is given: the parameter
# name of `train` for each (the layout, device and workers are this launch's own).
_INHERITED = {"model": "model", "condition": "condition", "plugin": "plugin", "precision": "precision",
              "batch_size": "batch_size", "max_tokens_per_batch": "max_tokens_per_batch", "lr": "lr",
              "warmup_steps": "warmup_steps", "lr_schedule": "lr_schedule", "steps": "steps",
              "ckpt_every": "ckpt_every", "keep": "keep", "ema_decay": "ema_decay", "grad_clip": "grad_clip",
              "grad_checkpoint": "grad_checkpoint", "prediction_type": "prediction", "cfg_dropout": "cfg_dropout",
              "temporal_patch": "temporal_patch"}


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


def _inherit(ctx: typer.Context, cfg, saved: dict) -> None:
    """Options not given on the command line (or in OPENSORA_*) take the resumed run's values."""
    for key, param in _INHERITED.items():
        source = ctx.get_parameter_source(param)  # Typer vendors click: compare the enum by name
        if key in saved and getattr(source, "name", None) not in ("COMMANDLINE", "ENVIRONMENT"):
            setattr(cfg, key, saved[key])


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _preflight(cfg, nproc: int, show_all: bool, as_json: bool, force: bool) -> None:
    """Print the buckets (and with --plan the model, layout, memory and time); refuse what cannot fit."""
    from opensora.devices import resolve_device
    from opensora.training.plan import plan_training

    world = max(nproc, int(os.environ.get("WORLD_SIZE", 1)))
    local = max(nproc, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    device = str(resolve_device(cfg.device))
    buckets, p = plan_training(cfg, world, local, device, estimate_time=show_all)
    main_rank = int(os.environ.get("RANK", 0)) == 0
    if as_json and show_all:
        print_json({"buckets": [vars(b) for b in buckets.buckets], "steps_per_epoch": buckets.steps_per_epoch,
                    "model": cfg.model, "params": p.cost.params, "tokens": p.max_tokens,
                    "flops_per_sample": p.cost.flops_per_sample(p.max_tokens), "dp": p.dp_size, "sp": p.sp_size,
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
                          f"{p.cost.flops_per_sample(p.max_tokens) / 1e12:.3g} TFLOP per sample (train step)"),
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
            ("samples/s", f"{r.samples_per_s:.2f}"), ("checkpoint", r.last_checkpoint)]
    console.print(table("training done", rows))
    next_line(f"opensora sample \"a prompt\" --ckpt {r.last_checkpoint}")

