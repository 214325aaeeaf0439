"""What a run reports: one record per step to metrics.jsonl, TensorBoard and the progress callback,
and summary.json at the end. Only rank 0 writes; the others call the same methods for nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from opensora.fsutil import write_json_atomic
from opensora.progress import ProgressEvent, ProgressFn, no_progress

if TYPE_CHECKING:
    import numpy as np


class MetricsLogger:
    """Per-step metrics of the run in `run_dir`, continuing after `start_step` (records past it are dropped)."""

    def __init__(self, run_dir: Path, start_step: int, total_steps: int, progress: ProgressFn = no_progress,
                 enabled: bool = True):
        self.path, self.total, self.progress, self.enabled = Path(run_dir) / "metrics.jsonl", total_steps, progress, enabled
        self.writer = None
        if enabled:
            _truncate_metrics(self.path, start_step)  # steps after the checkpoint are redone
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events at and after it: the checkpoint's own step was logged and stays
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"),
                                        purge_step=start_step + 1 if start_step else None)
            self.progress(ProgressEvent("train", start_step, total_steps, unit="steps"))

    def log(self, step: int, record: dict, info: dict) -> None:
        """Append `record` for `step` (JSONL + TensorBoard scalars) and show `info` on the progress line."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **record}) + "\n")
        for k, v in record.items():
            self.writer.add_scalar(_tag(k), float(v), step)
        self.progress(ProgressEvent("train", step, self.total, unit="steps", info=info))

    def images(self, step: int, images: list[tuple[str, np.ndarray]]) -> None:
        """(name, HxWx3 uint8) images to TensorBoard under preview/NN (the name is in the tag's text)."""
        if not self.enabled:
            return
        for i, (name, image) in enumerate(images):
            self.writer.add_image(f"preview/{i:02d}", image, step, dataformats="HWC")
            self.writer.add_text(f"preview/{i:02d}", name, step)
        self.writer.flush()

    def close(self, summary: dict | None = None) -> None:
        """Flush TensorBoard and write summary.json (what `opensora runs` and the CLI read)."""
        if not self.enabled:
            return
        self.writer.close()
        if summary is not None:
            write_json_atomic(self.path.parent / "summary.json", summary)


def _tag(key: str) -> str:
    """TensorBoard tag of a record key: val_loss -> val/loss, preview_seconds -> preview/seconds, else train/KEY."""
    group, _, name = key.partition("_")
    return f"{group}/{name}" if group in ("val", "preview") and name else f"train/{key}"


def read_summary(run_dir: Path) -> dict | None:
    """The summary.json a finished `train` wrote in `run_dir`, or None."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step`; a line torn by a kill (the last one) is dropped, not fatal."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("step", step + 1) <= step:
            keep.append(line)
    path.write_text("".join(x + "\n" for x in keep))
