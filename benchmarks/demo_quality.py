"""Does the demo model draw what the prompt asks? Colour and direction accuracy on held-out prompts.

Runs the full `opensora demo` pipeline (world -> encode -> train -> sample) for each model, objective
and seed, and judges every sampled video of a colour x shape x direction never seen in training. The
runs go one after the other on the same machine, so their seconds compare.

    python benchmarks/demo_quality.py [--model DiT/T-4 STDiT/T-4] [--objective ddpm rflow] [--seed 0 1]
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
    ap.add_argument("--objective", nargs="+", default=[DemoConfig.objective], choices=["ddpm", "rflow"])
    ap.add_argument("--seed", type=int, nargs="+", default=[0])
    ap.add_argument("--model", nargs="+", default=[DemoConfig.model], help="e.g. DiT/T-4 STDiT/T-4")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--sample-steps", type=int, default=None, help="default: the demo's for the objective")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--frame-condition", type=float, default=0.0,
                    help="train with first frames given (STDiT) and also judge image-to-video from held-out clips")
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="demo-quality-"))
    rows = []
    for seed in args.seed:
        for objective, model in ((o, m) for o in args.objective for m in args.model):
            cfg = DemoConfig(out=root / f"{model.replace('/', '_')}-{objective}-seed{seed}", model=model,
                             samples_per_prompt=args.samples, seed=seed, objective=objective, steps=args.steps,
                             sample_steps=args.sample_steps, frame_condition=args.frame_condition)
            t0 = time.perf_counter()
            r = run_demo(cfg)
            total = time.perf_counter() - t0
            i2v = [f"{a:.1%}" for a in r.continued_accuracy()] if r.continued else ["-", "-"]
            rows.append([model, objective, seed, cfg.steps, cfg.sample_steps, f"{r.colour_accuracy:.1%}",
                         f"{r.direction_accuracy:.1%}", *i2v, f"{r.train_seconds:.0f}", f"{r.sample_seconds:.0f}",
                         f"{total:.0f}"])
            print(f"{model} {objective} seed {seed}: colour {r.colour_accuracy:.1%}, direction {r.direction_accuracy:.1%}",
                  flush=True)
    print_table("demo quality on held-out prompts (targets: colour >= 95%, direction >= 90%)",
                ["model", "objective", "seed", "train steps", "sample steps", "colour", "direction", "i2v colour",
                 "i2v direction", "train s", "sample s", "whole demo s"], rows)


if __name__ == "__main__":
    main()
