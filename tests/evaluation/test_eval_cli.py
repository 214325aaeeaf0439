"""`opensora eval` end to end: an encoded and a collated split, two checkpoints side by side, bad input."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture
def collated_split(tmp_path, encoded_dataset):
    """The encoded fixture's own videos and captions in `data collate`'s layout (annotations.json + videos/)."""
    src = encoded_dataset.parent
    split = tmp_path / "collated" / "val"
    split.mkdir(parents=True)
    shutil.copytree(src / "videos", split / "videos")
    shutil.copy(src / "captions.json", split / "annotations.json")
    return split


def test_eval_on_encoded_and_collated_splits(cli, tmp_path, trained_checkpoint, encoded_dataset, collated_split,
                                             tiny_clip_model, tiny_i3d):
    common = ["--clip", tiny_clip_model, "--i3d", tiny_i3d, "--steps", "3", "-n", "6", "--device", "cpu"]
    out = tmp_path / "encoded.json"
    r = cli("eval", trained_checkpoint, trained_checkpoint.parent, "--data", encoded_dataset, *common, "-o", out)
    assert r.code == 0, r.err
    first, second = json.loads(out.read_text())["results"]
    assert first["samples"] == 6 and first["step"] == 4
    assert set(first["metrics"]) == {"val_loss", "clip_score", "fvd"}  # not the world's captions: no accuracy
    assert 0 <= first["metrics"]["clip_score"] <= 100 and first["metrics"]["fvd"] >= 0
    assert first["metrics"] == second["metrics"]  # the run's newest checkpoint is the same one: fixed seeds
    assert "16 evenly spaced frames" in first["protocol"]["fvd"] and "sha256" in first["protocol"]["fvd"]
    assert "CLIP score" in r.out and "FVD" in r.out and r.out.count("ckpt-0000004") >= 2  # side by side
    assert "16 evenly spaced frames" in r.out.replace("\n", " ")
    # The collated split of the same videos: raw compression stores exact pixels, so the same figures.
    out2 = tmp_path / "collated.json"
    r = cli("eval", trained_checkpoint, "--data", collated_split, *common, "-o", out2, "--json")
    assert r.code == 0, r.err
    collated = json.loads(r.out)["results"][0]
    assert collated == json.loads(out2.read_text())["results"][0]
    assert collated["metrics"]["fvd"] == pytest.approx(first["metrics"]["fvd"], rel=1e-6)
    assert collated["metrics"]["clip_score"] == pytest.approx(first["metrics"]["clip_score"], rel=1e-6)
    assert "collated split's videos" in collated["protocol"]["fvd"]
    assert "val_loss" not in collated["metrics"]  # a collated split has no encoded latents to noise


def test_eval_bad_input_is_one_line(cli, tmp_path, trained_checkpoint, encoded_dataset, tiny_text_encoder):
    def one_line(r, *words):
        assert r.code == 2, r.err
        assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
        for w in words:
            assert w in r.err, r.err

    one_line(cli("eval", "--data", encoded_dataset), "no checkpoint given")
    one_line(cli("eval", trained_checkpoint), "--data is required")
    one_line(cli("eval", tmp_path, "--data", encoded_dataset), "not a checkpoint")
    one_line(cli("eval", trained_checkpoint, "--data", tmp_path), "neither an encoded dataset nor a collated split")
    (tmp_path / "i3d.pt").write_text("not a model")
    one_line(cli("eval", trained_checkpoint, "--data", encoded_dataset, "--i3d", tmp_path / "i3d.pt"),
             "--i3d", "not a TorchScript model")
    one_line(cli("eval", trained_checkpoint, "--data", encoded_dataset, "--i3d", tmp_path / "missing.pt"),
             "--i3d", "no such file")
    one_line(cli("eval", trained_checkpoint, "--data", encoded_dataset, "--clip", tiny_text_encoder),
             "--clip", "not a CLIP model")
    one_line(cli("eval", trained_checkpoint, "--data", encoded_dataset, "--samples", "1"), "--samples")
    one_line(cli("eval", trained_checkpoint, "--data", encoded_dataset, "--sampler", "euler"), "--sampler euler")
