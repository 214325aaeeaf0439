"""Rectified flow (as in Stable Diffusion 3, Open-Sora 1.2 and 2.0): the straight path
x_t = (1 - t) x0 + t noise, the model regresses its velocity noise - x0, timesteps t are drawn from a
logit-normal (sigmoid of a standard normal: most weight on the middle of the path), and sampling
integrates the velocity with diffusers' flow-matching Euler scheduler from t = 1 to 0.

`flow_shift` s moves timesteps towards the noise end, t -> s t / (1 + (s - 1) t), in training and
sampling alike: SD3 uses 3.0 at 1024 px, because larger images and longer videos keep more of their
signal at a given noise level and need more steps near pure noise (Open-Sora 1.2 scales it with the
token count). 1.0 (no shift) suits this toolkit's small latents.
"""

from __future__ import annotations

import torch

from opensora.diffusion import DiffusionConfig, condition_on_given, draw_given, weighted_mse


def euler_scheduler(diffusion: DiffusionConfig):
    """Flow-matching Euler from t = 1 (noise) to 0, with the run's timestep shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=diffusion.num_train_timesteps, shift=diffusion.flow_shift)


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t -> s t / (1 + (s - 1) t): the same transform diffusers applies to sampling sigmas."""
    return shift * t / (1 + (shift - 1) * t)


class RectifiedFlow:
    """Velocity regression on the straight data-noise path; sampled with flow-matching Euler."""

    samplers = ("euler",)
    default_sampler, default_steps = "euler", 30

    def __init__(self, diffusion: DiffusionConfig):
        self.diffusion = diffusion

    def _draws(self, shape: tuple[int, ...], randomness) -> tuple[torch.Tensor, ...]:
        """Timesteps in (0, 1) (B,), noise (B, ...), text-dropout flags (B,) from a generator or per-sample seeds."""
        def draw(g: torch.Generator, n: int, sample_shape: tuple[int, ...]):
            t = torch.sigmoid(torch.randn(n, generator=g))  # logit-normal(0, 1)
            noise = torch.randn(sample_shape, generator=g, dtype=torch.float32)
            return t, noise, torch.rand(n, generator=g) < self.diffusion.cfg_dropout

        if isinstance(randomness, torch.Generator):
            return draw(randomness, shape[0], shape)
        parts = [draw(torch.Generator().manual_seed(int(seed)), 1, (1, *shape[1:])) for seed in randomness]
        return tuple(torch.cat(p) for p in zip(*parts))

    def loss(self, model, x0: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None, randomness,
             weights: torch.Tensor | None = None, total: float | None = None,
             at: torch.Tensor | None = None, frame_group: int = 1) -> torch.Tensor:
        """Mean squared error of the predicted velocity (randomness, weights and `at` as in `ddpm.diffusion_loss`).

        Positions `at` are taken as they are, unshifted: validation compares runs of any --flow-shift.
        """
        t, noise, drop = self._draws(tuple(x0.shape), randomness)
        t = shift_timesteps(t, self.diffusion.flow_shift) if at is None else at.float()
        t, noise, drop = t.to(x0.device), noise.to(x0.device), drop.to(x0.device)
        x0 = x0.float()
        tt = t.view(-1, *([1] * (x0.dim() - 1)))
        xt = (1 - tt) * x0 + tt * noise
        target = noise - x0
        given = draw_given(self.diffusion, x0.shape[2] // frame_group, randomness, x0.shape[0])
        xt, t, keep = condition_on_given(x0, xt, t, given, frame_group)
        dtype = next(model.parameters()).dtype
        # the model sees the timestep on the scale of the scheduler's (t x 1000), like DDPM's
        pred = model(xt.to(dtype), t * self.diffusion.num_train_timesteps, text.to(dtype), text_mask, drop)
        return weighted_mse(pred, target, weights, total, keep)
