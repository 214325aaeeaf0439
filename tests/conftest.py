"""Shared fixtures: an isolated user config/home, PyAV-made videos, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from opensora.data.video import write_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED.exists():  # CI clones beside shared/ too; a checkout elsewhere may not have it
    SHARED = Path(os.environ.get("OPENSORA_SHARED_DATA", "/work/shared/data"))


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Every test gets its own config file and data home; no OPENSORA_* from the outside."""
    for k in list(os.environ):
        if k.startswith("OPENSORA_"):
            monkeypatch.delenv(k)
    base = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("OPENSORA_CONFIG", str(base / "config.toml"))
    monkeypatch.setenv("OPENSORA_HOME", str(base / "home"))
    return base


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run `opensora ARGS...` in-process; returns exit code, stdout and stderr."""
    from opensora_cli.main import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


def run_opensora(*args: str, env: dict | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run the real `opensora` console script in a subprocess."""
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", "from opensora_cli.main import run; run()", *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=timeout, **kw,
    )


def moving_square_video(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a coloured square moving right on a grey background."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(60, 255, size=3)
    frames = np.full((t, h, w, 3), 40, np.uint8)
    side = max(2, min(h, w) // 4)
    for i in range(t):
        x = (i * max(1, w // max(t, 1))) % max(1, w - side)
        frames[i, h // 3 : h // 3 + side, x : x + side] = colour
    return frames


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """Videos of several sizes, rates and lengths written with PyAV."""
    d = tmp_path_factory.mktemp("videos")
    specs = {"a.mp4": (8, 32, 48, 8), "b.mp4": (12, 48, 32, 12), "c.mp4": (16, 64, 64, 16), "d.mp4": (6, 32, 32, 6)}
    for i, (name, (t, h, w, fps)) in enumerate(specs.items()):
        write_video(d / name, moving_square_video(t, h, w, seed=i), fps)
    return d


@pytest.fixture(scope="session")
def tiny_text_encoder(tmp_path_factory) -> Path:
    """A tiny random CLIP text model with CLIP's real tokenizer, saved like a hub model."""
    from opensora.text.clip import build_tiny_clip_text_encoder

    return build_tiny_clip_text_encoder(tmp_path_factory.mktemp("clip"), hidden=32, layers=1, heads=2, max_length=16)


@pytest.fixture(scope="session")
def tiny_sdvae(tmp_path_factory) -> Path:
    """A tiny diffusers AutoencoderKL (downsample 2) saved with save_pretrained."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.5)
    d = tmp_path_factory.mktemp("sdvae")
    vae.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_vqvae(tmp_path_factory) -> Path:
    """A tiny VideoGPT-layout VQ-VAE (downsample 2x4x4, 64 codes) saved as config.json + safetensors."""
    import torch

    from opensora.compression.vqvae import VQVAE

    torch.manual_seed(0)
    m = VQVAE(embedding_dim=8, n_codes=64, n_hiddens=16, n_res_layers=1, downsample=(2, 4, 4))
    d = tmp_path_factory.mktemp("vqvae")
    m.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def encoded_dataset(tmp_path_factory, tiny_text_encoder) -> Path:
    """A raw-compression dataset written by `opensora data encode` from PyAV videos of two sizes."""
    import json

    from opensora_cli.main import main

    d = tmp_path_factory.mktemp("encoded")
    vids = d / "videos"
    vids.mkdir()
    items = []
    for i in range(8):
        h, w = (16, 16) if i % 2 else (16, 24)
        write_video(vids / f"v{i}.mp4", moving_square_video(4, h, w, seed=i), 4)
        items.append({"file": f"v{i}.mp4", "captions": [f"square number {i}", f"clip {i}"]})
    (d / "captions.json").write_text(json.dumps(items))
    code = main(["data", "encode", "-c", str(d / "captions.json"), "-v", str(vids), "-o", str(d / "ds"),
                 "--text-encoder", str(tiny_text_encoder), "--num-workers", "0"])
    assert code == 0
    return d / "ds"


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, encoded_dataset) -> Path:
    """A tiny DiT trained for a few steps through the real CLI (one process)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    r = run_opensora("train", "--data", encoded_dataset, "--model", "DiT/T-2", "--steps", "4", "--ckpt-every", "4",
                     "--batch-size", "4", "--num-workers", "0", "--run-dir", run, "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    return run / "ckpt-0000004"


@pytest.fixture(scope="session")
def tiny_clip_model(tmp_path_factory) -> Path:
    """A tiny random CLIP (text + vision) with CLIP's real tokenizer and an image processor, saved like a hub model."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from opensora.text.clip import build_clip_tokenizer_files

    d = tmp_path_factory.mktemp("clip-model")
    vocab = build_clip_tokenizer_files(d, max_length=16, num_merges=2000)
    tok = CLIPTokenizer.from_pretrained(str(d))
    torch.manual_seed(0)
    text = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(d))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(d))
    return d


@pytest.fixture(scope="session")
def tiny_i3d(tmp_path_factory) -> Path:
    """A tiny TorchScript video network with the call signature of StyleGAN-V's i3d_torchscript.pt."""
    import torch

    class TinyI3D(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 12, kernel_size=(3, 8, 8), stride=(2, 8, 8))
            self.head = torch.nn.Linear(12, 5)

        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            feats = torch.tanh(self.conv(x)).mean(dim=(2, 3, 4))  # (B, 12)
            return feats if return_features else torch.softmax(self.head(feats), dim=1)

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.script(TinyI3D()).save(str(path))
    return path
