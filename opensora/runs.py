"""Training runs under a directory: model, progress, newest checkpoint, last loss, what to run next."""

from __future__ import annotations

import json
from pathlib import Path

from opensora.checkpoint import checkpoints_of


def _last_metrics(path: Path) -> dict | None:
    """The last whole line of metrics.jsonl (a torn last line, from a killed run, is skipped)."""
    if not path.exists():
        return None
    for line in reversed(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def describe_run(run: Path) -> dict | None:
    """A JSON-able summary of the run in `run`, or None if it holds no run."""
    run = Path(run)
    config_file = run / "config.json"
    if not config_file.exists():
        return None
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError:
        config = {}
    ckpts = checkpoints_of(run)
    last = _last_metrics(run / "metrics.jsonl") or {}
    return {
        "run": str(run), "model": config.get("model"), "condition": config.get("condition"),
        "steps": last.get("step", 0), "target_steps": config.get("steps"), "last_loss": last.get("loss"),
        "newest_checkpoint": str(ckpts[-1]) if ckpts else None,
        "resume": f"opensora train --resume auto --run-dir {run}",
        "sample": f'opensora sample "a prompt" --ckpt {run}' if ckpts else None,
    }


def list_runs(runs_dir: Path) -> list[dict]:
    """Every run under `runs_dir`, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = [d for d in (describe_run(p) for p in runs_dir.iterdir() if p.is_dir()) if d is not None]
    return sorted(found, key=lambda d: Path(d["run"]).stat().st_mtime, reverse=True)
