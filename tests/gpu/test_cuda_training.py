"""CUDA only (skipped without a GPU): every plugin x precision trains, checkpoints, resumes and samples.

CI has no GPU; these run on a CUDA machine with `python -m pytest tests/gpu`. Each run is its own
process, as a user's is: a CUDA fault in one combination cannot poison the others.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from opensora.data.video import probe_video
from opensora.training.plugins import PLUGINS
from tests.conftest import run_opensora

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")

COMBOS = [(name, precision) for name, spec in PLUGINS.items() for precision in spec.precisions]
TRAIN = ["train", "--model", "DiT/T-2", "--batch-size", "4", "--num-workers", "0", "--lr", "1e-3", "--device", "cuda",
         "--condition", "adaln", "--steps", "4", "--ckpt-every", "2", "--keep", "2"]
THIRD_PARTY_NOISE = ("Warning", "warn(", "[extension]", "destroy_process_group", "Guessing device ID",
                     "using the device under current context", "Traceback")


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("plugin", "precision"), COMBOS, ids=[f"{p}-{q}" for p, q in COMBOS])
def test_plugin_precision_trains_resumes_and_samples(tmp_path, encoded_dataset, plugin, precision):
    args = [*TRAIN, "--data", encoded_dataset, "--plugin", plugin, "--precision", precision]
    full = tmp_path / "full"
    r = run_opensora(*args, "--run-dir", full)
    assert r.returncode == 0, r.stderr[-4000:]
    noise = [line for line in r.stderr.splitlines() if any(n in line for n in THIRD_PARTY_NOISE)]
    assert noise == [], noise
    recs = _records(full)
    assert [x["step"] for x in recs] == [1, 2, 3, 4]
    taken = [x for x in recs if not x.get("skipped")]
    assert len(taken) >= 3, recs  # fp16 starts at a scale our models step at
    assert all(math.isfinite(x["grad_norm"]) and x["grad_norm"] > 0 for x in taken), recs
    if precision == "fp16":
        assert all("loss_scale" in x for x in recs)

    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "ckpt-0000004")
    r = run_opensora(*args, "--run-dir", cut, "--resume", "auto")
    assert r.returncode == 0, r.stderr[-4000:]
    full_l, cut_l = [x["loss"] for x in recs], [x["loss"] for x in _records(cut)]
    # Bit-exact on the CPU (tests/training); CUDA's flash-attention backward accumulates with atomics,
    # so two identical CUDA runs already differ in the last bits.
    np.testing.assert_allclose(cut_l, full_l, rtol=1e-5, err_msg=f"{cut_l} vs {full_l}")

    out = tmp_path / "s.mp4"
    r = run_opensora("sample", "a square", "--ckpt", full / "ckpt-0000004", "--height", "16", "--width", "24",
                     "--frames", "4", "--fps", "4", "--steps", "3", "--device", "cuda", "-o", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert probe_video(out).frames == 4


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_sampling_on_cuda_in_16_bit(cli, tmp_path, trained_checkpoint, precision):
    out = tmp_path / "v.mp4"
    r = cli("sample", "a red square", "--ckpt", trained_checkpoint, "--height", "16", "--width", "24", "--fps", "4",
            "--sec", "1", "--steps", "3", "--device", "cuda", "--precision", precision, "-o", out)
    assert r.code == 0, r.err
    assert probe_video(out).frames == 4
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["device"].startswith("cuda") and side["precision"] == precision


def test_gemini_is_refused_before_any_step(tmp_path, encoded_dataset):
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--plugin", "gemini", "--precision", "bf16",
                     "--run-dir", tmp_path / "r")
    assert r.returncode == 2 and "--plugin gemini" in r.stderr and "--plugin zero2" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "r").exists()
