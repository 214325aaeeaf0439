"""Mixed precision on the CPU: bf16 resumes bit-exactly (fp32 masters restored), every step logs a real norm."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch

from opensora.errors import UserError
from opensora.training.plugins import PLUGINS, check_plugin
from tests.conftest import run_opensora

TRAIN = ["train", "--model", "DiT/T-2", "--batch-size", "4", "--num-workers", "0", "--lr", "2e-3", "--device", "cpu",
         "--condition", "adaln", "--precision", "bf16", "--steps", "4", "--ckpt-every", "2", "--keep", "2"]


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


@pytest.mark.parametrize("plugin", ["hybrid", "ddp"])
def test_bf16_resume_is_exact_and_grad_norm_is_real(tmp_path, encoded_dataset, plugin):
    full = tmp_path / "full"
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--plugin", plugin, "--run-dir", full)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = _records(full)
    assert [x["step"] for x in recs] == [1, 2, 3, 4]
    assert all(math.isfinite(x["grad_norm"]) and x["grad_norm"] > 0 for x in recs), recs
    ckpt = full / "ckpt-0000002"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert (state["plugin"], state["precision"], state["optimizer_state"]) == (plugin, "bf16", True)
    # hybrid keeps bf16 working weights (saved as the model) and fp32 masters (saved beside them)
    assert (ckpt / "master-rank00000.safetensors").exists() == (plugin == "hybrid")
    umask = os.umask(0)
    os.umask(umask)
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in ckpt.rglob("*") if f.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes  # teammates can read it (safetensors writes 0600)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "ckpt-0000004")
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--plugin", plugin, "--run-dir", cut, "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [x["loss"] for x in _records(cut)] == [x["loss"] for x in recs]  # step 4 needs the fp32 masters
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--plugin", plugin, "--run-dir", cut, "--resume", "auto",
                     "--precision", "fp32", "--steps", "6")
    assert r.returncode == 2 and "--precision bf16" in r.stderr and "Traceback" not in r.stderr


def test_plugin_precision_refusals_name_the_fix():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for precision in ("fp32", "bf16", "fp16"):
        with pytest.raises(UserError, match=r"^--plugin gemini: .*illegal memory access.*use --plugin zero2"):
            check_plugin("gemini", precision, cuda)
    with pytest.raises(UserError, match="--plugin zero2 needs a CUDA GPU"):
        check_plugin("zero2", "bf16", cpu)
    with pytest.raises(UserError, match="--precision fp16 needs a CUDA GPU"):
        check_plugin("hybrid", "fp16", cpu)
    for name, spec in PLUGINS.items():
        for precision in spec.precisions:
            check_plugin(name, precision, cuda)  # every advertised combination is accepted on a GPU
