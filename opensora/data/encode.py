"""Videos + captions -> an encoded dataset: each video latent and each caption's features stored once.

Work is keyed by content (see `opensora.data.dataset` for the layout): a video latent by the file's
hash, the decode settings and the compression's identity; text features by the caption and the text
encoder's identity. A rerun encodes only what no stored part holds yet, so it continues after a crash
(even with an edited captions file), reuses every video latent under a new text encoder and every
text feature under a new VAE, and does nothing when nothing changed. Rows are rebuilt from the
captions file at the end; parts nothing refers to any more are removed.
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
from opensora.data.config import EncodeConfig
from opensora.data.dataset import (
    FORMAT_VERSION,
    reencode_command,
    row_features,
    text_features,
    video_features,
)
from opensora.data.store import KeyedStore, content_key, file_digest, model_identity, write_arrow
from opensora.data.video import DecodeSettings, VideoError, read_video
from opensora.devices import resolve_device
from opensora.errors import UserError
from opensora.fsutil import DirectoryLock, write_json_atomic, write_text_atomic
from opensora.models.presets import MIN_PATCH
from opensora.progress import ProgressEvent, ProgressFn, no_progress

FILTERED = ("too long", "too small")  # deliberate filters: the encode still succeeds
TEXT_PART_ROWS = 4096


@dataclass
class EncodeSummary:
    """What an encode produced (totals over the whole dataset) and what this run had to do."""

    out: Path
    entries: int = 0
    pairs: int = 0
    written: int = 0
    filtered: int = 0
    failed: int = 0
    videos: int = 0
    captions: int = 0
    videos_encoded: int = 0
    videos_reused: int = 0
    texts_encoded: int = 0
    texts_reused: int = 0
    video_bytes: int = 0
    text_bytes: int = 0
    damaged: list[str] = field(default_factory=list)
    rows_digest: str = ""
    shapes: Counter = field(default_factory=Counter)
    errors: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every pair was encoded or deliberately filtered."""
        return self.failed == 0


class _VideoSource(torch.utils.data.Dataset):
    """Decodes one video per item in DataLoader workers; errors travel back as values."""

    def __init__(self, jobs: list[tuple[str, Path]], decode: DecodeSettings, compressor, min_patch: int):
        self.jobs, self.decode, self.compressor, self.min_patch = jobs, decode, compressor, min_patch

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        key, path = self.jobs[i]
        try:
            try:
                frames, fps = read_video(path, self.decode)
                frames = self.compressor.crop(frames)
            except ValueError as e:
                raise VideoError(path, "too small", str(e)) from None
            except OSError as e:  # a name too long, a permission, a vanished file: this video only
                raise VideoError(path, "unreadable", e.strerror or str(e)) from None
            t, h, w = self.compressor.latent_thw(*frames.shape[:3])
            if min(h, w) < self.min_patch:
                raise VideoError(path, "too small", f"latent {t}x{h}x{w} is smaller than one {self.min_patch}x"
                                 f"{self.min_patch} patch of any model")
            # A tensor travels back through shared memory; a numpy array would be pickled through a pipe.
            return key, torch.from_numpy(np.ascontiguousarray(frames)), fps, None
        except VideoError as e:
            return key, None, None, {"reason": e.reason, "detail": e.detail}


def resolve_video(root: Path, name: str) -> Path:
    """The video `name` inside `root`; absolute paths and paths escaping `root` are refused."""
    if os.path.isabs(name):
        raise VideoError(Path(name), "outside video dir", "absolute paths are not allowed in captions files")
    # Lexical check: a symlink inside the directory (collate's links) may point anywhere.
    path = Path(os.path.normpath(Path(root).absolute() / name))
    if not path.is_relative_to(Path(os.path.normpath(Path(root).absolute()))):
        raise VideoError(Path(name), "outside video dir", f"'{name}' escapes --videos {root}")
    return path


def _only_item(batch):
    return batch[0]


