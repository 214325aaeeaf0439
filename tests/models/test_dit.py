"""VideoDiT: shapes, zero init, dynamic resolution, determinism, overfitting, CFG batching, save/load."""

from __future__ import annotations

import pytest
import torch

from opensora.checkpoint import is_checkpoint, load_model, save_model_dir
from opensora.diffusion import DiffusionConfig
from opensora.diffusion.ddpm import diffusion_loss, train_scheduler
from opensora.diffusion.sampling import sample_latents
from opensora.errors import UserError
from opensora.models.dit import CONDITIONINGS, POS_EMBEDS, PatchEmbed3D
from opensora.models.presets import MODELS, create_model, model_config

TEXT_DIM, TEXT_LEN = 32, 16


def _text(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(b, TEXT_LEN, TEXT_DIM, generator=g)
    mask = torch.arange(TEXT_LEN)[None] < torch.randint(3, TEXT_LEN + 1, (b, 1), generator=g)
    return text, mask


def _model(condition, channels=4, seed=0, name="DiT/T-2"):
    torch.manual_seed(seed)
    return create_model(name, channels, condition, TEXT_DIM, TEXT_LEN)


def test_presets_follow_the_dit_paper():
    assert model_config("DiT/XL-2")["depth"] == 28 and model_config("DiT/XL-2")["hidden_size"] == 1152
    assert model_config("DiT/XL-2")["num_heads"] == 16 and model_config("DiT/S-8")["patch_size"] == (1, 8, 8)
    assert {"DiT/S-2", "DiT/B-4", "DiT/L-8", "DiT/XL-2", "DiT/T-2"} <= set(MODELS)
    with pytest.raises(UserError, match="DiT/XL-2"):
        model_config("DiT/XL2")


@pytest.mark.parametrize("condition", CONDITIONINGS.names())
@pytest.mark.parametrize("channels", [3, 4, 8], ids=["raw", "sdvae", "vqvae"])
def test_shapes_and_zero_output_at_init(condition, channels):
    m = _model(condition, channels)
    x = torch.randn(2, channels, 3, 8, 6)
    text, mask = _text(2)
    y = m(x, torch.tensor([3, 900]), text, mask)
    assert y.shape == x.shape
    assert torch.count_nonzero(y) == 0  # DiT's zero-init: exactly zero


@pytest.mark.parametrize("condition", CONDITIONINGS.names())
def test_any_resolution_and_length_with_cached_positions(condition):
    m = _model(condition)
    with torch.no_grad():
        for p in m.final_layer.parameters():
            p.normal_(0, 0.02)
    text, mask = _text(1)
    for shape in [(1, 8, 8), (4, 6, 10), (2, 16, 4)]:
        y = m(torch.randn(1, 4, *shape), torch.tensor([10]), text, mask)
        assert y.shape == (1, 4, *shape) and torch.isfinite(y).all() and y.abs().sum() > 0
    pe = m.x_embedder.pos_embed((4, 3, 5), torch.device("cpu"), torch.float32)  # (N, D) for that grid
    assert pe.shape == (60, m.config.hidden_size) and not torch.equal(pe[:15], pe[15:30])  # frames differ
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(1, 4, 1, 7, 8), torch.tensor([1]), text, mask)



@pytest.mark.parametrize("kind", POS_EMBEDS)
def test_positions_are_absolute_and_time_is_visible(kind):
    pe = PatchEmbed3D((1, 2, 2), 4, 64, kind)
    small = pe.pos_embed((2, 3, 4), "cpu", torch.float32).view(2, 3, 4, 64)
    large = pe.pos_embed((5, 6, 7), "cpu", torch.float32).view(5, 6, 7, 64)
    # A token's position code does not depend on the size of the clip around it.
    torch.testing.assert_close(small, large[:2, :3, :4])
    # Every (t, h, w) is distinct; swapping h and w changes the code.
    flat = large.reshape(-1, 64)
    assert torch.cdist(flat, flat).add(torch.eye(len(flat)) * 1e3).min() > 0.1
    assert not torch.allclose(large[0, 1, 2], large[0, 2, 1])
    # Neighbouring frames differ in many channels with "sum" (every channel carries time).
    changed = ((large[1, 0, 0] - large[0, 0, 0]).abs() > 1e-3).sum().item()
    assert changed >= (32 if kind == "sum" else 8)
    with pytest.raises(ValueError, match="pos_embed"):
        PatchEmbed3D((1, 2, 2), 4, 64, "learned")

