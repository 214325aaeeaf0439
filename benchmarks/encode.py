"""`data encode --compression raw` throughput against PyAV decoding alone, storage and cache hits.

Tables: (1) a fresh encode against decoding the same files with PyAV; (2) bytes of video latents
on disk against the unique videos' latents with MSR-VTT's 20 captions per video; (3) reruns:
nothing changed, and a new text encoder (every video latent reused).

    python benchmarks/encode.py [--videos 24] [--frames 48] [--size 128] [--runs 5] [--captions-per-video 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_time, print_table  # noqa: E402
from opensora.data.encode import EncodeConfig, encode_dataset  # noqa: E402
from opensora.data.video import read_video, write_video  # noqa: E402
from opensora.text.clip import build_tiny_clip_text_encoder  # noqa: E402
from tests.conftest import moving_square_video  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--num-workers", type=int, default=EncodeConfig.num_workers)
    ap.add_argument("--captions-per-video", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-encode-"))
    vids = tmp / "videos"
    vids.mkdir()
    for i in range(args.videos):
        write_video(vids / f"v{i}.mp4", moving_square_video(args.frames, args.size, args.size, seed=i), 24)
    (tmp / "c.json").write_text(json.dumps([{"file": f"v{i}.mp4", "captions": [f"clip {i}"]} for i in range(args.videos)]))
    k = args.captions_per_video
    (tmp / "many.json").write_text(json.dumps([{"file": f"v{i}.mp4", "captions": [f"caption {j} of clip {i}" for j in range(k)]}
                                               for i in range(args.videos)]))
    te = build_tiny_clip_text_encoder(tmp / "clip")
    te2 = build_tiny_clip_text_encoder(tmp / "clip2", seed=1)
    files = sorted(vids.glob("*.mp4"))

    def decode_only():
        for f in files:
            read_video(f)

    def encode():
        out = tmp / "out"
        shutil.rmtree(out, ignore_errors=True)
        encode_dataset(EncodeConfig(captions=tmp / "c.json", videos=vids, out=out, text_encoder=str(te),
                                    num_workers=args.num_workers))

    t_dec = median_time(decode_only, args.runs)
    t_enc = median_time(encode, args.runs)
    n, f = args.videos, args.videos * args.frames
    print_table(
        f"encode raw vs PyAV decode: {n} videos x {args.frames} frames at {args.size}x{args.size}, "
        f"median of {args.runs}, --num-workers {args.num_workers}",
        ["pipeline", "seconds", "videos/s", "frames/s", "ratio vs decode"],
        [["PyAV decode only", t_dec, n / t_dec, f / t_dec, 1.0],
         ["opensora data encode (raw)", t_enc, n / t_enc, f / t_enc, t_dec / t_enc]],
    )

    out = tmp / "many"
    t0 = time.perf_counter()
    first = encode_dataset(EncodeConfig(captions=tmp / "many.json", videos=vids, out=out, text_encoder=str(te),
                                        num_workers=args.num_workers))
    t_first = time.perf_counter() - t0
    unique = args.videos * args.frames * args.size * args.size * 3  # uint8 frames of each video once
    print_table(
        f"storage with {k} captions per video ({first.written} rows)",
        ["what", "bytes", "ratio vs unique video latents"],
        [["unique videos' latents", unique, 1.0],
         ["video latents on disk", first.video_bytes, first.video_bytes / unique],
         ["one latent per row (format 1)", unique * k, float(k)],
         ["text features on disk", first.text_bytes, first.text_bytes / unique]],
    )
    rows = [["first encode", t_first, first.videos_encoded, first.videos_reused, first.texts_encoded, first.texts_reused]]
    for label, encoder in (("rerun, nothing changed", te), ("rerun, new text encoder", te2)):
        t0 = time.perf_counter()
        r = encode_dataset(EncodeConfig(captions=tmp / "many.json", videos=vids, out=out, text_encoder=str(encoder),
                                        num_workers=args.num_workers))
        rows.append([label, time.perf_counter() - t0, r.videos_encoded, r.videos_reused, r.texts_encoded, r.texts_reused])
    print_table("cache hits (content-keyed stores)",
                ["run", "seconds", "videos encoded", "videos reused", "captions encoded", "captions reused"], rows)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
