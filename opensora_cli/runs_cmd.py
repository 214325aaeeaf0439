"""`opensora runs`: the training runs under HOME, and how to continue or sample each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opensora_cli.render import console, print_json, table
from opensora_cli.settings import Settings


def runs(
    ctx: typer.Context,
    runs_dir: Annotated[Path | None, typer.Option("--dir", help="Where the runs are \\[default: HOME/runs].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List training runs: model, steps done, newest checkpoint, last loss, and the commands to go on.

    [bold]Examples[/bold]
      opensora runs
      opensora runs --dir /shared/runs --json
    """
    from opensora.runs import list_runs

    s: Settings = ctx.obj
    root = runs_dir or s.home / "runs"
    found = list_runs(root)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print(f"no runs under {root}; start one with `opensora train`")
        return
    rows = [(Path(r["run"]).name, r["model"], f"{r['steps']}/{r['target_steps']}",
             "-" if r["last_loss"] is None else f"{r['last_loss']:.4f}",
             Path(r["newest_checkpoint"]).name if r["newest_checkpoint"] else "-") for r in found]
    console.print(table(f"runs in {root}", rows, ("run", "model", "steps", "last loss", "newest checkpoint")))
    newest = found[0]
    console.print(f"resume the newest: {newest['resume']}", soft_wrap=True, highlight=False, markup=False)
    if newest["sample"]:
        console.print(f"sample from it:    {newest['sample']}", soft_wrap=True, highlight=False, markup=False)
