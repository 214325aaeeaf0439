"""MSR-VTT's official layout to per-split `annotations.json` + `videos/` (links, not copies)."""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from opensora.errors import UserError
from opensora.fsutil import write_json_atomic
from opensora.progress import ProgressEvent, ProgressFn, no_progress

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"}
SPLITS = ("train", "val", "test")


@dataclass
class CollateResult:
    """Per-split counts and what could not be paired."""

    out: Path
    videos: dict[str, int] = field(default_factory=dict)
    captions: dict[str, int] = field(default_factory=dict)
    without_captions: list[str] = field(default_factory=list)
    without_video: list[str] = field(default_factory=list)
    copied: int = 0


def find_annotations(root: Path) -> list[Path]:
    """Every JSON file under `root` in MSR-VTT's official format (`videos` + `sentences`)."""
    found = []
    for p in sorted(Path(root).rglob("*.json")):
        if p.stat().st_size == 0:
            continue
        try:
            with open(p, encoding="utf-8") as f:
                head = f.read(4096)
            if '"videos"' not in head and '"sentences"' not in head and p.stat().st_size > 4096:
                # Cheap filter first; a big file only gets parsed if its head looks right.
                continue
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and "videos" in data and "sentences" in data:
            found.append(p)
    return found


def _index_videos(root: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for p in sorted(Path(root).rglob("*")):
        if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file():
            index.setdefault(p.stem, p)
    return index


def _link(src: Path, dst: Path) -> bool:
    """Symlink `dst` -> `src`; hard link or copy where symlinks fail. True if copied."""
    dst.unlink(missing_ok=True)
    try:
        os.symlink(src.resolve(), dst)
        return False
    except OSError:
        pass
    try:
        os.link(src, dst)
        return False
    except OSError:
        shutil.copy2(src, dst)
        return True


def collate_msrvtt(dataset_dir: Path, out: Path, progress: ProgressFn = no_progress) -> CollateResult:
    """Write OUT/{split}/annotations.json and OUT/{split}/videos/ from an MSR-VTT directory."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise UserError(f"--dataset-dir {dataset_dir}: no such directory; run `opensora data download` first")
    ann_files = find_annotations(dataset_dir)
    if not ann_files:
        raise UserError(
            f"no MSR-VTT annotation JSON (with 'videos' and 'sentences') under {dataset_dir}; "
            "point --dataset-dir at the extracted MSR-VTT folder"
        )
    split_of: dict[str, str] = {}
    captions: dict[str, list[str]] = defaultdict(list)
    for p in ann_files:
        data = json.loads(p.read_text(encoding="utf-8"))
        for v in data["videos"]:
            split = str(v.get("split", "train")).lower()
            split_of[v["video_id"]] = "val" if split == "validate" else split
        for s in data["sentences"]:
            text = str(s.get("caption", "")).strip()
            if text and text not in captions[s["video_id"]]:
                captions[s["video_id"]].append(text)
    videos = _index_videos(dataset_dir)
    result = CollateResult(out=Path(out))
    result.without_captions = sorted(v for v in videos if not captions.get(v))
    result.without_video = sorted(v for v in captions if v not in videos)
    per_split: dict[str, list[dict]] = defaultdict(list)
    ids = sorted((v for v in captions if v in videos), key=_natural)
    for i, vid in enumerate(ids, 1):
        split = split_of.get(vid, "train")
        src = videos[vid]
        vdir = Path(out) / split / "videos"
        vdir.mkdir(parents=True, exist_ok=True)
        result.copied += _link(src, vdir / src.name)
        per_split[split].append({"file": src.name, "captions": captions[vid]})
        progress(ProgressEvent("collate", i, len(ids), unit="videos"))
    for split, rows in per_split.items():
        write_json_atomic(Path(out) / split / "annotations.json", rows)
        result.videos[split] = len(rows)
        result.captions[split] = sum(len(r["captions"]) for r in rows)
    return result


def _natural(video_id: str) -> tuple:
    digits = "".join(ch for ch in video_id if ch.isdigit())
    return (video_id.rstrip("0123456789"), int(digits) if digits else -1, video_id)
