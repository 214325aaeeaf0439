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
    from opensora.training.metrics import read_summary

    done = read_summary(run)  # a finished run's own summary; a run in progress has only its metrics
    last = {"step": done["steps"], "loss": done["last_loss"]} if done else _last_metrics(run / "metrics.jsonl") or {}
    return {
        "run": str(run), "model": config.get("model"), "condition": config.get("condition"),
        "steps": last.get("step", 0), "target_steps": config.get("steps"), "last_loss": last.get("loss"),
        "newest_checkpoint": str(ckpts[-1]) if ckpts else None,
        "config": config,
    }


def run_dirs(*runs_dirs: Path) -> list[Path]:
    """The directories under any of `runs_dirs`, most recently modified first."""
    found = [r for d in map(Path, runs_dirs) if d.is_dir() for r in d.iterdir() if r.is_dir()]
    return sorted(found, key=lambda r: r.stat().st_mtime, reverse=True)


def newest_run(*runs_dirs: Path) -> Path | None:
    """The most recently modified run directory under any of `runs_dirs`."""
    runs = run_dirs(*runs_dirs)
    return runs[0] if runs else None


def newest_checkpoint(*runs_dirs: Path) -> Path | None:
    """The newest checkpoint of the newest run (that has one) under any of `runs_dirs`."""
    for run in run_dirs(*runs_dirs):
        ckpts = checkpoints_of(run)
        if ckpts:
            return ckpts[-1]
    return None


def list_runs(*runs_dirs: Path) -> list[dict]:
    """Every run under any of `runs_dirs`, newest first."""
    return [d for d in map(describe_run, run_dirs(*runs_dirs)) if d is not None]
