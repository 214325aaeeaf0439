"""`opensora sample`: text to mp4 from a trained checkpoint."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from opensora.errors import Interrupted, UserError
from opensora_cli import choices
from opensora_cli.relaunch import relaunch
from opensora_cli.render import console, error_line, progress_bars, table, warning_line
from opensora_cli.settings import Settings, default_help


def sample(
    ctx: typer.Context,
    prompts: Annotated[list[str] | None, typer.Argument(help="One or more prompts.")] = None,
    prompts_file: Annotated[Path | None, typer.Option("--prompts", help="A file with one prompt a line.")] = None,
    ckpt: Annotated[Path | None, typer.Option("--ckpt", help="Checkpoint or model dir \\[default: newest of the newest run].")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Check the checkpoint is this preset.")] = None,
    height: Annotated[int, typer.Option("--height", help="Video height in pixels.")] = 256,
    width: Annotated[int, typer.Option("--width", help="Video width in pixels.")] = 256,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second.")] = 8.0,
    sec: Annotated[float, typer.Option("--sec", help="Length in seconds (frames = sec x fps).")] = 2.0,
    frames: Annotated[int | None, typer.Option("--frames", help="Length in frames (instead of --sec).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps." + default_help("sample.steps"))] = None,
    sampler: Annotated[str | None, typer.Option("--sampler", autocompletion=choices.complete_sampler, help="ddim | dpm." + default_help("sample.sampler"))] = None,
    cfg_scale: Annotated[float | None, typer.Option("--cfg-scale", help="Classifier-free guidance scale." + default_help("sample.cfg_scale"))] = None,
    disable_cfg: Annotated[bool, typer.Option("--disable-cfg", help="One forward per step, no guidance.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Noise seed (sample i of prompt k uses seed + k*n + i).")] = 0,
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Videos per prompt.")] = 1,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use the EMA weights when present.")] = True,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda." + default_help("sample.device"))] = None,
    precision: Annotated[str, typer.Option("--precision", autocompletion=choices.complete_precision, help="auto (bf16 on CUDA, fp32 on CPU, as train) | fp32 | bf16 | fp16.")] = "auto",
    out: Annotated[str, typer.Option("--out", "-o", help="Output mp4 (numbered when several).")] = "sample.mp4",
    preview: Annotated[bool, typer.Option("--preview", help="Also write a PNG contact sheet.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace output videos that exist (refused otherwise).")] = False,
    sp: Annotated[str, typer.Option("--sp", autocompletion=choices.complete_sp, help="Sequence parallelism over --nproc ranks: none | ulysses | fastseq.")] = "none",
    nproc: Annotated[int, typer.Option("--nproc", help="Local processes (with --sp).")] = 1,
) -> None:
    """Generate videos from text with a trained checkpoint; writes mp4 + JSON sidecar.

    [bold]Examples[/bold]
      opensora sample "a person walking" --sec 5
      opensora sample "a red circle moving left" --ckpt RUN/ckpt-0002000 --height 64 --width 64 --preview
    """
    from opensora.checkpoint import newest_checkpoint
    from opensora.sampling.sample import SampleConfig, sample_videos
    from opensora.training.launch import under_torchrun

    s: Settings = ctx.obj
    texts = list(prompts or [])
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise UserError(f"--prompts {prompts_file}: no such file; pass a text file with one prompt a line")
        from opensora.fsutil import read_user_text

        text = read_user_text(prompts_file, "--prompts")
        texts += [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:  # before looking for a checkpoint: the first thing to fix is the missing prompt
        raise UserError("no prompt given; pass one or more prompts or --prompts FILE")
    if ckpt is not None and not (ckpt / "opensora.json").exists() and ckpt.is_dir():
        from opensora.checkpoint import checkpoints_of

        runs = checkpoints_of(ckpt)
        if runs:  # a run directory: its newest checkpoint
            ckpt = runs[-1]
            console.print(f"checkpoint: {ckpt} (the newest of the run)")
    if ckpt is None:
        configured = s.get("sample.ckpt")
        # the demo's runs count too: `opensora demo` then `opensora sample "..."` samples the demo's model
        ckpt = Path(configured) if configured else newest_checkpoint(s.home / "runs", s.home / "demo",
                                                                     s.home / "demo-quick")
        if ckpt is None:
            raise UserError(f"no --ckpt given and no checkpoint under {s.home / 'runs'}; "
                            "train one with `opensora train` or pass --ckpt")
        console.print(f"checkpoint: {ckpt} ({'from the config file' if configured else 'the newest run'})")
    if nproc < 1:
        raise UserError(f"--nproc {nproc} must be at least 1")
    if nproc > 1 and not under_torchrun():
        if sp == "none":
            raise UserError("--nproc needs --sp ulysses or --sp fastseq (the ranks split each video's sequence)")
        relaunch(nproc, {"--ckpt": str(ckpt)})
        return
    worker_rank = int(os.environ.get("RANK", 0))
    cfg = SampleConfig(
        prompts=texts, ckpt=str(ckpt), height=height, width=width, fps=fps, sec=sec, frames=frames,
        steps=s.get("sample.steps", steps), sampler=s.get("sample.sampler", sampler),
        cfg_scale=s.get("sample.cfg_scale", cfg_scale), disable_cfg=disable_cfg, seed=seed, num_samples=num_samples,
        ema=ema, device=s.get("sample.device", device), precision=precision, out=out, overwrite=overwrite, preview=preview, model=model,
        sp=sp, sp_size=int(os.environ.get("WORLD_SIZE", 1)),
    )
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
