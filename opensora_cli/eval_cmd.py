"""`opensora eval`: CLIP score, FVD and the world's accuracy of one or more checkpoints on a split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opensora.errors import UserError
from opensora_cli.render import console, print_json, progress_bars, table
from opensora_cli.settings import Settings, build_config

METRICS = (("val_loss", "validation loss", "{:.4f}"), ("clip_score", "CLIP score", "{:.2f}"), ("fvd", "FVD", "{:.2f}"),
           ("colour_accuracy", "colour accuracy", "{:.0%}"), ("direction_accuracy", "direction accuracy", "{:.0%}"))


def eval_command(
    ctx: typer.Context,
    ckpts: Annotated[list[Path] | None, typer.Argument(help="Checkpoints (RUN/ckpt-N) or runs (their newest).")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d")] = None,
    samples: Annotated[int | None, typer.Option("--samples", "-n")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    steps: Annotated[int | None, typer.Option("--steps")] = None,
    sampler: Annotated[str | None, typer.Option("--sampler")] = None,
    cfg_scale: Annotated[float | None, typer.Option("--cfg-scale")] = None,
    clip: Annotated[str | None, typer.Option("--clip")] = None,
    i3d: Annotated[Path | None, typer.Option("--i3d")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    precision: Annotated[str | None, typer.Option("--precision")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o")] = None,
    save_videos: Annotated[bool | None, typer.Option("--save-videos/--no-save-videos")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Evaluate checkpoints on a split: CLIP score, FVD and (on the built-in world) colour and direction accuracy.

    The split's first --samples videos are sampled from their first captions at fixed seeds and
    compared with the split's own videos; the protocol of each figure is printed beside it and
    written to the results JSON. Two checkpoints are shown side by side.

    [bold]Examples[/bold]
      opensora eval RUN/ckpt-0002000 --data datasets/msrvtt-val --clip openai/clip-vit-base-patch32 --i3d i3d_torchscript.pt
      opensora eval RUN/ckpt-0001000 RUN/ckpt-0002000 --data collated/val --i3d i3d_torchscript.pt -n 256
      opensora eval ~/.local/share/opensora/demo/run --data ~/.local/share/opensora/demo/collated/test
    """
    from opensora.checkpoint import checkpoints_of, is_checkpoint
    from opensora.evaluation.evaluate import default_out, evaluate, write_results

    s: Settings = ctx.obj
    cfg = build_config(s, "eval", ctx.params)
    cfg.ckpts = []
    for c in ckpts or []:
        found = checkpoints_of(c) if c.is_dir() and not is_checkpoint(c) else []
        cfg.ckpts.append(str(found[-1] if found else c))  # a run directory: its newest checkpoint
    cfg.validate()
    for c in cfg.ckpts:
        if not is_checkpoint(Path(c)):
            raise UserError(f"{c}: not a checkpoint or a run with one; pass a RUN/ckpt-N directory")
    results = []
    with progress_bars() as progress:
        for c in cfg.ckpts:
            results.append(evaluate(cfg, Path(c), progress))
            if cfg.out is None:
                write_results(results[-1:], default_out(Path(c), Path(cfg.data)))
    if cfg.out is not None:
        write_results(results, Path(cfg.out))
    if as_json:
        print_json({"results": [r.to_dict() for r in results]})
        return
    rows = [("step", *(r.step for r in results)), ("videos", *(r.samples for r in results))]
    rows += [(label, *(fmt.format(r.metrics[key]) if key in r.metrics else "-" for r in results))
             for key, label, fmt in METRICS if any(key in r.metrics for r in results)]
    console.print(table(f"eval on {cfg.data}", rows, ("", *(Path(r.checkpoint).name for r in results))))
    for key, text in results[0].protocol.items():
        console.print(f"[dim]{key}: {text}[/dim]", highlight=False, soft_wrap=True)
    missing = [flag for flag, given in (("--clip MODEL for the CLIP score", cfg.clip), ("--i3d FILE for FVD", cfg.i3d))
               if given is None]
    if missing:
        console.print(f"[dim]pass {' and '.join(missing)}[/dim]", highlight=False)
    for r in results:
        if r.skipped:
            console.print(f"[yellow]{r.checkpoint}: {len(r.skipped)} reference videos skipped (first: {r.skipped[0]})[/yellow]")
    written = [cfg.out] if cfg.out is not None else [default_out(Path(c), Path(cfg.data)) for c in cfg.ckpts]
    console.print("results: " + ", ".join(map(str, written)), highlight=False)
