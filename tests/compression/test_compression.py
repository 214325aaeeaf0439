"""The three compressions behind one interface, with tiny real models saved and loaded from disk."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from opensora.compression import load_compressor
from opensora.compression.vqvae import VQVAE
from opensora.errors import UserError
from tests.conftest import moving_square_video


def test_raw_round_trip_exact():
    c = load_compressor("raw")
    v = moving_square_video(4, 16, 20)
    lat = c.encode([v])[0]
    x = c.to_diffusion(torch.from_numpy(lat)[None])
    assert x.shape == (1, 3, 4, 16, 20) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(c.decode_diffusion(x)[0].numpy(), v)


def test_sdvae_shapes(tiny_sdvae):
    c = load_compressor("sdvae", str(tiny_sdvae))
    assert c.stride == (1, 2, 2) and c.latent_channels == 4
    v = c.crop(moving_square_video(3, 17, 22))
    assert v.shape == (3, 16, 22, 3)
    lat = c.encode([v])[0]
    assert lat.shape == (4, 3, 8, 11)
    out = c.decode_diffusion(c.to_diffusion(torch.from_numpy(lat)[None]))
    assert out.shape == (1, 3, 16, 22, 3) and out.dtype == torch.uint8


def test_vqvae_codes_round_trip_and_decode(tiny_vqvae):
    c = load_compressor("vqvae", str(tiny_vqvae))
    assert c.stride == (2, 4, 4) and c.latent_channels == 8
    v = c.crop(moving_square_video(5, 18, 24))
    assert v.shape == (4, 16, 24, 3)
    codes = c.encode([v])[0]
    assert codes.shape == (2, 4, 6) and codes.dtype == np.int16
    x = c.to_diffusion(torch.from_numpy(codes)[None])
    assert x.shape == (1, 8, 2, 4, 6)
    assert torch.equal(c.from_diffusion(x)[0], torch.from_numpy(codes))  # snapping back gives the codes
    assert c.decode(torch.from_numpy(codes)[None]).shape == (1, 4, 16, 24, 3)


def test_vqvae_loads_videogpt_lightning_checkpoint(tmp_path):
    torch.manual_seed(1)
    m = VQVAE(embedding_dim=8, n_codes=32, n_hiddens=16, n_res_layers=1, downsample=(2, 4, 4))
    args = argparse.Namespace(embedding_dim=8, n_codes=32, n_hiddens=16, n_res_layers=1, downsample=(2, 4, 4))
    torch.save({"hyper_parameters": {"args": args}, "state_dict": m.state_dict()}, tmp_path / "videogpt.ckpt")
    loaded = VQVAE.from_pretrained(tmp_path / "videogpt.ckpt")
    for a, b in zip(m.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    # a port that prefixes every name (e.g. "model.") loads too
    d = tmp_path / "port"
    m.save_pretrained(d)
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    save_file({f"model.{k}": v for k, v in state.items()}, d / "weights.safetensors")
    assert torch.equal(VQVAE.from_pretrained(d).codebook.embeddings, m.codebook.embeddings)


def test_bad_compression_and_paths(tmp_path):
    with pytest.raises(UserError, match="--compression"):
        load_compressor("jpeg")
    with pytest.raises(UserError, match="--vae"):
        load_compressor("sdvae", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="--vae"):
        load_compressor("vqvae", str(tmp_path / "empty"))


def test_size_check_suggests_nearest(tiny_vqvae):
    from opensora.compression.base import check_multiples

    c = load_compressor("vqvae", str(tiny_vqvae))
    with pytest.raises(UserError, match=r"--height 30 is not a multiple of 4.*try 28 or 32"):
        check_multiples((8, 30, 32), c.stride, ("--frames", "--height", "--width"), "vqvae compression")
