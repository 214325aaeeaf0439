"""Console output: progress bars from library events, tables, and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from opensora.progress import ProgressEvent, ProgressFn

console = Console()
err_console = Console(stderr=True)


def _columns(unit: str):
    if unit == "bytes":
        return (DownloadColumn(), TransferSpeedColumn())
    return (MofNCompleteColumn(), TextColumn("{task.fields[rate]}"))


PLAIN_EVERY_S = 10.0  # a plain progress line at most this often when stderr is not a terminal


def _plain_progress(every_s: float) -> ProgressFn:
    """Progress for a pipe or a log file: one plain line per task every `every_s` seconds, and at its end."""
    import time

    # task -> (start time, last print, first completed, last completed)
    state: dict[str, tuple[float, float, float, float]] = {}

    def on_event(ev: ProgressEvent) -> None:
        now = time.monotonic()
        if ev.task in state and ev.completed < state[ev.task][3]:
            del state[ev.task]  # the task started over (the demo samples one prompt after another)
        start, last, first, _ = state.setdefault(ev.task, (now, float("-inf"), ev.completed, ev.completed))
        done = ev.total is not None and ev.completed >= ev.total
        state[ev.task] = (start, last, first, ev.completed)
        if not done and now - last < every_s:
            return
        state[ev.task] = (start, now, first, ev.completed)
        rate = (ev.completed - first) / (now - start) if now > start else 0.0
        parts = [f"{ev.task} {ev.completed:g}/{ev.total:g}" if ev.total is not None else f"{ev.task} {ev.completed:g}"]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in ev.info.items()]
        if rate > 0 and ev.unit != "bytes":
            parts.append(f"{rate:.3g} {ev.unit}/s")
        if rate > 0 and ev.total is not None and not done:
            parts.append(f"eta {int((ev.total - ev.completed) / rate)}s")
        err_console.print("  ".join(parts), soft_wrap=True, highlight=False, markup=False)

    return on_event


@contextmanager
def progress_bars() -> Iterator[ProgressFn]:
    """Yield a ProgressFn that draws one rich bar per task name (on stderr), or plain lines in a pipe."""
    if not err_console.is_terminal:  # rich would draw each bar once, at the end
        yield _plain_progress(PLAIN_EVERY_S)
        return
    bars: dict[str, tuple[Progress, TaskID]] = {}
    started: list[Progress] = []

    def on_event(ev: ProgressEvent) -> None:
        if ev.task not in bars:
            p = Progress(
                TextColumn("[bold blue]{task.description:<10}"),
                BarColumn(),
                *_columns(ev.unit),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=err_console,
                transient=False,
            )
            p.start()
            started.append(p)
            bars[ev.task] = (p, p.add_task(ev.task, total=ev.total, rate="", info=""))
        p, tid = bars[ev.task]
        task = p.tasks[tid]
        rate = ""
        if ev.unit != "bytes" and task.elapsed:
            speed = ev.completed / task.elapsed if task.elapsed > 0 else 0
            rate = f"{speed:.2f} {ev.unit}/s"
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in ev.info.items())
        p.update(tid, completed=ev.completed, total=ev.total, rate=rate, info=info)

    try:
        yield on_event
    finally:
        for p in started:
            p.stop()


def table(title: str, rows: list[tuple], headers: tuple[str, ...] = ("", "")) -> Table:
    """A two-or-more column rich table."""
    t = Table(title=title, show_header=any(headers), title_justify="left")
    for h in headers:
        t.add_column(h, overflow="fold")  # a path is folded onto the next line, never cut with "…"
    for r in rows:
        t.add_row(*(Text(str(x)) for x in r))  # cells are data, never markup
    return t


def print_json(obj: object) -> None:
    """Print JSON on stdout with no styling (for --json)."""
    print(json.dumps(obj, indent=2, default=str))


def error_line(message: str, hint_debug: bool = True) -> None:
    """Print one red error line on stderr."""
    suffix = " [dim](--debug for a traceback)[/dim]" if hint_debug else ""
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}{suffix}", highlight=False, soft_wrap=True)


def warning_line(message: str) -> None:
    """Print one yellow warning line on stderr."""
    err_console.print(f"[bold yellow]warning:[/bold yellow] {escape(message)}", highlight=False, soft_wrap=True)


def plain_line(text: str) -> None:
    """Print `text` on one line, never wrapped and never styled, so a command or path in it copies whole."""
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def next_line(command: str) -> None:
    """Print the `next:` command (see plain_line)."""
    plain_line(f"next: {command}")
