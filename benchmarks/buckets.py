"""Honest batches on the shared real videos: repeated batch slots, buckets and steps per epoch.

Encodes the real third-party videos of ../shared/data (2-3 captions each, raw, 4 fps, first 8
frames) at their own sizes and with --resolution 144p, then counts, over one epoch at global batch 8,
the batch slots that repeat a row already in the same step. The baseline is the sampler of format 1
(each bucket's last batch filled by wrapping around the bucket), re-implemented here for comparison.

    python benchmarks/buckets.py [--batch 8] [--dp 1 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table  # noqa: E402
from opensora.data.dataset import EncodedDataset  # noqa: E402
from opensora.data.encode import EncodeConfig, encode_dataset  # noqa: E402
from opensora.text.clip import build_tiny_clip_text_encoder  # noqa: E402
from opensora.training.data import deal, epoch_batches  # noqa: E402
from tests.conftest import SHARED  # noqa: E402


def wraparound_batches(shapes, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """Format 1's sampler: buckets cut into global batches, the last one filled by wrapping around."""
    rng = np.random.default_rng([seed, epoch])
    buckets = defaultdict(list)
    for i, s in enumerate(shapes):
        buckets[tuple(s)].append(i)
    batches = []
    for key in sorted(buckets):
        rows = np.array(buckets[key])
        rng.shuffle(rows)
        n_batches = -(-len(rows) // global_batch)
        padded = np.resize(rows, n_batches * global_batch)
        batches += [padded[b * global_batch : (b + 1) * global_batch].tolist() for b in range(n_batches)]
    return batches


def repeated(batches: list[list[int]]) -> tuple[int, int]:
    """(slots repeating a row already in the same batch, all slots)."""
    return sum(len(b) - len(set(b)) for b in batches), sum(len(b) for b in batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8, help="global batch")
    ap.add_argument("--dp", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-buckets-"))
    videos = SHARED / "videos"
    names = sorted(str(p.relative_to(videos)) for p in videos.rglob("*") if p.is_file())
    caps = [{"file": n, "captions": [f"caption {k} of {n}" for k in range(2 + i % 2)]} for i, n in enumerate(names)]
    (tmp / "c.json").write_text(json.dumps(caps))
    te = build_tiny_clip_text_encoder(tmp / "clip")
    rows = []
    for label, resolution in (("own", None), ("144p", "144p")):
        out = tmp / (resolution or "native")
        encode_dataset(EncodeConfig(captions=tmp / "c.json", videos=videos, out=out, text_encoder=str(te), fps=4,
                                    max_frames=8, too_long="first", resolution=resolution, num_workers=1))
        data = EncodedDataset(out)
        shapes = [data.latent_shape(i) for i in range(len(data))]
        n_buckets = len(set(shapes))
        for dp in args.dp:
            old = wraparound_batches(shapes, args.batch, 0, 0)
            rep, slots = repeated(old)
            seen = len({i for b in old for i in b})
            rows.append([label, len(shapes), n_buckets, dp, "wrap (v1)", len(old), seen, f"{rep}/{slots}", rep / slots])
            batches = epoch_batches(shapes, {s: args.batch for s in set(shapes)}, 0, 0)
            # what the ranks train on: padding rows (weight 0, for ranks left without a row) add nothing
            steps = [[batch[j] for r in range(dp) for j, w in zip(*deal(batch, r, dp)) if w] for batch in batches]
            rep, slots = repeated(steps)
            seen = len({i for b in steps for i in b})
            rows.append([label, len(shapes), n_buckets, dp, "honest", len(steps), seen, f"{rep}/{slots}", rep / slots])
    print_table(f"repeated batch slots over one epoch, global batch {args.batch}, shared real videos",
                ["sizes", "rows", "buckets", "dp", "sampler", "steps", "rows seen", "repeated/slots", "share"], rows)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
