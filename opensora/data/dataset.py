"""Reading encoded datasets: rows of (video, caption) that reference content-keyed stores.

Layout of a dataset directory (format 2):
  manifest.json   settings, totals, the compression and text encoder; `complete` once done
  videos/         a KeyedStore of video latents, one per distinct (video content, decode settings,
                  compression); failed videos are kept as records with an `error` and no latent
  texts/          a KeyedStore of text features, one per distinct (caption, text encoder), stored
                  up to the caption's token count and padded when read
  rows.arrow      one row per (video, caption) pair: the two keys, the file name and the caption
  errors.jsonl    every skipped video or pair with its reason
Everything is memory-mapped: a latent is a view into its part until a batch is stacked.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from opensora.errors import UserError

FORMAT_VERSION = 2


def video_features(latent_dtype: str):
    """Features of the video store."""
    from datasets import Features, LargeList, Value

    return Features({"key": Value("string"), "source": Value("string"), "latent": LargeList(Value(latent_dtype)),
                     "shape": LargeList(Value("int32")), "fps": Value("float32"), "error": Value("string")})


def text_features():
    """Features of the text store (features kept up to the caption's length)."""
    from datasets import Features, LargeList, Value

    return Features({"key": Value("string"), "caption": Value("string"), "features": LargeList(Value("float16")),
                     "shape": LargeList(Value("int32")), "length": Value("int32")})


def row_features():
    """Features of rows.arrow."""
    from datasets import Features, Value

    return Features({"video_key": Value("string"), "text_key": Value("string"), "video_file": Value("string"),
                     "caption": Value("string")})


def _load_manifest(path: Path) -> dict | None:
    m = Path(path) / "manifest.json"
    try:
        manifest = json.loads(m.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == "opensora-encoded" else None


def is_dataset(path: Path) -> bool:
    """True if `path` holds an encoded dataset (finished or not, of any format version)."""
    return _load_manifest(path) is not None


def is_complete(path: Path) -> bool:
    """True if `path` holds an encoded dataset whose encoding finished."""
    m = _load_manifest(path)
    return bool(m and m.get("complete"))


def reencode_command(path: Path, manifest: dict) -> str:
    """The `data encode` command that rebuilds the dataset at `path` from its recorded settings."""
    s = manifest.get("settings", {})
    cmd = f"opensora data encode -c {s.get('captions', 'CAPTIONS')} -v {s.get('videos', 'VIDEOS')} -o {path}"
    if s.get("compression") and s["compression"] != "raw":
        cmd += f" --compression {s['compression']}"
    return cmd + " --overwrite"


def newest_dataset(datasets_dir: Path) -> Path | None:
    """The most recently finished dataset under `datasets_dir`."""
    root = Path(datasets_dir)
    done = [d for d in root.iterdir() if is_complete(d)] if root.is_dir() else []
    return max(done, key=lambda d: (d / "manifest.json").stat().st_mtime) if done else None


def read_manifest(path: Path) -> dict:
    """The dataset's manifest; a clear error if `path` is not a finished dataset of this format."""
    path = Path(path)
    manifest = _load_manifest(path)
    if manifest is None:
        raise UserError(f"--data {path}: not an encoded dataset; run `opensora data encode` first")
    if manifest.get("version", 1) != FORMAT_VERSION:
        raise UserError(f"--data {path}: encoded by an older opensora (format {manifest.get('version', 1)}, one latent "
                        f"per caption); re-encode it: {reencode_command(path, manifest)}")
    if not manifest.get("complete"):
        raise UserError(f"--data {path}: encoding did not finish; rerun the same `opensora data encode` to complete it")
    return manifest


class _Store:
    """One store's verified parts (KeyedStore.scan), memory-mapped, with numpy views of a list column."""

    def __init__(self, root: Path, column: str):
        from opensora.data.store import KeyedStore

        scan = KeyedStore(root).scan(repair=False)  # a damaged part is left out: its keys show as missing
        self.index = scan.index
        self.values, self.offsets, self.shapes = [], [], []
        for table in scan.tables:
            col = table.column(column).combine_chunks()
            self.values.append(col.values.to_numpy(zero_copy_only=False))
            self.offsets.append(col.offsets.to_numpy())
            self.shapes.append(table.column("shape").to_pylist())

    def get(self, key: str) -> np.ndarray:
        p, r = self.index[key]
        lo, hi = self.offsets[p][r], self.offsets[p][r + 1]
        return self.values[p][lo:hi].reshape(self.shapes[p][r])

    def shape(self, key: str) -> tuple[int, ...]:
        p, r = self.index[key]
        return tuple(self.shapes[p][r])


class EncodedDataset:
    """Row access returning numpy arrays with their shapes restored (views into the memory map)."""

    def __init__(self, path: Path):
        from opensora.data.store import read_arrow

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        rows = read_arrow(self.path / "rows.arrow")
        if rows.num_rows == 0:
            raise UserError(f"--data {path}: the dataset has no rows; check errors.jsonl beside it")
        self.video_keys = rows.column("video_key").to_pylist()
        self.text_keys = rows.column("text_key").to_pylist()
        self.captions = rows.column("caption").to_pylist()
        self.files = rows.column("video_file").to_pylist()
        self.videos = _Store(self.path / "videos", "latent")
        self.texts = _Store(self.path / "texts", "features")
        missing = [k for k in set(self.video_keys) if k not in self.videos.index]
        missing += [k for k in set(self.text_keys) if k not in self.texts.index]
        if missing:
            raise UserError(f"--data {path}: {len(missing)} stored latents or text features are missing (a part was "
                            f"removed?); rerun: {reencode_command(self.path, self.manifest).removesuffix(' --overwrite')}")
        self.text_length = int(self.manifest["text_encoder"]["max_length"])
        self._shapes = [self.videos.shape(k) for k in self.video_keys]

    def __len__(self) -> int:
        return len(self.video_keys)

    def latent_shape(self, i: int) -> tuple[int, ...]:
        """Stored latent shape of row `i` (without reading the latent)."""
        return self._shapes[i]

    def __getitem__(self, i: int) -> dict:
        feats = self.texts.get(self.text_keys[i])  # (length, D)
        text = np.zeros((self.text_length, feats.shape[1]), feats.dtype)
        text[: len(feats)] = feats
        return {"video": self.videos.get(self.video_keys[i]), "text": text, "text_length": len(feats),
                "caption": self.captions[i], "file": self.files[i]}


def describe_dataset(path: Path, n_captions: int = 5) -> dict:
    """Videos, captions, rows, bytes per store, cache hits of the last encode, latent shapes, a few captions."""
    path = Path(path)
    manifest = _load_manifest(path) or {}
    report: dict = {"path": str(path), "complete": bool(manifest.get("complete")), "format": manifest.get("version", 1)}
    settings = manifest.get("settings", {})
    report["compression"] = (manifest.get("compression") or {}).get("name", settings.get("compression"))
    report["text_encoder"] = (manifest.get("text_encoder") or {}).get("path", settings.get("text_encoder"))
    report["bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if report["format"] != FORMAT_VERSION:
        report["problem"] = f"older format; re-encode it: {reencode_command(path, manifest)}"
        return report
    for key in ("videos", "captions", "rows", "filtered", "failed", "video_bytes", "text_bytes", "cache"):
        if key in manifest:
            report[key] = manifest[key]
    if not manifest.get("complete") or not (path / "rows.arrow").exists():
        return report
    ds = EncodedDataset(path)
    report["shapes"] = dict(Counter("x".join(map(str, ds.latent_shape(i))) for i in range(len(ds))).most_common())
    report["text_shape"] = f"{ds.text_length}x{manifest['text_encoder']['dim']}"
    report["sample_captions"] = ds.captions[:n_captions]
    return report
