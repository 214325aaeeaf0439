"""`train --plan`'s memory prediction against the measured peak of real `opensora train` runs.

Each configuration runs `opensora train` for 2 steps in a fresh process (one rank, no data
workers) and reads its peak RSS (ru_maxrss); the prediction is what `train --plan` prints for the
same flags. Target: within 25%.

    python benchmarks/plan.py [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table  # noqa: E402
from opensora.data.encode import EncodeConfig, encode_dataset  # noqa: E402
from opensora.data.video import write_video  # noqa: E402
from opensora.text.clip import build_tiny_clip_text_encoder  # noqa: E402
from tests.conftest import moving_square_video  # noqa: E402

# (model, frames, size, batch, extra flags)
CONFIGS = [
    ("DiT/T-2", 8, 64, 2, []),
    ("DiT/S-4", 16, 64, 2, []),
    ("DiT/S-2", 8, 32, 2, []),
    ("DiT/S-2", 8, 32, 2, ["--grad-checkpoint"]),
    ("DiT/B-4", 8, 64, 1, []),
]

MEASURE = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if r.returncode:
    sys.exit(r.stderr[-2000:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    te = build_tiny_clip_text_encoder(tmp / "clip")
    cli = [sys.executable, "-c", "from opensora_cli.main import run; run()"]
    rows = []
    for model, frames, size, batch, extra in CONFIGS:
        name = f"{frames}x{size}"
        data = tmp / f"data-{name}"
        if not data.exists():
            vids = tmp / f"videos-{name}"
            vids.mkdir()
            for i in range(2):
                write_video(vids / f"v{i}.mp4", moving_square_video(frames, size, size, seed=i), 8)
            (tmp / f"c-{name}.json").write_text(json.dumps([{"file": f"v{i}.mp4", "captions": ["x"]} for i in range(2)]))
            encode_dataset(EncodeConfig(captions=tmp / f"c-{name}.json", videos=vids, out=data, text_encoder=str(te),
                                        num_workers=0))
        flags = ["--data", str(data), "--model", model, "--batch-size", str(batch), "--num-workers", "0",
                 "--device", "cpu", "--precision", "fp32", *extra]
        plan = json.loads(subprocess.run([*cli, "train", *flags, "--plan", "--json"], capture_output=True, text=True,
                                         check=True).stdout)
        peaks = []
        for k in range(args.runs):
            run = tmp / f"run-{model.replace('/', '_')}-{name}-{len(rows)}-{k}"
            out = subprocess.run([sys.executable, "-c", MEASURE, *cli, "train", *flags, "--steps", "2",
                                  "--ckpt-every", "1000", "--run-dir", str(run)], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            peaks.append(int(out.stdout.strip().splitlines()[-1]))
        peak = statistics.median(peaks)
        predicted = plan["memory"]["total"]
        rows.append([f"{model} {frames}x{size}x{size} b{batch} {' '.join(extra)}".strip(),
                     plan["params"], plan["tokens"], predicted / 2**20, peak / 2**20, predicted / peak])
    print_table(f"train --plan: predicted vs measured peak RSS (CPU, fp32, 2 steps, median of {args.runs})",
                ["config", "params", "tokens/sample", "predicted MiB", "measured MiB", "ratio"], rows)


if __name__ == "__main__":
    main()
