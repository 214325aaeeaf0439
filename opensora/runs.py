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
        return None
    if not isinstance(config, dict) or "run_dir" not in config or "model" not in config:
        return None  # some other config.json (a model directory beside the run, say)
    ckpts = checkpoints_of(run)
    last = _last_metrics(run / "metrics.jsonl") or {}
    return {
        "run": str(run), "model": config.get("model"), "condition": config.get("condition"),
        "steps": last.get("step", 0), "target_steps": config.get("steps"), "last_loss": last.get("loss"),
        "newest_checkpoint": str(ckpts[-1]) if ckpts else None,
        "config": config,
    }


def list_runs(*runs_dirs: Path) -> list[dict]:
    """Every run under any of `runs_dirs`, newest first."""
    dirs = [p for d in map(Path, runs_dirs) if d.is_dir() for p in d.iterdir() if p.is_dir()]
    found = [d for d in map(describe_run, dirs) if d is not None]
    return sorted(found, key=lambda d: Path(d["run"]).stat().st_mtime, reverse=True)
