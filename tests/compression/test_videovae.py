"""Causal 3D video VAEs from diffusers (tiny random Wan and CogVideoX built here): strides measured on the
meta device, 1 + 4k frames, normalised latents, and encode -> train -> sample through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from opensora.compression import load_compressor
from opensora.data.video import read_video, write_video
from opensora.errors import UserError
from tests.conftest import moving_square_video, run_opensora


def _wan(d):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
                     latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[2.0, 1.0, 0.5, 1.0]).save_pretrained(d)
    return d


def _cogvideox(d):
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    AutoencoderKLCogVideoX(block_out_channels=(8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=4,
                           temporal_compression_ratio=2, down_block_types=("CogVideoXDownBlock3D",) * 2,
                           up_block_types=("CogVideoXUpBlock3D",) * 2, scaling_factor=0.7).save_pretrained(d)
    return d


@pytest.fixture(scope="module", params=["wan", "cogvideox"])
def tiny_video_vae(request, tmp_path_factory):
    return (_wan if request.param == "wan" else _cogvideox)(tmp_path_factory.mktemp(request.param))


def test_strides_are_measured_and_time_is_causal(tiny_video_vae):
    c = load_compressor("video-vae", str(tiny_video_vae))
    assert c.stride == (2, 2, 2) and c.latent_channels == 4  # what these tiny architectures do
    video = moving_square_video(10, 18, 20, seed=1)
    cropped = c.crop(video)
    assert cropped.shape[:3] == (9, 18, 20)  # 1 + 2k frames: the tenth dropped
    (z,) = c.encode([cropped])
    assert z.shape == (4, 5, 9, 10) and z.dtype == np.float16
    x = c.to_diffusion(torch.from_numpy(z[None].astype(np.float32)))
    torch.testing.assert_close(c.from_diffusion(x), torch.from_numpy(z[None].astype(np.float32)), rtol=1e-5, atol=1e-5)
    frames = c.decode_diffusion(x)
    assert frames.shape == (1, 9, 18, 20, 3) and frames.dtype == torch.uint8


def test_the_vae_scale_and_shift_are_what_the_model_sees(tmp_path):
    c = load_compressor("video-vae", str(_wan(tmp_path / "wan")))
    z = torch.ones(1, 4, 1, 1, 1)
    torch.testing.assert_close(c.to_diffusion(z).flatten(), torch.tensor([0.45, 1.2, 1.4, 1.0]))
    assert c.spec()["latents_std"] == [2.0, 1.0, 0.5, 1.0]


def test_an_image_vae_or_no_vae_is_one_clear_line(tmp_path, tiny_sdvae):
    with pytest.raises(UserError, match="is a AutoencoderKL, not a video VAE.*--compression sdvae"):
        load_compressor("video-vae", str(tiny_sdvae))
    with pytest.raises(UserError, match="needs --vae"):
        load_compressor("video-vae")


def test_encode_train_sample_round_trip(tmp_path, tiny_video_vae, tiny_text_encoder):
    vids = tmp_path / "videos"
    vids.mkdir()
    items = []
    for i in range(4):
        write_video(vids / f"v{i}.mp4", moving_square_video(10, 16, 16, seed=i), 4)
        items.append({"file": f"v{i}.mp4", "captions": [f"square {i}"]})
    (tmp_path / "c.json").write_text(json.dumps(items))
    ds = tmp_path / "ds"
    r = run_opensora("data", "encode", "-c", tmp_path / "c.json", "-v", vids, "-o", ds, "--compression", "video-vae",
                     "--vae", tiny_video_vae, "--text-encoder", tiny_text_encoder, "--num-workers", "0", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((ds / "manifest.json").read_text())
    assert manifest["stride"] == [2, 2, 2] and manifest["compression"]["class"].startswith("AutoencoderKL")
    run = tmp_path / "run"
    train = ["train", "--data", ds, "--model", "DiT/T-2", "--steps", "2", "--ckpt-every", "2", "--batch-size", "2",
             "--num-workers", "0", "--device", "cpu", "--objective", "rflow", "--precision", "fp32"]
    r = run_opensora(*train, "--run-dir", run)
    assert r.returncode == 0, r.stderr[-2000:]
    # sequence parallelism over these latents (5 latent frames of 8x8) equals one process
    r = run_opensora(*train, "--run-dir", tmp_path / "sp", "--sp", "ulysses", "--nproc", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    losses = [[json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (run, tmp_path / "sp")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    out = tmp_path / "s.mp4"
    args = ["sample", "a square", "--ckpt", run / "ckpt-0000002", "--height", "16", "--width", "16", "--steps", "2",
            "--device", "cpu"]
    r = run_opensora(*args, "--frames", "8", "-o", out)
    assert r.returncode == 2 and "takes 1 + 2k frames" in r.stderr and "--frames 7 or --frames 9" in r.stderr
    r = run_opensora(*args, "--frames", "9", "-o", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_video(out)[0].shape == (9, 16, 16, 3)
