"""T5-family text encoders (tiny T5 and UMT5 built here): chosen from the config, their own length, and the
padding mask that makes the DiT ignore padded tokens; encode -> train -> sample through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from opensora.data.video import write_video
from opensora.text import load_text_encoder
from opensora.text.t5 import build_tiny_t5_encoder
from tests.conftest import moving_square_video, run_opensora


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    return build_tiny_t5_encoder(tmp_path_factory.mktemp("t5"))


@pytest.mark.parametrize("model_type, cls", [("t5", "T5EncoderModel"), ("umt5", "UMT5EncoderModel")])
def test_the_encoder_class_comes_from_the_config(tmp_path, model_type, cls):
    enc = load_text_encoder(str(build_tiny_t5_encoder(tmp_path / model_type, model_type=model_type)))
    assert type(enc.model).__name__ == cls and enc.max_length == 120 and enc.spec()["family"] == "T5"
    feats, lengths = enc.encode(["a red circle moving left", "a dog"])
    assert feats.shape == (2, 120, 32) and list(lengths) == [6, 3]  # words + </s>


def test_padded_tokens_do_not_change_what_the_model_sees(tiny_t5):
    from opensora.models.presets import create_model

    enc = load_text_encoder(str(tiny_t5), max_length=10)
    feats, lengths = enc.encode(["a blue square moving up"])
    text = torch.from_numpy(feats)
    mask = torch.arange(10)[None] < int(lengths[0])
    torch.manual_seed(0)
    for condition in ("cross-attn", "adaln", "token-concat"):
        model = create_model("DiT/T-2", 4, condition, 32, 10).eval()
        for p in model.final_layer.parameters():  # zero-initialised: make the output depend on the input
            torch.nn.init.normal_(p, std=0.02)
        x, t = torch.randn(1, 4, 2, 4, 4), torch.tensor([500])
        garbage = text.clone()
        garbage[:, int(lengths[0]):] = torch.randn_like(garbage[:, int(lengths[0]):]) * 10
        with torch.no_grad():
            torch.testing.assert_close(model(x, t, garbage, mask), model(x, t, text, mask), rtol=1e-5, atol=1e-5)


def test_t5_encode_train_sample(tmp_path, tiny_t5):
    vids = tmp_path / "videos"
    vids.mkdir()
    items = [{"file": f"v{i}.mp4", "captions": [f"a red square moving {d}"]} for i, d in enumerate(["left", "right"])]
    for i in range(2):
        write_video(vids / f"v{i}.mp4", moving_square_video(4, 16, 16, seed=i), 4)
    (tmp_path / "c.json").write_text(json.dumps(items))
    ds, run = tmp_path / "ds", tmp_path / "run"
    r = run_opensora("data", "encode", "-c", tmp_path / "c.json", "-v", vids, "-o", ds, "--text-encoder", tiny_t5,
                     "--text-max-length", "16", "--num-workers", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    text = json.loads((ds / "manifest.json").read_text())["text_encoder"]
    assert (text["family"], text["max_length"], text["dim"]) == ("T5", 16, 32)
    r = run_opensora("train", "--data", ds, "--model", "DiT/T-2", "--steps", "2", "--ckpt-every", "2", "--batch-size", "2",
                     "--num-workers", "0", "--run-dir", run, "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_opensora("sample", "a red square moving left", "--ckpt", run / "ckpt-0000002", "--height", "16", "--width",
                     "16", "--frames", "2", "--steps", "2", "--device", "cpu", "-o", tmp_path / "s.mp4")
    assert r.returncode == 0, r.stderr[-2000:]
