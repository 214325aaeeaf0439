"""Videos + captions -> an Arrow dataset of video latents and text features, resumable by shard.

Layout of the output directory:
  manifest.json          settings (compression, text encoder, fps, ...) and, once done, the totals
  shards/shard-NNNNN.arrow   rows of one block of videos, written by datasets' ArrowWriter; a shard
                         appears (atomic rename) only when complete, so a rerun after a crash
                         continues with the first missing shard and never duplicates rows
  shards/shard-NNNNN.json    what happened to each video of the shard (errors, filtered)
  errors.jsonl           every skipped video or pair with its reason
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from opensora.compression import load_compressor
from opensora.data.captions import CaptionedVideo, load_captions
from opensora.data.dataset import FEATURES_VERSION, dataset_features
from opensora.data.video import VideoError, read_video
from opensora.errors import UserError
from opensora.fsutil import write_json_atomic, write_text_atomic
from opensora.progress import ProgressEvent, ProgressFn, no_progress


@dataclass
class EncodeConfig:
    """Everything `encode_dataset` needs; the CLI fills it from flags and the user config."""

    captions: Path
    videos: Path
    out: Path
    compression: str = "raw"
    vae: str | None = None
    text_encoder: str = "openai/clip-vit-base-patch32"
    fps: float | None = None
    max_seconds: float | None = None
    max_frames: int | None = None
    size: tuple[int, int] | None = None
    device: str = "cpu"
    batch_size: int = 16
    num_workers: int = 2
    shard_size: int = 32
    overwrite: bool = False

    def settings(self) -> dict:
        """The settings that must not change between a crashed run and its resumption."""
        return {"captions": str(Path(self.captions).resolve()), "videos": str(Path(self.videos).resolve()),
                "compression": self.compression, "vae": self.vae, "text_encoder": self.text_encoder,
                "fps": self.fps, "max_seconds": self.max_seconds, "max_frames": self.max_frames,
                "size": list(self.size) if self.size else None, "shard_size": self.shard_size,
                "features_version": FEATURES_VERSION}


@dataclass
class EncodeSummary:
    """Totals of one encode run (over every shard, including ones written by earlier runs)."""

    out: Path
    videos: int = 0
    pairs: int = 0
    written: int = 0
    filtered: int = 0
    failed: int = 0
    resumed_shards: int = 0
    shapes: Counter = field(default_factory=Counter)
    errors: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every pair was encoded or deliberately filtered."""
        return self.failed == 0


class _VideoSource(torch.utils.data.Dataset):
    """Decodes one video per item in DataLoader workers; errors travel back as values."""

    def __init__(self, entries: list[tuple[int, CaptionedVideo]], root: Path, cfg: EncodeConfig, crop):
        self.entries, self.root, self.cfg, self.crop = entries, root, cfg, crop

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        idx, entry = self.entries[i]
        try:
            path = resolve_video(self.root, entry.file)
            frames, fps = read_video(path, fps=self.cfg.fps, max_frames=self.cfg.max_frames,
                                     max_seconds=self.cfg.max_seconds, size=self.cfg.size)
            try:
                frames = self.crop(frames)
            except ValueError as e:
                raise VideoError(path, "too small", str(e)) from None
            # A tensor travels back through shared memory; a numpy array would be pickled through a pipe.
            return idx, torch.from_numpy(np.ascontiguousarray(frames)), fps, None
        except VideoError as e:
            return idx, None, None, {"reason": e.reason, "detail": e.detail}


def resolve_video(root: Path, name: str) -> Path:
    """The video `name` inside `root`; absolute paths and paths escaping `root` are refused."""
    if os.path.isabs(name):
        raise VideoError(Path(name), "outside video dir", "absolute paths are not allowed in captions files")
    # Lexical check: a symlink inside the directory (collate's links) may point anywhere.
    path = Path(os.path.normpath(Path(root).absolute() / name))
    if not path.is_relative_to(Path(os.path.normpath(Path(root).absolute()))):
        raise VideoError(Path(name), "outside video dir", f"'{name}' escapes --videos {root}")
    return path


def _collate_one(batch):
    return batch[0]


def _prepare_out(cfg: EncodeConfig) -> dict:
    out = Path(cfg.out)
    manifest_path = out / "manifest.json"
    if cfg.overwrite and out.exists():
        shutil.rmtree(out)
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("settings") != cfg.settings() and not old.get("complete") and not any((out / "shards").glob("shard-*")):
            shutil.rmtree(out)  # an earlier run failed before writing anything: nothing to keep or protect
            return _prepare_out(cfg)
        if old.get("settings") != cfg.settings():
            changed = sorted(k for k in cfg.settings() if old.get("settings", {}).get(k) != cfg.settings()[k])
            raise UserError(f"--out {out} holds a dataset encoded with other settings ({', '.join(changed)}); "
                            "pass --overwrite to start over or choose another --out")
        return old
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not an opensora dataset; choose another --out or pass --overwrite")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    manifest = {"format": "opensora-encoded", "settings": cfg.settings(), "complete": False}
    write_json_atomic(manifest_path, manifest)
    return manifest


def _column(values: list[np.ndarray], dtype) -> pa.Array:
    """A list<dtype> Arrow column built from numpy arrays without going through Python lists."""
    flat = [np.ascontiguousarray(v).reshape(-1) for v in values]
    offsets = np.zeros(len(flat) + 1, np.int64)
    offsets[1:] = np.cumsum([len(f) for f in flat])
    data = np.concatenate(flat) if flat else np.zeros((0,), dtype)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(data.astype(dtype, copy=False)))


