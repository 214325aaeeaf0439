"""Does the demo model draw what the prompt asks? Colour and direction accuracy on held-out prompts.

Runs the full `opensora demo` pipeline (world -> encode -> train -> sample) and judges every sampled
video of a colour x shape x direction never seen in training.

    python benchmarks/demo_quality.py [--out DIR] [--steps N] [--samples 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table  # noqa: E402
from opensora.demo import DemoConfig, run_demo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="demo-quality-"))
    cfg = DemoConfig(out=out, samples_per_prompt=args.samples, seed=args.seed)
    if args.steps:
        cfg.steps = args.steps
    t0 = time.perf_counter()
    r = run_demo(cfg)
    total = time.perf_counter() - t0
    rows = [[j["prompt"], j["colour"], j["direction"] or "-", j["colour_ok"], j["direction_ok"]] for j in r.judged]
    print_table("held-out prompts", ["prompt", "colour", "direction", "colour ok", "direction ok"], rows)
    print_table(f"demo quality ({cfg.steps} steps, {cfg.model}, seed {args.seed})", ["metric", "value", "target"], [
        ["colour accuracy", f"{r.colour_accuracy:.1%}", ">= 95%"],
        ["direction accuracy", f"{r.direction_accuracy:.1%}", ">= 90%"],
        ["training seconds", f"{r.train_seconds:.0f}", ""],
        ["whole demo seconds", f"{total:.0f}", "<= 600"],
    ])


if __name__ == "__main__":
    main()
