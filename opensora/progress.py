"""Progress reporting: the library calls a callback, the CLI renders it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ProgressEvent:
    """One update of a named task: `completed` out of `total` (None when unknown)."""

    task: str
    completed: float
    total: float | None = None
    unit: str = "it"
    info: dict = field(default_factory=dict)


ProgressFn = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """A progress callback that ignores every event."""
