"""Describe a video file, an encoded dataset or a checkpoint, detected from what the path holds."""

from __future__ import annotations

from pathlib import Path

from opensora.data.video import VideoError, probe_video
from opensora.errors import UserError


def inspect_path(path: Path) -> dict:
    """Return a JSON-able report; `kind` says what `path` is."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory; pass a video, dataset or checkpoint path")
    if path.is_dir():
        from opensora.checkpoint import describe_checkpoint, is_checkpoint
        from opensora.data.dataset import describe_dataset, is_dataset

        if is_dataset(path):
            return {"kind": "dataset", **describe_dataset(path)}
        if is_checkpoint(path):
            return {"kind": "checkpoint", **describe_checkpoint(path)}
        raise UserError(f"{path}: not an encoded dataset or a checkpoint directory")
    try:
        return {"kind": "video", **probe_video(path).to_dict()}
    except VideoError as e:
        raise UserError(f"{path}: not a readable video ({e.reason}); pass a video, dataset or checkpoint") from None
