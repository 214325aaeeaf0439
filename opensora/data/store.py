"""Content-keyed Arrow stores: each video latent and each caption's text features kept once.

A store is a folder of parts, each written whole by datasets' ArrowWriter:
  part-NNNNNN.arrow   rows with a `key` column (a content hash) and the stored values
  part-NNNNNN.json    the part's size in bytes and row count, written before the part appears
A part counts only when both exist and agree with each other (a truncated or half-written part is
removed and its work redone), so a rerun after a crash continues without losing or duplicating.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from opensora.fsutil import write_json_atomic


def content_key(*parts: object) -> str:
    """A hex digest of JSON-serialisable parts (file hashes, settings, model identities)."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=16).hexdigest()


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """BLAKE2b of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_identity(path: str | None) -> dict:
    """What identifies a model: its hub id, or for a local folder its files' names, sizes and times."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_dir():
        return {"id": str(path)}
    files = sorted((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in p.rglob("*") if f.is_file())
    return {"dir": str(p.resolve()), "files": content_key(files)}


def _list_column(values: list[np.ndarray], typ: pa.DataType) -> pa.Array:
    """A large_list column built from numpy arrays without going through Python lists."""
    value_type = typ.value_type
    flat = [np.ascontiguousarray(v).reshape(-1) for v in values]
    offsets = np.zeros(len(flat) + 1, np.int64)
    offsets[1:] = np.cumsum([len(f) for f in flat])
    dtype = value_type.to_pandas_dtype()
    data = np.concatenate(flat).astype(dtype, copy=False) if flat else np.zeros((0,), dtype)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(data, type=value_type))


def _table(rows: list[dict], features) -> pa.Table:
    schema = features.arrow_schema
    cols = {}
    for name in schema.names:
        typ = schema.field(name).type
        vals = [r[name] for r in rows]
        cols[name] = _list_column(vals, typ) if pa.types.is_large_list(typ) else pa.array(vals, type=typ)
    return pa.table(cols, schema=schema)


def _write_stream(path: Path, rows: list[dict], features) -> int:
    """Write `rows` to `path` with datasets' ArrowWriter and fsync it; return its size in bytes."""
    from datasets.arrow_writer import ArrowWriter

    try:
        writer = ArrowWriter(features=features, path=str(path))
        writer.write_table(_table(rows, features))
        writer.finalize()
        writer.close()
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    except BaseException:
        Path(path).unlink(missing_ok=True)  # a full disk or a Ctrl-C leaves nothing behind
        raise
    return path.stat().st_size


def write_arrow(path: Path, rows: list[dict], features) -> int:
    """Write `rows` to `path` atomically (temporary file, fsync, rename); return its size in bytes."""
    tmp = path.with_name(f".{path.name}.tmp")
    size = _write_stream(tmp, rows, features)
    os.replace(tmp, path)
    return size


def read_arrow(path: Path) -> pa.Table:
    """A memory-mapped Arrow stream file as a Table (nothing is read until used)."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()


@dataclass
class StoreScan:
    """What a scan found: the good parts, keys to (part, row), and what was removed as damaged."""

    parts: list[Path] = field(default_factory=list)
    tables: list[pa.Table] = field(default_factory=list)  # memory-mapped, one per good part
    index: dict[str, tuple[int, int]] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)
    bytes: int = 0


class KeyedStore:
    """One folder of parts keyed by content; parts are only ever added whole or removed whole."""

    def __init__(self, root: Path, features=None):
        self.root, self.features = Path(root), features  # features: needed only to append

    def _parts(self) -> list[Path]:
        return sorted(self.root.glob("part-*.arrow"))

    def scan(self, repair: bool = True) -> StoreScan:
        """Verify every part against its sidecar; with `repair`, remove damaged and stray files."""
        out = StoreScan()
        if not self.root.is_dir():
            return out
        for tmp in self.root.glob(".part-*.tmp"):  # a write that a crash interrupted
            if repair:
                tmp.unlink(missing_ok=True)
        for meta in self.root.glob("part-*.json"):
            if not meta.with_suffix(".arrow").exists() and repair:
                meta.unlink(missing_ok=True)  # its part never appeared
        for part in self._parts():
            problem, table = self._check(part)
            if problem:
                out.damaged.append(f"{part.name}: {problem}")
                if repair:
                    part.unlink(missing_ok=True)
                    part.with_suffix(".json").unlink(missing_ok=True)
                continue
            i = len(out.parts)
            out.parts.append(part)
            out.tables.append(table)
            out.bytes += part.stat().st_size
            for r, key in enumerate(table.column("key").to_pylist()):
                out.index.setdefault(key, (i, r))
        return out

    def _check(self, part: Path) -> tuple[str | None, pa.Table | None]:
        """(what is wrong with `part`, or None; its table when it is good), reading it once."""
        meta_path = part.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return "no readable sidecar", None
        size = part.stat().st_size
        if size != meta.get("bytes"):
            return f"{size} bytes on disk, {meta.get('bytes')} written", None
        try:
            table = read_arrow(part)
        except (pa.ArrowInvalid, OSError) as e:
            return f"unreadable ({e})", None
        if table.num_rows != meta.get("rows"):
            return f"{table.num_rows} rows, {meta.get('rows')} written", None
        return None, table

    def bytes(self) -> int:
        """Bytes of the parts on disk (without verifying them)."""
        return sum(p.stat().st_size for p in self._parts())

    def append(self, rows: list[dict]) -> Path:
        """Write `rows` as a new part (sidecar first, then the part appears by rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        existing = self._parts()
        n = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        path = self.root / f"part-{n:06d}.arrow"
        tmp = path.with_name(f".{path.stem}.tmp")
        try:
            size = _write_stream(tmp, rows, self.features)
            write_json_atomic(path.with_suffix(".json"), {"bytes": size, "rows": len(rows)})
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            from opensora.errors import OpenSoraError

            raise OpenSoraError(f"{self.root}: cannot write a part ({e.strerror or e}); free some space, then rerun "
                                "the same command to continue") from None
        return path

    def prune(self, keep: set[str]) -> int:
        """Remove parts none of whose keys are in `keep`; return the bytes freed."""
        freed = 0
        for part in self._parts():
            keys = read_arrow(part).column("key").to_pylist()
            if not any(k in keep for k in keys):
                freed += part.stat().st_size
                part.unlink()
                part.with_suffix(".json").unlink(missing_ok=True)
        return freed
