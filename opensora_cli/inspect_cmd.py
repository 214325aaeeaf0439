"""`opensora inspect PATH`: what a video, dataset or checkpoint holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from opensora.inspection import inspect_path
from opensora_cli.render import console, print_json, table


def inspect(
    path: Annotated[Path, typer.Argument(help="A video file, an encoded dataset or a checkpoint directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what a video, an encoded dataset or a checkpoint holds (detected automatically).

    [bold]Examples[/bold]
      opensora inspect videos/video0.mp4
      opensora inspect ~/.local/share/opensora/datasets/msrvtt-train --json
    """
    report = inspect_path(path)
    if as_json:
        print_json(report)
        return
    kind = report["kind"]
    rows = [(k, _fmt(v)) for k, v in report.items() if k not in ("kind", "sample_captions", "shapes", "config", "cache")]
    if "cache" in report:  # what the last encode had to do and what it found stored
        c = report["cache"]
        rows.append(("last encode: videos encoded / reused", f"{c['videos_encoded']} / {c['videos_reused']}"))
        rows.append(("last encode: captions encoded / reused", f"{c['texts_encoded']} / {c['texts_reused']}"))
    console.print(table(f"{kind}: {path}", rows))
    if report.get("shapes"):
        console.print(table("latent shapes", [(s, n) for s, n in report["shapes"].items()], ("shape", "rows")))
    for c in report.get("sample_captions", []):
        console.print(f"  • {escape(c)}")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10000:
        return f"{v:,}"
    return str(v)