def _decoded(jobs: list[tuple[str, Path]], decode: DecodeSettings, compressor, num_workers: int):
    """(key, frames, fps, error) for every job, in order, decoded in worker processes.

    A worker that dies (a decoder crash on one file) must not stop the others: the loader is
    restarted after the videos already returned, with one worker and no read-ahead, so that a second
    death names the video being decoded, which is then reported as failed.
    """
    done, suspect = 0, None
    workers, prefetch = max(0, num_workers), 4
    while done < len(jobs):
        rest = jobs[done:]
        loader = torch.utils.data.DataLoader(
            _VideoSource(rest, decode, compressor, MIN_PATCH), batch_size=1, shuffle=False, num_workers=workers,
            collate_fn=_only_item, prefetch_factor=prefetch if workers > 0 else None)
        try:
            for item in loader:
                done += 1
                suspect = None
                yield item
        except RuntimeError as e:
            if "DataLoader worker" not in str(e) or workers == 0:
                raise
            if suspect == done:  # it died again on the same video: that video kills its decoder
                key, path = jobs[done]
                done += 1
                suspect = None
                yield key, None, None, {"reason": "decoder crashed", "detail": f"the decoding process died on {path.name}"}
                continue
            suspect, workers, prefetch = done, 1, 1


def _prepare_out(cfg: EncodeConfig) -> dict:
    out = Path(cfg.out)
    if cfg.overwrite:
        for child in out.iterdir():
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        if old.get("format") != "opensora-encoded":
            raise UserError(f"--out {out} exists and is not an opensora dataset; choose another --out or pass --overwrite")
        if old.get("version", 1) != FORMAT_VERSION:
            raise UserError(f"--out {out} holds a dataset of an older format; re-encode it: {reencode_command(out, old)}")
        manifest = {**old, "settings": cfg.settings(), "complete": False}
    elif any(c.name != ".lock" for c in out.iterdir()):
        raise UserError(f"--out {out} exists and is not an opensora dataset; choose another --out or pass --overwrite")
    else:
        manifest = {"format": "opensora-encoded", "version": FORMAT_VERSION, "settings": cfg.settings(), "complete": False}
    write_json_atomic(manifest_path, manifest)
    return manifest


class _FileHashes:
    """File digests, remembered by (size, mtime) in OUT/file-hashes.json so reruns do not re-read videos."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.memo = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            self.memo = {}
        self.fresh: dict[str, list] = {}

    def digest(self, file: Path) -> str:
        if str(file) in self.fresh:
            return self.fresh[str(file)][2]
        st = file.stat()
        known = self.memo.get(str(file))
        if known and known[:2] == [st.st_size, st.st_mtime_ns]:
            digest = known[2]
        else:
            digest = file_digest(file)
        self.fresh[str(file)] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        write_json_atomic(self.path, self.fresh)


def _video_keys(entries: list[CaptionedVideo], root: Path, identity: list, hashes: _FileHashes,
                progress: ProgressFn) -> tuple[list[str | None], dict[int, dict], dict[str, Path]]:
    """Each entry's video key (None with an error for a file that cannot be read) and one path per key."""
    keys: list[str | None] = []
    errors: dict[int, dict] = {}
    paths: dict[str, Path] = {}
    for i, e in enumerate(entries):
        try:
            path = resolve_video(root, e.file)
            if not path.exists():
                raise VideoError(path, "missing", "no such file")
            if not path.is_file():
                raise VideoError(path, "unreadable", "not a file")
            key = content_key("video", hashes.digest(path), *identity)
            paths.setdefault(key, path)
            keys.append(key)
        except VideoError as err:
            keys.append(None)
            errors[i] = {"reason": err.reason, "detail": err.detail}
        except OSError as err:  # ENAMETOOLONG, EACCES, ...: this entry only
            keys.append(None)
            errors[i] = {"reason": "unreadable", "detail": err.strerror or str(err)}
        progress(ProgressEvent("hash", i + 1, len(entries), unit="files"))
    return keys, errors, paths


def _copy_from(sources: list, wanted: set[str], store: KeyedStore, part_rows: int) -> set[str]:
    """Copy the rows of `wanted` keys found in other datasets' stores into `store`; the keys copied."""
    copied: set[str] = set()
    for scan in sources:
        by_part: dict[int, list[int]] = {}
        for key in wanted - copied:
            if key in scan.index:
                p, r = scan.index[key]
                by_part.setdefault(p, []).append(r)
        for p, rows in by_part.items():
            table = scan.tables[p].take(rows)
            lists = {n for n in table.column_names if pa.types.is_large_list(table.schema.field(n).type)}
            batch = []
            for r in range(table.num_rows):
                row = {n: table.column(n)[r].values.to_numpy(zero_copy_only=False) if n in lists
                       else table.column(n)[r].as_py() for n in table.column_names}
                batch.append(row)
                copied.add(row["key"])
                if len(batch) == part_rows:
                    store.append(batch)
                    batch = []
            if batch:
                store.append(batch)
    return copied


