"""`opensora doctor`: check this machine and installation; a fix for each problem."""

from __future__ import annotations

import typer

from opensora_cli.render import console, plain_line, table
from opensora_cli.settings import Settings


def doctor(ctx: typer.Context) -> None:
    """Report Python, torch (build, CUDA, devices, bf16), Colossal-AI, the libraries, the hub setting,
    the config file and HOME, with a one-line fix for each problem; exit 1 if something needed is missing.

    [bold]Example[/bold]: opensora doctor
    """
    from opensora.doctor import run_checks

    s: Settings = ctx.obj
    checks = run_checks(s.file, s.home, lambda: s.values)
    rows = [(c.name, c.found, "ok" if c.ok else ("PROBLEM" if c.needed else "note")) for c in checks]
    console.print(table("opensora doctor", rows, ("check", "found", "")))
    for c in checks:
        if not c.ok:
            plain_line(f"fix ({c.name}): {c.fix}")
    if any(not c.ok and c.needed for c in checks):
        raise typer.Exit(1)
