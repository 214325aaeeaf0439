"""The DDPM objective (epsilon or v prediction) and DDIM / DPM-Solver++ sampling, on diffusers' schedulers.

Never imported by the model code; the model is any callable
model(x, timestep, text, text_mask, drop_text) -> prediction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from opensora.errors import UserError
from opensora.progress import ProgressEvent, ProgressFn, no_progress
from opensora.registry import Registry

OBJECTIVES: Registry[str] = Registry("objective", "--prediction")  # name -> diffusers' prediction_type
OBJECTIVES.add("epsilon", "epsilon", "predict the noise (DDPM)")
OBJECTIVES.add("v_prediction", "v_prediction", "predict v = alpha * noise - sigma * x0 (progressive distillation)")

SAMPLERS: Registry = Registry("sampler", "--sampler")  # name -> factory(DiffusionConfig) -> diffusers scheduler


@SAMPLERS.register("ddim", "DDIM, eta 0 (deterministic)")
def _ddim(diffusion: DiffusionConfig):
    from diffusers import DDIMScheduler

    return DDIMScheduler(**diffusion.scheduler_config(), clip_sample=False, set_alpha_to_one=False)


@SAMPLERS.register("dpm", "DPM-Solver++ (multistep, 2nd order)")
def _dpm(diffusion: DiffusionConfig):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(**diffusion.scheduler_config(), algorithm_type="dpmsolver++", solver_order=2)


@dataclass
class DiffusionConfig:
    """The noise process and how the model is trained on it."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"  # or "v_prediction"
    cfg_dropout: float = 0.1  # probability of training on the null text

    def scheduler_config(self) -> dict:
        """Keywords shared by every diffusers scheduler we build."""
        return {"num_train_timesteps": self.num_train_timesteps, "beta_schedule": self.beta_schedule,
                "beta_start": self.beta_start, "beta_end": self.beta_end, "prediction_type": self.prediction_type}

    def to_dict(self) -> dict:
        """Plain dict (for checkpoints)."""
        return asdict(self)


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
                   total: float | None = None) -> torch.Tensor:
    """Mean squared error of the model's epsilon (or v) prediction at random timesteps.

    All randomness (timesteps, noise, text dropout) comes from `randomness`: a CPU generator, or one
    seed per sample, so a resumed run draws exactly what an uninterrupted one would. With `weights`
    (B,) the result is sum(weight x per-sample loss) / `total` (the global batch's weight), which
    summed over data-parallel ranks is the global batch's mean however the batch was dealt.
    """
    t, noise, drop = _draws(diffusion, tuple(x0.shape), randomness)
    t, noise, drop = t.to(x0.device), noise.to(x0.device), drop.to(x0.device)
    x0 = x0.float()
    xt = scheduler.add_noise(x0, noise, t)
    target = noise if diffusion.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    dtype = next(model.parameters()).dtype
    pred = model(xt.to(dtype), t, text.to(dtype), text_mask, drop)
    if weights is None:
        return F.mse_loss(pred.float(), target)
    per_sample = (pred.float() - target).pow(2).flatten(1).mean(1)  # (B,)
    return (per_sample * weights.to(per_sample.device)).sum() / total


def sampling_scheduler(name: str, diffusion: DiffusionConfig):
    """The diffusers scheduler of sampler `name` (see SAMPLERS)."""
    return SAMPLERS.lookup(name)(diffusion)


@torch.no_grad()
def sample_latents(
    model,
    shape: tuple[int, ...],
    text: torch.Tensor,
    text_mask: torch.Tensor | None,
    diffusion: DiffusionConfig,
    steps: int = 50,
    sampler: str = "ddim",
    cfg_scale: float = 4.0,
    disable_cfg: bool = False,
    generator: torch.Generator | None = None,
    progress: ProgressFn = no_progress,
) -> torch.Tensor:
    """Denoise Gaussian noise of `shape` (B, C, T, H, W) into latents, guided by `text` (B, S, Dt).

    With guidance, the conditional and unconditional passes run as one batched forward of 2B;
    with `disable_cfg` (or cfg_scale 1) one forward of B per step.
    """
    if steps < 1:
        raise UserError(f"--steps {steps} must be at least 1")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    scheduler = sampling_scheduler(sampler, diffusion)
    scheduler.set_timesteps(steps)
    x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device) * scheduler.init_noise_sigma
    text = text.to(device, dtype)
    guided = not disable_cfg and cfg_scale != 1.0
    B = shape[0]
    if guided:
        text_in = torch.cat([text, text])
        mask_in = None if text_mask is None else torch.cat([text_mask, text_mask]).to(device)
        drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)]).to(device)
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t)
        if guided:
            out = model(torch.cat([x_in, x_in]).to(dtype), t.to(device).expand(2 * B), text_in, mask_in, drop).float()
            cond, uncond = out.chunk(2)
            pred = uncond + cfg_scale * (cond - uncond)
        else:
            mask = None if text_mask is None else text_mask.to(device)
            pred = model(x_in.to(dtype), t.to(device).expand(B), text, mask, None).float()
        x = scheduler.step(pred, t, x).prev_sample
        progress(ProgressEvent("denoise", i + 1, steps, unit="steps"))
    return x