def _reuse_sources(cfg: EncodeConfig, name: str) -> list:
    sources = []
    for d in cfg.reuse:
        if not (Path(d) / "manifest.json").exists():
            raise UserError(f"--reuse {d}: not an encoded dataset")
        sources.append(KeyedStore(Path(d) / name).scan(repair=False))
    return sources


def encode_dataset(cfg: EncodeConfig, progress: ProgressFn = no_progress) -> EncodeSummary:
    """Encode every (video, caption) pair of `cfg.captions` into `cfg.out`, reusing all stored work."""
    cfg.validate()
    entries = load_captions(cfg.captions, cfg.file_column, cfg.caption_column)
    root = Path(cfg.videos)
    if not root.is_dir():
        raise UserError(f"--videos {root}: no such directory; pass the folder holding the captions' videos")
    from opensora.hub import check_loadable

    check_loadable(cfg.text_encoder, "--text-encoder")  # in seconds, before anything is written
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create it ({e.strerror}); choose a writable directory") from None
    with DirectoryLock(out, "--out"):
        return _encode_locked(cfg, entries, root, out, progress)


def _encode_locked(cfg: EncodeConfig, entries: list[CaptionedVideo], root: Path, out: Path,
                   progress: ProgressFn) -> EncodeSummary:
    manifest = _prepare_out(cfg)
    summary = EncodeSummary(out=out, entries=len(entries))
    device = str(resolve_device(cfg.device))
    compressor = load_compressor(cfg.compression, cfg.vae, device=device, batch_size=cfg.batch_size)
    comp_id = {**compressor.spec(), **model_identity(compressor.spec().get("path"))}
    text_id = {"path": cfg.text_encoder, **model_identity(cfg.text_encoder),
               **({"max_length": cfg.text_max_length} if cfg.text_max_length else {})}
    decode = cfg.decode_settings()

    hashes = _FileHashes(out / "file-hashes.json")
    vkeys, entry_errors, paths = _video_keys(entries, root, [decode.to_dict(), comp_id, MIN_PATCH], hashes, progress)
    hashes.save()
    captions = [[c.strip() for c in e.captions] for e in entries]
    tkey = {c: content_key("text", c, text_id) for caps in captions for c in caps if c}

    vstore = KeyedStore(out / "videos", video_features(compressor.latent_dtype))
    tstore = KeyedStore(out / "texts", text_features())
    vscan, tscan = vstore.scan(), tstore.scan()
    summary.damaged = vscan.damaged + tscan.damaged

    # Text features: reuse, then encode what is missing (each distinct caption once, in batches).
    missing_t = {k for k in tkey.values() if k not in tscan.index}
    summary.texts_reused = len(set(tkey.values())) - len(missing_t)
    copied = _copy_from(_reuse_sources(cfg, "texts"), missing_t, tstore, TEXT_PART_ROWS)
    summary.texts_reused += len(copied)
    todo = [c for c, k in tkey.items() if k in missing_t - copied]
    text_spec = manifest.get("text_encoder") if manifest.get("text_identity") == text_id else None
    if todo or text_spec is None:
        from opensora.text import load_text_encoder

        text = load_text_encoder(cfg.text_encoder, device=device, max_length=cfg.text_max_length)
        text_spec = text.spec()
        progress(ProgressEvent("text", 0, len(todo), unit="captions"))
        for lo in range(0, len(todo), TEXT_PART_ROWS):
            batch = todo[lo : lo + TEXT_PART_ROWS]
            feats, lengths = text.encode(batch)
            tstore.append([{"key": tkey[c], "caption": c, "features": f[:n].astype(np.float16),
                            "shape": np.array([n, f.shape[1]], np.int32), "length": int(n)}
                           for c, f, n in zip(batch, feats, lengths)])
            progress(ProgressEvent("text", lo + len(batch), len(todo), unit="captions"))
        summary.texts_encoded = len(todo)

    # Video latents: reuse, then decode + compress what is missing, a part per --shard-size videos.
    wanted = {k for k in vkeys if k is not None}
    missing_v = {k for k in wanted if k not in vscan.index}
    summary.videos_reused = len(wanted) - len(missing_v)
    copied = _copy_from(_reuse_sources(cfg, "videos"), missing_v, vstore, cfg.shard_size)
    summary.videos_reused += len(copied)
    jobs = [(k, paths[k]) for k in dict.fromkeys(vkeys) if k in missing_v - copied]
    pending: list[dict] = []
    progress(ProgressEvent("encode", 0, len(jobs), unit="videos"))
    for done, (key, frames, fps, err) in enumerate(_decoded(jobs, decode, compressor, cfg.num_workers), 1):
        source = os.path.relpath(paths[key], root.absolute())
        if err is not None:
            pending.append({"key": key, "source": source, "latent": np.zeros((0,)), "shape": np.zeros((0,), np.int32),
                            "fps": 0.0, "error": f"{err['reason']}: {err['detail']}"})
        else:
            latent = compressor.encode([frames.numpy()])[0]
            pending.append({"key": key, "source": source, "latent": latent, "shape": np.array(latent.shape, np.int32),
                            "fps": float(fps), "error": ""})
        summary.videos_encoded += err is None
        if len(pending) == cfg.shard_size:
            vstore.append(pending)
            pending = []
        progress(ProgressEvent("encode", done, len(jobs), unit="videos"))
    if pending:
        vstore.append(pending)

    _finish(cfg, entries, captions, vkeys, entry_errors, tkey, vstore, tstore, summary)
    manifest.update({
        "complete": True, "rows": summary.written, "rows_digest": summary.rows_digest, "videos": summary.videos, "captions": summary.captions,
        "filtered": summary.filtered, "failed": summary.failed, "video_bytes": summary.video_bytes,
        "text_bytes": summary.text_bytes,
        "cache": {"videos_encoded": summary.videos_encoded, "videos_reused": summary.videos_reused,
                  "texts_encoded": summary.texts_encoded, "texts_reused": summary.texts_reused},
        "compression": compressor.spec(), "latent_channels": compressor.latent_channels,
        "stride": list(compressor.stride), "text_encoder": text_spec, "text_identity": text_id,
    })
    write_json_atomic(out / "manifest.json", manifest)
    return summary


