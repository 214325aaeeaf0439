"""Rectified flow: the training path and target, and a sampler that integrates the velocity exactly."""

from __future__ import annotations

import pytest
import torch

from opensora.diffusion import DiffusionConfig, make_objective
from opensora.diffusion.rflow import shift_timesteps
from opensora.diffusion.sampling import sample_latents
from opensora.errors import UserError


class Oracle(torch.nn.Module):
    """The exact velocity field towards one point x*: v(x_t, t) = (x_t - x*) / t."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = torch.nn.Parameter(target, requires_grad=False)

    def forward(self, x, timestep, text, text_mask, drop_text):
        t = (timestep.float() / 1000).view(-1, *([1] * (x.dim() - 1)))
        return (x - self.target) / t


def test_euler_lands_on_the_point_the_velocity_points_to():
    target = torch.randn(1, 4, 2, 4, 4)
    text = torch.zeros(1, 3, 8)
    for steps in (1, 3, 10):
        x = sample_latents(Oracle(target), (1, 4, 2, 4, 4), text, None, DiffusionConfig(objective="rflow"),
                           steps=steps, disable_cfg=True, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(x, target, rtol=1e-4, atol=1e-4)


def test_loss_is_the_velocity_error_on_the_straight_path():
    class Record(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, timestep, text, text_mask, drop_text):
            self.seen = (x.detach(), timestep.detach())
            return x * 0 + self.w

    rf = make_objective(DiffusionConfig(objective="rflow", cfg_dropout=0.0))
    x0, m = torch.randn(3, 4, 2, 4, 4), Record()
    loss = rf.loss(m, x0, torch.zeros(3, 2, 8), None, [11, 12, 13])
    t, noise, _ = rf._draws(tuple(x0.shape), [11, 12, 13])
    assert ((t > 0) & (t < 1)).all()
    tt = t.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(m.seen[0], (1 - tt) * x0 + tt * noise)  # the straight path
    torch.testing.assert_close(m.seen[1], t * 1000)
    torch.testing.assert_close(loss, (noise - x0).pow(2).mean())  # zero prediction: the velocity's square
    # one seed per sample: the same draws whichever batch a sample is in
    t1, n1, _ = rf._draws((1, 4, 2, 4, 4), [12])
    assert torch.equal(t1[0], t[1]) and torch.equal(n1[0], noise[1])


def test_shift_moves_timesteps_towards_noise_and_keeps_the_ends():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    s = shift_timesteps(t, 3.0)
    assert s[0] == 0 and s[-1] == 1 and (s[1:3] > t[1:3]).all()
    assert torch.equal(shift_timesteps(t, 1.0), t)


def test_a_sampler_of_the_other_objective_is_refused():
    target, text = torch.zeros(1, 4, 1, 2, 2), torch.zeros(1, 3, 8)
    with pytest.raises(UserError, match="--sampler ddim does not sample a model trained with --objective rflow; use euler"):
        sample_latents(Oracle(target), (1, 4, 1, 2, 2), text, None, DiffusionConfig(objective="rflow"), steps=2,
                       sampler="ddim")
    with pytest.raises(UserError, match="use ddim or dpm"):
        sample_latents(Oracle(target), (1, 4, 1, 2, 2), text, None, DiffusionConfig(), steps=2, sampler="euler")
