"""Timing and table helpers shared by the benchmark scripts (which are not tests)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table


def median_time(fn: Callable[[], object], runs: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn` over `runs` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_table(title: str, headers: list[str], rows: list[list[object]]) -> None:
    """Print a rich table."""
    t = Table(title=title, title_justify="left")
    for h in headers:
        t.add_column(h)
    for r in rows:
        t.add_row(*(f"{x:.4g}" if isinstance(x, float) else str(x) for x in r))
    Console().print(t)
