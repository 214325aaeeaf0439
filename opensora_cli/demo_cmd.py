"""`opensora demo`: the whole pipeline on the built-in shapes world, offline, on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from opensora.errors import UserError
from opensora_cli.render import console, progress_bars, table
from opensora_cli.settings import Settings


def demo(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Demo directory \\[default: HOME/demo, or HOME/demo-quick with --quick].")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps \\[default: the demo's own].")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Videos per held-out prompt.")] = 3,
    quick: Annotated[bool, typer.Option("--quick", help="A tiny run (a minute): checks the pipeline, learns little.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world, training and sampling.")] = 0,
) -> None:
    """Generate a video world, encode it, train a small DiT, sample held-out prompts, judge them.

    Prompts whose colour x shape x direction were never seen in training are sampled; each video is
    judged for colour and direction. Rerunning continues (finished stages are reused when they were
    built with the same settings; otherwise the directory is rebuilt, with a warning saying why).

    [bold]Examples[/bold]
      opensora demo
      opensora demo --quick --out /tmp/demo
    """
    from opensora.data.shapes import WorldConfig
    from opensora.demo import DEMO_SIZES, DemoConfig, run_demo

    s: Settings = ctx.obj
    for opt, value, low in (("--steps", steps, 1), ("--samples", samples, 1), ("--seed", seed, 0)):
        if value is not None and value < low:
            raise UserError(f"{opt} {value} must be at least {low}")
    out = out or s.home / ("demo-quick" if quick else "demo")  # a quick run never feeds a full one
    cfg = DemoConfig(out=out, seed=seed, samples_per_prompt=samples, world=WorldConfig(seed=seed, sizes=DEMO_SIZES))
    if quick:
        cfg.steps, cfg.sample_steps, cfg.samples_per_prompt = 30, 5, 1
        cfg.world = WorldConfig(seed=seed, videos_per_combo=2, test_videos_per_combo=1, sizes=cfg.world.sizes)
    if steps is not None:
        cfg.steps = steps
    console.print(f"demo directory: {out}")
    with progress_bars() as progress:
        r = run_demo(cfg, progress)
    rows = [(escape(j["prompt"]), j["colour"], j["direction"] or "-", "yes" if j["colour_ok"] and j["direction_ok"] else "no",
             Path(j["video"]).name) for j in r.judged]
    console.print(table("held-out prompts (never seen in training)", rows, ("prompt", "colour", "direction", "match", "video")))
    console.print(f"colour accuracy {r.colour_accuracy:.0%}, direction accuracy {r.direction_accuracy:.0%} "
                  f"({len(r.judged)} videos, {r.train_seconds:.0f} s of training)")
    console.print(f"videos and previews: {r.out / 'samples'}")
    console.print(f"checkpoint: {r.checkpoint}")