def test_deterministic_under_a_seed():
    a, b = _model("cross-attn", seed=3), _model("cross-attn", seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    text, mask = _text(2)
    cfg = DiffusionConfig()
    x0 = torch.randn(2, 4, 2, 8, 8)
    la = diffusion_loss(a, x0, text, mask, cfg, train_scheduler(cfg), torch.Generator().manual_seed(5))
    lb = diffusion_loss(b, x0, text, mask, cfg, train_scheduler(cfg), torch.Generator().manual_seed(5))
    assert la.item() == lb.item()


@pytest.mark.parametrize("condition", CONDITIONINGS.names())
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_overfits_one_small_batch(condition, prediction):
    m = _model(condition)
    cfg = DiffusionConfig(prediction_type=prediction, cfg_dropout=0.0)
    sched = train_scheduler(cfg)
    x0 = torch.randn(2, 4, 2, 4, 4)
    text, mask = _text(2)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0)
    losses = []
    for _ in range(200):
        # One fixed batch: same timesteps and noise every step, so the loss can go to ~0.
        loss = diffusion_loss(m, x0, text, mask, cfg, sched, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.parametrize("condition", CONDITIONINGS.names())
def test_cfg_batched_equals_two_passes(condition):
    m = _model(condition).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x = torch.randn(2, 4, 2, 4, 4)
    text, mask = _text(2)
    t = torch.tensor([500, 500])
    with torch.no_grad():
        both = m(torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, text]), torch.cat([mask, mask]),
                 torch.tensor([False, False, True, True]))
        cond = m(x, t, text, mask, torch.tensor([False, False]))
        uncond = m(x, t, text, mask, torch.tensor([True, True]))
    torch.testing.assert_close(both[:2], cond, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[2:], uncond, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cond, uncond)


def test_sampling_cfg_paths_and_samplers():
    m = _model("cross-attn").eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    text, mask = _text(1)
    cfg = DiffusionConfig()
    calls = []
    m.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    for sampler in ("ddim", "dpm"):
        calls.clear()
        a = sample_latents(m, (1, 4, 2, 4, 4), text, mask, cfg, steps=4, sampler=sampler, cfg_scale=3.0,
                           generator=torch.Generator().manual_seed(0))
        assert calls == [2] * 4  # one batched forward (cond + uncond) per step
        calls.clear()
        b = sample_latents(m, (1, 4, 2, 4, 4), text, mask, cfg, steps=4, sampler=sampler, disable_cfg=True,
                           generator=torch.Generator().manual_seed(0))
        assert calls == [1] * 4  # one plain forward per step
        assert a.shape == b.shape == (1, 4, 2, 4, 4) and not torch.allclose(a, b)


def test_gradient_checkpointing_matches():
    m = _model("cross-attn")
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x = torch.randn(2, 4, 2, 4, 4)
    text, mask = _text(2)
    m(x, torch.tensor([1, 2]), text, mask).square().sum().backward()
    g1 = [None if p.grad is None else p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.enable_gradient_checkpointing()
    m(x, torch.tensor([1, 2]), text, mask).square().sum().backward()
    for a, p in zip(g1, m.parameters()):
        if a is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(a, p.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("condition", CONDITIONINGS.names())
def test_save_load_round_trip(tmp_path, condition):
    m = _model(condition)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ema = _model(condition, seed=9)
    save_model_dir(tmp_path / "ck", m, {"model_name": "DiT/T-2", "step": 7}, ema=ema)
    assert is_checkpoint(tmp_path / "ck")
    assert (tmp_path / "ck" / "model" / "config.json").exists()
    assert list((tmp_path / "ck" / "model").glob("*.safetensors"))
    loaded, meta = load_model(tmp_path / "ck", ema=False)
    assert meta["step"] == 7 and meta["weights"] == "model"
    for (n, a), b in zip(m.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), n
    loaded_ema, meta = load_model(tmp_path / "ck", ema=True)
    assert meta["weights"] == "ema"
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), loaded_ema.state_dict().values()))
    x = torch.randn(1, 4, 2, 4, 4)
    text, mask = _text(1)
    with torch.no_grad():
        torch.testing.assert_close(m(x, torch.tensor([5]), text, mask), loaded(x, torch.tensor([5]), text, mask))


def test_checkpoints_without_pos_embed_keep_the_concatenated_layout(tmp_path):
    import json

    from opensora.checkpoint import load_dit

    m = _model("adaln")
    m.save_pretrained(tmp_path / "new", safe_serialization=True)
    assert load_dit(tmp_path / "new").x_embedder.pos_embed_kind == "sum"
    cfg_path = tmp_path / "new" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["pos_embed"]  # as written before the option existed
    cfg_path.write_text(json.dumps(cfg))
    assert load_dit(tmp_path / "new").x_embedder.pos_embed_kind == "concat"
