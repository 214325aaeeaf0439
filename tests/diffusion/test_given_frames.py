"""Frame conditioning: which samples get frames given, how they are noised and scored, and the sampler keeping them."""

from __future__ import annotations

import pytest
import torch

from opensora.diffusion import DiffusionConfig, condition_on_given, draw_given, make_objective, weighted_mse
from opensora.diffusion.sampling import sample_latents


def test_draws_are_per_sample_seeded_and_off_by_default():
    d = DiffusionConfig(frame_condition=0.5)
    a = draw_given(d, 4, list(range(400)), 400)
    assert torch.equal(a, draw_given(d, 4, list(range(400)), 400))  # the same seeds, the same draws
    assert torch.equal(a[10:20], draw_given(d, 4, list(range(10, 20)), 10))  # whichever batch holds them
    assert 0.4 < (a > 0).float().mean() < 0.6 and set(a.tolist()) == {0, 1, 2, 3}  # 1..groups-1 when given
    assert not draw_given(DiffusionConfig(), 4, list(range(50)), 50).any()
    assert not draw_given(d, 1, list(range(50)), 50).any()  # one group: nothing left to generate


def test_given_frames_are_clean_at_timestep_zero_and_unscored():
    x0, xt = torch.zeros(2, 3, 6, 2, 2), torch.ones(2, 3, 6, 2, 2)
    t = torch.tensor([700.0, 300.0])
    xt2, t2, keep = condition_on_given(x0, xt, t, torch.tensor([1, 0]), frame_group=2)
    assert xt2[0, :, :2].abs().max() == 0 and (xt2[0, :, 2:] == 1).all() and (xt2[1] == 1).all()
    assert t2.tolist() == [[0.0, 700.0, 700.0], [300.0, 300.0, 300.0]]
    assert keep.tolist() == [[False, False, True, True, True, True], [True] * 6]
    pred, target = torch.zeros(2, 3, 6, 2, 2), torch.zeros(2, 3, 6, 2, 2)
    pred[0, :, :2] = 100.0  # errors on given frames do not count
    assert weighted_mse(pred, target, torch.ones(2), 2.0, keep) == 0
    assert condition_on_given(x0, xt, t, torch.tensor([0, 0]), 2) == (xt, t, None)


@pytest.mark.parametrize("objective", ["ddpm", "rflow"])
def test_training_with_every_sample_given_frames_ignores_their_prediction(objective):
    d = DiffusionConfig(objective=objective, frame_condition=1.0)
    calls = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, text, mask, drop):
            calls.append((x.clone(), t.clone()))
            return x * self.w

    x0 = torch.randn(3, 2, 4, 2, 2)
    make_objective(d).loss(Spy(), x0, torch.zeros(3, 1, 1), None, [5, 6, 7], torch.ones(3), 3.0, frame_group=1)
    x, t = calls[0]
    assert t.shape == (3, 4) and (t[:, 0] == 0).all() and (t[:, -1] > 0).all()
    for b in range(3):
        given = int((t[b] == 0).sum())
        assert 1 <= given <= 3 and torch.equal(x[b, :, :given], x0[b, :, :given])


def test_sampler_keeps_the_given_frames_and_passes_their_timestep_as_zero():
    seen = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, t, text, mask, drop):
            seen.append(t.clone())
            return torch.zeros_like(x)

    given = torch.full((1, 2, 2, 3, 3), 0.5)
    out = sample_latents(Model(), (1, 2, 6, 3, 3), torch.zeros(1, 1, 1), None, DiffusionConfig(objective="rflow"),
                         steps=3, cfg_scale=2.0, generator=torch.Generator().manual_seed(0), given=given,
                         frame_group=2)
    assert torch.equal(out[:, :, :2], given)
    assert all(t.shape == (2, 3) and (t[:, 0] == 0).all() and (t[:, 1:] > 0).all() for t in seen)