def _write_shard(path: Path, rows: list[dict], features) -> None:
    from datasets.arrow_writer import ArrowWriter

    schema = features.arrow_schema
    cols = {}
    for name in schema.names:
        typ = schema.field(name).type
        vals = [r[name] for r in rows]
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            arr = _column(vals, typ.value_type.to_pandas_dtype())
            cols[name] = arr.cast(typ)
        else:
            cols[name] = pa.array(vals, type=typ)
    table = pa.table(cols, schema=schema)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = ArrowWriter(features=features, path=str(tmp))
    writer.write_table(table)
    writer.finalize()
    writer.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)  # the shard exists only once it is whole


def encode_dataset(cfg: EncodeConfig, progress: ProgressFn = no_progress) -> EncodeSummary:
    """Encode every (video, caption) pair of `cfg.captions` into `cfg.out`, resuming earlier runs."""
    from opensora.text.clip import TextEncoder

    entries = load_captions(cfg.captions)
    root = Path(cfg.videos)
    if not root.is_dir():
        raise UserError(f"--videos {root}: no such directory; pass the folder holding the captions' videos")
    if cfg.shard_size < 1:
        raise UserError("--shard-size must be at least 1")
    manifest = _prepare_out(cfg)
    out = Path(cfg.out)
    shard_dir = out / "shards"
    n_shards = (len(entries) + cfg.shard_size - 1) // cfg.shard_size
    done = {i for i in range(n_shards) if (shard_dir / f"shard-{i:05d}.arrow").exists()}
    pending = [(i, e) for i, e in enumerate(entries) if i // cfg.shard_size not in done]
    summary = EncodeSummary(out=out, videos=len(entries), resumed_shards=len(done))

    compressor = load_compressor(cfg.compression, cfg.vae, device=cfg.device, batch_size=cfg.batch_size)
    text = TextEncoder(cfg.text_encoder, device=cfg.device)
    features = dataset_features(compressor.latent_dtype)
    # Text features of one shard at a time: each distinct caption encoded once, in batches, and
    # memory bounded by a shard (all of MSR-VTT's 200k captions would not fit).
    shard_text: dict[int, dict[str, tuple[np.ndarray, int]]] = {}

    def shard_captions(shard: int) -> dict[str, tuple[np.ndarray, int]]:
        if shard not in shard_text:
            lo, hi = shard * cfg.shard_size, (shard + 1) * cfg.shard_size
            caps = list(dict.fromkeys(c.strip() for e in entries[lo:hi] for c in e.captions if c.strip()))
            feats, lengths = text.encode(caps)
            shard_text[shard] = {c: (f.astype(np.float16), int(n)) for c, f, n in zip(caps, feats, lengths)}
        return shard_text[shard]

    loader = torch.utils.data.DataLoader(
        _VideoSource(pending, root, cfg, compressor.crop), batch_size=1, shuffle=False,
        num_workers=max(0, cfg.num_workers), collate_fn=_collate_one,
        prefetch_factor=4 if cfg.num_workers > 0 else None,
    )
    by_shard: dict[int, tuple[list[dict], list[dict]]] = {}
    remaining = Counter(i // cfg.shard_size for i, _ in pending)
    completed = len(entries) - len(pending)
    progress(ProgressEvent("encode", completed, len(entries), unit="videos"))
    for idx, frames, fps, err in loader:
        entry = entries[idx]
        shard = idx // cfg.shard_size
        rows, events = by_shard.setdefault(shard, ([], []))
        caps = [c.strip() for c in entry.captions]
        if err is not None:
            events.append({"file": entry.file, "line": entry.line, "pairs": len(caps), **err})
        else:
            good = [c for c in caps if c]
            if len(good) < len(caps):
                events.append({"file": entry.file, "line": entry.line, "pairs": len(caps) - len(good),
                               "reason": "empty caption", "detail": ""})
            if good:
                latent = compressor.encode([frames.numpy()])[0]
                cache = shard_captions(shard)
                for c in good:
                    feat, length = cache[c]
                    rows.append({"video_file": entry.file, "caption": c, "video_latent_states": latent,
                                 "video_latent_shape": np.array(latent.shape, np.int32),
                                 "text_latent_states": feat, "text_latent_shape": np.array(feat.shape, np.int32),
                                 "text_length": length, "fps": float(fps)})
        remaining[shard] -= 1
        if remaining[shard] == 0:
            rows, events = by_shard.pop(shard)
            shard_text.pop(shard, None)
            shapes = Counter("x".join(map(str, r["video_latent_shape"])) for r in rows)
            write_json_atomic(shard_dir / f"shard-{shard:05d}.json",
                              {"rows": len(rows), "events": events, "shapes": dict(shapes)})
            _write_shard(shard_dir / f"shard-{shard:05d}.arrow", rows, features)
        completed += 1
        progress(ProgressEvent("encode", completed, len(entries), unit="videos"))

    # Totals over all shards, including those of earlier runs.
    for i in range(n_shards):
        meta = json.loads((shard_dir / f"shard-{i:05d}.json").read_text())
        summary.written += meta["rows"]
        summary.shapes.update(meta["shapes"])
        for ev in meta["events"]:
            summary.errors.append(ev)
            if ev["reason"] == "too long":
                summary.filtered += ev["pairs"]
            else:
                summary.failed += ev["pairs"]
    summary.pairs = summary.written + summary.filtered + summary.failed
    write_text_atomic(out / "errors.jsonl", "".join(json.dumps(e) + "\n" for e in summary.errors))
    manifest.update({
        "complete": True, "shards": n_shards, "rows": summary.written, "filtered": summary.filtered,
        "failed": summary.failed, "compression": compressor.spec(), "latent_channels": compressor.latent_channels,
        "stride": list(compressor.stride),
        "text_encoder": text.spec(),
    })
    write_json_atomic(out / "manifest.json", manifest)
    return summary

