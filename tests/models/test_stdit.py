"""STDiT: zero output at init, factorised attention, per-frame timesteps, checkpointing, save/load."""

from __future__ import annotations

import pytest
import torch

from opensora.models.presets import MODELS, condition_problem, create_model
from opensora.models.stdit import STDiT


def _perturbed(name="STDiT/T-2", condition="cross-attn", seed=0):
    torch.manual_seed(seed)
    m = create_model(name, 4, condition, 16, 8)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def _inputs(b=2, t=4, h=6, w=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 4, t, h, w, generator=g), torch.randint(0, 1000, (b,), generator=g).float(),
            torch.randn(b, 8, 16, generator=g), torch.arange(8)[None] < torch.tensor([[5], [8]]))


def test_presets_match_dit_sizes_and_output_starts_at_zero():
    for size in ("T", "S", "B", "L", "XL"):
        for patch in (2, 4, 8):
            a, b = MODELS[f"STDiT/{size}-{patch}"], MODELS[f"DiT/{size}-{patch}"]
            assert (a.depth, a.hidden_size, a.num_heads, a.patch) == (b.depth, b.hidden_size, b.num_heads, b.patch)
    for condition in ("cross-attn", "adaln"):
        m = create_model("STDiT/T-2", 4, condition, 16, 8)
        assert isinstance(m, STDiT)
        x, t, text, mask = _inputs()
        assert m(x, t, text, mask).abs().max() == 0


def test_token_concat_is_refused_with_the_fix():
    assert "use --condition cross-attn or adaln" in condition_problem("STDiT/S-2", "token-concat")
    assert condition_problem("DiT/S-2", "token-concat") is None
    with pytest.raises(ValueError, match="cross-attn or adaln"):
        create_model("STDiT/T-2", 4, "token-concat", 16, 8)


def test_spatial_attention_stays_in_its_frame_and_temporal_attention_crosses_frames():
    m = _perturbed()
    x, t, text, mask = _inputs()
    y = m(x, t, text, mask)
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # change frame 0 only
    changed = (m(x2, t, text, mask) - y).abs().amax(dim=(0, 1, 3, 4))  # per frame
    assert (changed > 1e-4).all()  # every frame sees frame 0 through temporal attention
    for block in m.blocks:  # without temporal attention, frames are independent
        block.temporal_attn.proj.weight.data.zero_()
        block.temporal_attn.proj.bias.data.zero_()
    y = m(x, t, text, mask)
    changed = (m(x2, t, text, mask) - y).abs().amax(dim=(0, 1, 3, 4))
    assert changed[0] > 1e-4 and (changed[1:] < 1e-6).all()


def test_per_frame_timesteps_equal_one_timestep_when_equal_and_differ_otherwise():
    m = _perturbed(condition="adaln")
    x, t, text, mask = _inputs(t=4)
    y = m(x, t, text, mask)
    assert torch.allclose(m(x, t[:, None].expand(2, 4), text, mask), y, atol=1e-6)
    per_frame = t[:, None].expand(2, 4).clone()
    per_frame[:, 0] = 0  # the first frame given clean
    assert not torch.allclose(m(x, per_frame, text, mask), y, atol=1e-4)
    with pytest.raises(ValueError, match="one per each of the 4 latent frames"):
        m(x, torch.zeros(2, 3), text, mask)


def test_gradient_checkpointing_gives_the_same_gradients_and_save_load_round_trips(tmp_path):
    from opensora.checkpoint import load_dit

    m = _perturbed().train()
    x, t, text, mask = _inputs()
    m(x, t, text, mask).pow(2).mean().backward()
    grads = [None if p.grad is None else p.grad.clone() for p in m.parameters()]  # the null text: unused
    m.zero_grad()
    m.enable_gradient_checkpointing()
    m(x, t, text, mask).pow(2).mean().backward()
    for g, p in zip(grads, m.parameters()):
        assert (g is None and p.grad is None) or torch.allclose(g, p.grad, atol=1e-6)
    m.save_pretrained(tmp_path / "model", safe_serialization=True)
    loaded = load_dit(tmp_path / "model").eval()
    assert isinstance(loaded, STDiT) and loaded.config.model_name == "STDiT/T-2"
    m.eval()
    assert torch.equal(loaded(x, t, text, mask), m(x, t, text, mask))
