"""`opensora runs`: the training runs under HOME, and how to continue or sample each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opensora_cli.render import console, plain_line, print_json, table
from opensora_cli.settings import Settings


def resume_command(run: dict) -> str:
    """`opensora train --resume auto` for the run (it takes its other settings from its checkpoint)."""
    config = run["config"]
    flags = f"--data {config['data']}" if config.get("data") else ""
    if config.get("sp", "none") != "none":
        flags += f" --sp {config['sp']} --nproc {config.get('nproc') or config.get('sp_size') or 2}"
    return f"opensora train --resume auto --run-dir {run['run']} {flags}"


def sample_command(run: dict) -> str | None:
    """`opensora sample` from the run's newest checkpoint (None before its first checkpoint)."""
    return f'opensora sample "a prompt" --ckpt {run["run"]}' if run["newest_checkpoint"] else None


def runs(
    ctx: typer.Context,
    runs_dir: Annotated[Path | None, typer.Option("--dir", help="Where the runs are \\[default: HOME/runs and the demos' runs].")] = None,
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
    found = list_runs(runs_dir) if runs_dir else list_runs(root, s.home / "demo", s.home / "demo-quick")
    if as_json:
        print_json([{**r, "resume": resume_command(r), "sample": sample_command(r)} for r in found])
        return
    if not found:
        console.print(f"no runs under {root}; start one with `opensora train`")
        return
    rows = [(r["run"], r["model"], f"{r['steps']}/{r['target_steps']}",
             "-" if r["last_loss"] is None else f"{r['last_loss']:.4f}",
             Path(r["newest_checkpoint"]).name if r["newest_checkpoint"] else "-") for r in found]
    console.print(table("runs, newest first", rows, ("run", "model", "steps", "last loss", "newest checkpoint")))
    newest = found[0]
    plain_line(f"resume the newest: {resume_command(newest)}")
    if sample_command(newest):
        plain_line(f"sample from it:    {sample_command(newest)}")
