"""Reading encoded datasets: memory-mapped Arrow shards, one row per (video, caption) pair."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from opensora.errors import UserError

FEATURES_VERSION = 1


def dataset_features(latent_dtype: str):
    """The datasets Features of an encoded dataset (latents flattened, with their shapes beside them)."""
    from datasets import Features, LargeList, Value

    return Features({
        "video_file": Value("string"),
        "caption": Value("string"),
        "video_latent_states": LargeList(Value(latent_dtype)),
        "video_latent_shape": LargeList(Value("int32")),
        "text_latent_states": LargeList(Value("float16")),
        "text_latent_shape": LargeList(Value("int32")),
        "text_length": Value("int32"),
        "fps": Value("float32"),
    })


def is_dataset(path: Path) -> bool:
    """True if `path` holds an encoded dataset (finished or not)."""
    m = Path(path) / "manifest.json"
    if not m.exists():
        return False
    try:
        return json.loads(m.read_text()).get("format") == "opensora-encoded"
    except json.JSONDecodeError:
        return False


def is_complete(path: Path) -> bool:
    """True if `path` holds an encoded dataset whose encoding finished."""
    return is_dataset(path) and bool(json.loads((Path(path) / "manifest.json").read_text()).get("complete"))


def read_manifest(path: Path) -> dict:
    """The dataset's manifest; a clear error if `path` is not a finished dataset."""
    path = Path(path)
    if not is_dataset(path):
        raise UserError(f"--data {path}: not an encoded dataset; run `opensora data encode` first")
    manifest = json.loads((path / "manifest.json").read_text())
    if not manifest.get("complete"):
        raise UserError(f"--data {path}: encoding did not finish; rerun the same `opensora data encode` to complete it")
    return manifest


def open_dataset(path: Path):
    """All shards as one memory-mapped `datasets.Dataset` (nothing is loaded whole)."""
    from datasets import Dataset, concatenate_datasets

    shards = sorted((Path(path) / "shards").glob("shard-*.arrow"))
    if not shards:
        raise UserError(f"{path}: the dataset has no rows; check errors.jsonl beside it")
    parts = [Dataset.from_file(str(s), in_memory=False) for s in shards]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


class EncodedDataset:
    """Row access returning numpy arrays with their shapes restored (zero-copy from the mmap where possible)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.ds = open_dataset(self.path)
        self.table = self.ds.data.table  # pyarrow Table, memory-mapped
        self._shape = self.table.column("video_latent_shape").to_pylist()

    def __len__(self) -> int:
        return self.table.num_rows

    def latent_shape(self, i: int) -> tuple[int, ...]:
        """Stored latent shape of row `i` (without reading the latent)."""
        return tuple(self._shape[i])

    def __getitem__(self, i: int) -> dict:
        row = self.table.slice(i, 1)
        video = row.column("video_latent_states").chunk(0).flatten().to_numpy(zero_copy_only=False)
        text = row.column("text_latent_states").chunk(0).flatten().to_numpy(zero_copy_only=False)
        tshape = row.column("text_latent_shape")[0].as_py()
        return {
            "video": video.reshape(self._shape[i]),
            "text": text.reshape(tshape),
            "text_length": row.column("text_length")[0].as_py(),
            "caption": row.column("caption")[0].as_py(),
        }


def describe_dataset(path: Path, n_captions: int = 5) -> dict:
    """Rows, columns and dtypes, latent shapes with counts, bytes on disk and a few captions."""
    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    report: dict = {"path": str(path), "complete": bool(manifest.get("complete"))}
    shards = sorted((path / "shards").glob("shard-*.arrow"))
    report["shards"] = len(shards)
    report["bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    report["compression"] = (manifest.get("compression") or {}).get("name", manifest["settings"]["compression"])
    report["text_encoder"] = (manifest.get("text_encoder") or {}).get("path", manifest["settings"]["text_encoder"])
    report["filtered"] = manifest.get("filtered", 0)
    report["failed"] = manifest.get("failed", 0)
    if not shards:
        report.update(rows=0, columns={}, shapes={}, captions=[])
        return report
    ds = open_dataset(path)
    report["rows"] = len(ds)
    report["columns"] = {name: str(feat) for name, feat in ds.features.items()}
    shapes = Counter("x".join(map(str, s)) for s in ds.data.table.column("video_latent_shape").to_pylist())
    report["shapes"] = dict(shapes.most_common())
    tshape = ds.data.table.column("text_latent_shape")[0].as_py()
    report["text_shape"] = "x".join(map(str, tshape))
    report["captions"] = ds.data.table.column("caption").slice(0, n_captions).to_pylist()
    return report

