"""A hang watchdog for multi-process runs: a rank that stops making progress stops the whole run.

A collective waits forever for a rank that is stopped (a hung GPU, a stuck NFS read, SIGSTOP), and
the process-group timeout does not always fire (gloo and NCCL both wait in places it does not
cover). Each rank writes a heartbeat file RUN/.heartbeat/rank-NNNNN.json every few seconds from a
thread, with its last finished step. The lowest rank still beating stops the run when

  * a rank's heartbeat is older than `timeout` (its process no longer runs), or
  * no rank has finished a step for `timeout` (a collective that never completes),

naming the rank and its last step. Written by hand: torch's elastic agent has no such check for
local runs, and the run directory is the one place every rank (on any node) can see.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from opensora.fsutil import write_json_atomic

REPORT_ENV = "_OPENSORA_WATCHDOG_REPORT"  # the --nproc parent reads the reason from this file
EXIT_CODE = 75


class Watchdog:
    """Beats for this rank and watches the others; `beat(step)` after each step, `stop()` at the end."""

    def __init__(self, run_dir: Path, rank: int, world_size: int, timeout: float, interval: float | None = None):
        self.dir = Path(run_dir) / ".heartbeat"
        self.rank, self.world, self.timeout = rank, world_size, timeout
        self.interval = interval or max(0.5, min(5.0, timeout / 6))
        self.step, self.step_time = 0, time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="watchdog")

    def start(self, step: int) -> Watchdog:
        """Begin beating (from `step`) and watching."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.step, self.step_time, self.started = step, time.time(), time.time()
        self._write()
        self._thread.start()
        return self

    def beat(self, step: int) -> None:
        """Record a finished step."""
        self.step, self.step_time = step, time.time()

    def stop(self) -> None:
        """Stop beating (the run ends normally)."""
        self._stop.set()

    def _write(self) -> None:
        write_json_atomic(self.dir / f"rank-{self.rank:05d}.json",
                          {"rank": self.rank, "step": self.step, "step_time": self.step_time, "beat": time.time()})

    def _read(self) -> dict[int, dict]:
        beats = {}
        for r in range(self.world):
            try:
                beats[r] = json.loads((self.dir / f"rank-{r:05d}.json").read_text())
            except (OSError, ValueError):
                continue
        return beats

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()
            problem = self._check(self._read(), time.time())
            if problem and not self._stop.is_set():
                self._fail(problem)

    def _check(self, beats: dict[int, dict], now: float) -> str | None:
        live = [r for r, b in beats.items() if now - b["beat"] <= self.timeout]
        if not live or min(live) != self.rank:
            return None  # the lowest live rank reports, once
        for r in range(self.world):
            b = beats.get(r)
            if b is None and now - self.started > self.timeout:
                return f"rank {r} never started beating within {self.timeout:g} s"
            if b is not None and now - b["beat"] > self.timeout:
                return (f"rank {r} stopped responding {now - b['beat']:.0f} s ago (last step {b['step']}); "
                        "the run was stopped")
        last = max(b["step_time"] for b in beats.values())
        if len(beats) == self.world and now - last > self.timeout:
            slow = min(beats.values(), key=lambda b: b["step"])
            return (f"no rank finished a step for {now - last:.0f} s (rank {slow['rank']} is at step {slow['step']}); "
                    "the run was stopped")
        return None

    def _fail(self, problem: str) -> None:
        message = f"{problem}; raise --hang-timeout if steps are this slow, then continue with --resume auto"
        report = os.environ.get(REPORT_ENV)
        if report:
            Path(report).write_text(message)
        else:
            os.write(2, f"error: {message}\n".encode())
        os._exit(EXIT_CODE)  # the main thread is stuck in a collective: leave now; the launcher stops the rest
