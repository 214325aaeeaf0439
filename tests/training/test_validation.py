"""Validation loss and sample previews during training: logged, comparable, and harmless to exact resume."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from opensora.data.video import probe_video
from tests.conftest import run_opensora

TRAIN = ["train", "--model", "DiT/T-2", "--batch-size", "4", "--num-workers", "0", "--lr", "2e-3", "--device", "cpu",
         "--objective", "rflow"]


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


@pytest.mark.timeout(900)
def test_validation_and_previews_are_logged_and_leave_training_exact(tmp_path, encoded_dataset):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("square number 1\n\nclip 2\na third prompt\n")
    extras = ["--val-data", encoded_dataset, "--val-every", "2", "--val-samples", "6", "--sample-prompts", prompts,
              "--sample-every", "3", "--sample-steps", "2"]
    base = [*TRAIN, "--data", encoded_dataset, "--ckpt-every", "3", "--nproc", "2"]
    full = tmp_path / "full"
    r = run_opensora(*base, *extras, "--run-dir", full, "--steps", "6")
    assert r.returncode == 0, r.stderr[-3000:]
    # the same run without them for 3 steps, then resumed with them: step for step the same losses
    cut = tmp_path / "cut"
    assert run_opensora(*base, "--run-dir", cut, "--steps", "3").returncode == 0
    r = run_opensora(*base, *extras, "--run-dir", cut, "--steps", "6", "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _records(full), _records(cut)
    assert [x["loss"] for x in a] == [x["loss"] for x in b]
    val = {x["step"]: x["val_loss"] for x in a if "val_loss" in x}
    assert sorted(val) == [2, 4, 6] and all(0 < v < 10 for v in val.values())
    assert b[-1]["val_loss"] == pytest.approx(val[6], rel=1e-6)  # same weights, same fixed triples
    assert [x["step"] for x in a if "preview_seconds" in x] == [3, 6]
    for step in (3, 6):
        videos = sorted((full / "samples" / f"step-{step:07d}").glob("*.mp4"))
        assert [v.name for v in videos] == ["00-square-number-1.mp4", "01-clip-2.mp4", "02-a-third-prompt.mp4"]
        assert all(probe_video(v).frames == 4 for v in videos) and all(v.with_suffix(".png").exists() for v in videos)
    acc = EventAccumulator(str(full / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/loss")] == [2, 4, 6]
    assert [e.step for e in acc.Images("preview/02")] == [3, 6]
    # Recomputed in one process from the saved weights: the logged figure, whatever the rank count.
    from opensora.checkpoint import load_dit
    from opensora.compression import compressor_from_spec
    from opensora.data.dataset import read_manifest
    from opensora.diffusion import DiffusionConfig
    from opensora.training.validation import Validator

    meta = json.loads((full / "ckpt-0000006" / "opensora.json").read_text())
    model = load_dit(full / "ckpt-0000006" / "model").eval()
    v = Validator(encoded_dataset, read_manifest(encoded_dataset), 6, tuple(model.config.patch_size), 2, 0, 1)
    here = v.loss(model, DiffusionConfig.from_dict(meta["diffusion"]), compressor_from_spec(meta["compression"]),
                  nullcontext, torch.device("cpu"), 1)
    assert here == pytest.approx(val[6], rel=1e-5)


def test_validation_and_preview_settings_are_checked(cli, tmp_path, encoded_dataset, tiny_sdvae, tiny_text_encoder):
    base = [*TRAIN, "--data", encoded_dataset, "--steps", "2"]
    r = cli(*base, "--run-dir", tmp_path / "a", "--val-every", "5", "--sample-steps", "3")
    assert r.code == 2 and "--val-every 5 needs --val-data" in r.err and "--sample-steps 3 needs --sample-prompts" in r.err
    r = cli(*base, "--run-dir", tmp_path / "b", "--sample-prompts", tmp_path / "none.txt")
    assert r.code == 2 and "--sample-prompts" in r.err and "no such file" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "b").exists()  # refused before anything was written
    (tmp_path / "empty.txt").write_text("\n\n")
    r = cli(*base, "--run-dir", tmp_path / "c", "--sample-prompts", tmp_path / "empty.txt")
    assert r.code == 2 and "no prompts in it" in r.err
    # a validation set encoded with another compression cannot be compared
    import json as _json

    from opensora.data.video import write_video
    from tests.conftest import moving_square_video

    vids = tmp_path / "v"
    vids.mkdir()
    write_video(vids / "a.mp4", moving_square_video(4, 16, 16), 4)
    (tmp_path / "caps.json").write_text(_json.dumps([{"file": "a.mp4", "captions": ["x"]}]))
    assert cli("data", "encode", "-c", tmp_path / "caps.json", "-v", vids, "-o", tmp_path / "sd", "--compression",
               "sdvae", "--vae", tiny_sdvae, "--text-encoder", tiny_text_encoder, "--num-workers", "0").code == 0
    r = cli(*base, "--run-dir", tmp_path / "d", "--val-data", tmp_path / "sd")
    assert r.code == 2 and "--val-data" in r.err and "another compression" in r.err