def _finish(cfg, entries, captions, vkeys, entry_errors, tkey, vstore: KeyedStore, tstore: KeyedStore,
            summary: EncodeSummary) -> None:
    """Rows from the captions file and the stores, errors.jsonl, and the pruning of unreferenced parts."""
    vinfo: dict[str, tuple[str, list]] = {}
    for table in vstore.scan().tables:
        for key, error, shape in zip(table.column("key").to_pylist(), table.column("error").to_pylist(),
                                     table.column("shape").to_pylist()):
            vinfo.setdefault(key, (error, shape))
    rows, events = [], []
    used_v, used_t = set(), set()
    for i, (entry, caps, key) in enumerate(zip(entries, captions, vkeys)):
        where = {"file": entry.file, "line": entry.line}
        if not caps:
            events.append({**where, "pairs": 0, "reason": "no captions", "detail": "the entry lists no caption"})
            continue
        summary.pairs += len(caps)
        error = entry_errors.get(i)
        if error is None:
            stored, shape = vinfo[key]
            used_v.add(key)
            if stored:
                reason, _, detail = stored.partition(": ")
                error = {"reason": reason, "detail": detail}
        if error is not None:
            events.append({**where, "pairs": len(caps), **error})
            if error["reason"] in FILTERED:
                summary.filtered += len(caps)
            else:
                summary.failed += len(caps)
            continue
        good = [c for c in caps if c]
        if len(good) < len(caps):
            events.append({**where, "pairs": len(caps) - len(good), "reason": "empty caption", "detail": ""})
            summary.failed += len(caps) - len(good)
        for c in good:
            rows.append({"video_key": key, "text_key": tkey[c], "video_file": entry.file, "caption": c})
            used_t.add(tkey[c])
            summary.shapes["x".join(map(str, shape))] += 1
    summary.written = len(rows)
    summary.videos = sum(1 for k in used_v if not vinfo[k][0])
    summary.captions = len(used_t)
    summary.errors = events
    write_arrow(Path(cfg.out) / "rows.arrow", rows, row_features())
    summary.rows_digest = content_key([(r["video_key"], r["text_key"]) for r in rows])
    write_text_atomic(Path(cfg.out) / "errors.jsonl", "".join(json.dumps(e) + "\n" for e in events))
    vstore.prune(used_v)
    tstore.prune(used_t)
    summary.video_bytes, summary.text_bytes = vstore.bytes(), tstore.bytes()
