"""`opensora demo`: the whole pipeline on the built-in shapes world, offline, on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from opensora_cli.render import console, progress_bars, table
from opensora_cli.settings import Settings, build_config


def demo(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", "-o")] = None,
    steps: Annotated[int | None, typer.Option("--steps")] = None,
    samples_per_prompt: Annotated[int | None, typer.Option("--samples")] = None,
    quick: Annotated[bool | None, typer.Option("--quick/--full")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    objective: Annotated[str | None, typer.Option("--objective")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    frame_condition: Annotated[float | None, typer.Option("--frame-condition")] = None,
) -> None:
    """Generate a video world, encode it, train a small DiT (or STDiT), sample held-out prompts, judge them.

    Prompts whose colour x shape x direction were never seen in training are sampled; each video is
    judged for colour and direction. Rerunning continues (finished stages are reused when they were
    built with the same settings; otherwise the directory is rebuilt, with a warning saying why).

    [bold]Examples[/bold]
      opensora demo
      opensora demo --quick --out /tmp/demo
      opensora demo --model STDiT/T-4      # spatial-temporal attention; reuses the world and dataset
      opensora demo --model STDiT/T-4 --frame-condition 0.5   # also image-to-video from held-out first frames
    """
    from opensora.demo import run_demo

    s: Settings = ctx.obj
    cfg = build_config(s, "demo", ctx.params)
    cfg.validate()
    out = cfg.out = cfg.out or s.home / ("demo-quick" if cfg.quick else "demo")  # a quick run never feeds a full one
    console.print(f"demo directory: {out}")
    with progress_bars() as progress:
        r = run_demo(cfg, progress)
    rows = [(escape(j["prompt"]), j["colour"], j["direction"] or "-", "yes" if j["colour_ok"] and j["direction_ok"] else "no",
             Path(j["video"]).name) for j in r.judged]
    console.print(table("held-out prompts (never seen in training)", rows, ("prompt", "colour", "direction", "match", "video")))
    console.print(f"colour accuracy {r.colour_accuracy:.0%}, direction accuracy {r.direction_accuracy:.0%} "
                  f"({len(r.judged)} videos, {r.train_seconds:.0f} s of training, {r.sample_seconds:.0f} s of sampling)")
    if r.continued:
        colour, direction = r.continued_accuracy()
        console.print(f"image-to-video from held-out clips' first frames: colour accuracy {colour:.0%}, direction "
                      f"accuracy {direction:.0%} ({len(r.continued)} videos in {r.out / 'continued'})")
    console.print(f"videos and previews: {r.out / 'samples'}")
    console.print(f"checkpoint: {r.checkpoint}")
