"""The DDPM objective (epsilon or v prediction) and its DDIM / DPM-Solver++ samplers, on diffusers' schedulers."""

from __future__ import annotations

import torch

from opensora.diffusion import DiffusionConfig, condition_on_given, draw_given, weighted_mse


def ddim_scheduler(diffusion: DiffusionConfig):
    """DDIM with eta 0 (deterministic)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**diffusion.scheduler_config(), clip_sample=False, set_alpha_to_one=False)


def dpm_scheduler(diffusion: DiffusionConfig):
    """DPM-Solver++, multistep, 2nd order."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(**diffusion.scheduler_config(), algorithm_type="dpmsolver++", solver_order=2)


class DDPM:
    """Noise x0 to one of 1000 levels and regress the noise (or v); sample with DDIM or DPM-Solver++."""

    samplers = ("ddim", "dpm")
    default_sampler, default_steps = "ddim", 50

    def __init__(self, diffusion: DiffusionConfig):
        self.diffusion = diffusion
        self.scheduler = train_scheduler(diffusion)

    def loss(self, model, x0, text, text_mask, randomness, weights=None, total=None, at=None,
             frame_group: int = 1) -> torch.Tensor:
        """See `diffusion_loss`."""
        return diffusion_loss(model, x0, text, text_mask, self.diffusion, self.scheduler, randomness, weights, total, at,
                              frame_group)


def train_scheduler(diffusion: DiffusionConfig):
    """The DDPM scheduler that noises training samples."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**diffusion.scheduler_config(), clip_sample=False)


def _draws(diffusion: DiffusionConfig, shape: tuple[int, ...], randomness) -> tuple[torch.Tensor, ...]:
    """Timesteps (B,), noise (B, ...) and text-dropout flags (B,) from a generator or per-sample seeds."""
    if isinstance(randomness, torch.Generator):
        B = shape[0]
        t = torch.randint(0, diffusion.num_train_timesteps, (B,), generator=randomness)
        noise = torch.randn(shape, generator=randomness, dtype=torch.float32)
        drop = torch.rand(B, generator=randomness) < diffusion.cfg_dropout
        return t, noise, drop
    ts, noises, drops = [], [], []
    for seed in randomness:  # one generator per sample: the same draws whichever rank holds it
        g = torch.Generator().manual_seed(int(seed))
        ts.append(torch.randint(0, diffusion.num_train_timesteps, (1,), generator=g))
        noises.append(torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32))
        drops.append(torch.rand(1, generator=g) < diffusion.cfg_dropout)
    return torch.cat(ts), torch.cat(noises), torch.cat(drops)


def diffusion_loss(model, x0: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None,
                   diffusion: DiffusionConfig, scheduler, randomness, weights: torch.Tensor | None = None,
                   total: float | None = None, at: torch.Tensor | None = None, frame_group: int = 1) -> torch.Tensor:
    """Mean squared error of the model's epsilon (or v) prediction at random timesteps.

    All randomness (timesteps, noise, text dropout) comes from `randomness`: a CPU generator, or one
    seed per sample, so a resumed run draws exactly what an uninterrupted one would. With `weights`
    (B,) the result is sum(weight x per-sample loss) / `total` (the global batch's weight), which
    summed over data-parallel ranks is the global batch's mean however the batch was dealt.
    `at` (B,) in [0, 1) replaces the drawn timesteps by these positions on the noise schedule
    (validation's fixed timesteps); the noise is still drawn from `randomness`. With the config's
    `frame_condition`, some samples get their first groups of `frame_group` latent frames clean, at
    timestep 0, and unscored (image-to-video and extension training).
    """
    t, noise, drop = _draws(diffusion, tuple(x0.shape), randomness)
    if at is not None:
        t = (at * diffusion.num_train_timesteps).long().clamp(0, diffusion.num_train_timesteps - 1)
    t, noise, drop = t.to(x0.device), noise.to(x0.device), drop.to(x0.device)
    x0 = x0.float()
    xt = scheduler.add_noise(x0, noise, t)
    target = noise if diffusion.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    given = draw_given(diffusion, x0.shape[2] // frame_group, randomness, x0.shape[0])
    xt, t, keep = condition_on_given(x0, xt, t, given, frame_group)
    dtype = next(model.parameters()).dtype
    pred = model(xt.to(dtype), t, text.to(dtype), text_mask, drop)
    return weighted_mse(pred, target, weights, total, keep)
