"""`opensora sample`: text to mp4 from a trained checkpoint."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from opensora.errors import Interrupted, UserError
from opensora_cli.relaunch import relaunch
from opensora_cli.render import console, error_line, progress_bars, table, warning_line
from opensora_cli.settings import Settings, build_config


def sample(
    ctx: typer.Context,
    prompts: Annotated[list[str] | None, typer.Argument(help="One or more prompts.")] = None,
    prompts_file: Annotated[Path | None, typer.Option("--prompts")] = None,
    ckpt: Annotated[Path | None, typer.Option("--ckpt")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    height: Annotated[int | None, typer.Option("--height")] = None,
    width: Annotated[int | None, typer.Option("--width")] = None,
    fps: Annotated[float | None, typer.Option("--fps")] = None,
    sec: Annotated[float | None, typer.Option("--sec")] = None,
    frames: Annotated[int | None, typer.Option("--frames")] = None,
    steps: Annotated[int | None, typer.Option("--steps")] = None,
    sampler: Annotated[str | None, typer.Option("--sampler")] = None,
    cfg_scale: Annotated[float | None, typer.Option("--cfg-scale")] = None,
    disable_cfg: Annotated[bool | None, typer.Option("--disable-cfg/--enable-cfg")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    num_samples: Annotated[int | None, typer.Option("--num-samples", "-n")] = None,
    ema: Annotated[bool | None, typer.Option("--ema/--no-ema")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    precision: Annotated[str | None, typer.Option("--precision")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o")] = None,
    preview: Annotated[bool | None, typer.Option("--preview/--no-preview")] = None,
    image: Annotated[Path | None, typer.Option("--image")] = None,
    extend: Annotated[Path | None, typer.Option("--extend")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace output videos that exist (refused otherwise).")] = False,
    sp: Annotated[str | None, typer.Option("--sp")] = None,
    nproc: Annotated[int | None, typer.Option("--nproc")] = None,
) -> None:
    """Generate videos from text with a trained checkpoint; writes mp4 + JSON sidecar.

    [bold]Examples[/bold]
      opensora sample "a person walking" --sec 5
      opensora sample "a red circle moving left" --ckpt RUN/ckpt-0002000 --height 64 --width 64 --preview
      opensora sample "the dog runs to the left" --image first.png --frames 16   # STDiT + --frame-condition
      opensora sample "the car keeps driving" --extend clip.mp4 --frames 32
    """
    from opensora.checkpoint import checkpoints_of
    from opensora.parallel.launch import under_torchrun
    from opensora.runs import newest_checkpoint
    from opensora.sampling.sample import sample_videos

    s: Settings = ctx.obj
    cfg = build_config(s, "sample", ctx.params, overwrite=overwrite)
    cfg.prompts = list(prompts or [])
    if cfg.prompts_file is not None:
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise UserError(f"--prompts {path}: no such file; pass a text file with one prompt a line")
        from opensora.fsutil import read_user_text

        cfg.prompts += [line.strip() for line in read_user_text(path, "--prompts").splitlines() if line.strip()]
    if not cfg.prompts:  # before looking for a checkpoint: the first thing to fix is the missing prompt
        raise UserError("no prompt given; pass one or more prompts or --prompts FILE")
    cfg.validate()
    if cfg.ckpt is not None and not (Path(cfg.ckpt) / "opensora.json").exists() and Path(cfg.ckpt).is_dir():
        found = checkpoints_of(Path(cfg.ckpt))
        if found:  # a run directory: its newest checkpoint
            cfg.ckpt = str(found[-1])
            console.print(f"checkpoint: {cfg.ckpt} (the newest of the run)")
    if cfg.ckpt is None:
        # the demo's runs count too: `opensora demo` then `opensora sample "..."` samples the demo's model
        newest = newest_checkpoint(s.home / "runs", s.home / "demo", s.home / "demo-quick")
        if newest is None:
            raise UserError(f"no --ckpt given and no checkpoint under {s.home / 'runs'}; "
                            "train one with `opensora train` or pass --ckpt")
        cfg.ckpt = str(newest)
        console.print(f"checkpoint: {cfg.ckpt} (the newest run)")
    elif s.source("sample.ckpt", ckpt) == "config":
        console.print(f"checkpoint: {cfg.ckpt} (from the config file)")
    if cfg.nproc > 1 and not under_torchrun():
        relaunch(cfg.nproc, {"--ckpt": cfg.ckpt})
        return
    worker_rank = int(os.environ.get("RANK", 0))
    if worker_rank != 0:
        sample_videos(cfg)
        return
    def announce(plan) -> None:  # before the first step: never silent, whatever the size
        est = f", about {_duration(plan.seconds)} on {plan.device}" if plan.seconds else ""
        console.print(f"{plan.videos} video{'s' if plan.videos > 1 else ''} of {plan.frames}x{plan.height}x{plan.width} "
                      f"(TxHxW; {plan.tokens:,} tokens), {plan.steps} steps x {plan.forwards_per_step} "
                      f"forward{'s' if plan.forwards_per_step > 1 else ''}{est}")
        if plan.seconds and plan.seconds > 180 and plan.device == "cpu":
            warning_line(f"this takes about {_duration(plan.seconds)} on the CPU; a GPU (--device cuda), fewer --steps, "
                         "fewer --frames or a smaller size is faster")

    try:
        with progress_bars() as progress:
            results = _interruptible(lambda: sample_videos(cfg, progress, announce))
    except Interrupted as e:
        # The sampling thread may be inside a long tensor op: leave without the interpreter's teardown,
        # which would abort on it (SIGABRT).
        error_line(str(e), hint_debug=False)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    rows = [(escape(r.prompt), r.seed, "x".join(map(str, r.shape[:3])), r.video,
             r.preview or "-") for r in results]
    console.print(table("samples", rows, ("prompt", "seed", "TxHxW", "video", "preview")))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _interruptible(work):
    """Run `work` in a thread so that Ctrl-C acts at once, not when a long tensor op returns.

    A denoising step of a big video on a CPU can run for a minute inside one operation, which
    Python cannot interrupt; the main thread waits in short slices and leaves on Ctrl-C. Outputs
    are written atomically, so the abandoned step leaves nothing half-written.
    """
    import threading

    box: dict = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as e:  # handed to the main thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name="sample")
    t.start()
    try:
        while t.is_alive():
            t.join(0.2)
    except KeyboardInterrupt:
        raise Interrupted("interrupted; videos already written are kept, the one in progress was not written") from None
    if "error" in box:
        raise box["error"]
    return box["result"]
