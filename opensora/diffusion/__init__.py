"""Training objectives and their samplers, never imported by the model code.

The model is any callable model(x, timestep, text, text_mask, drop_text) -> prediction.
`OBJECTIVES` maps `--objective` to a class with `loss(...)`; `SAMPLERS` maps `--sampler` to a
factory of the diffusers scheduler that denoises for one objective (`sample_latents` runs any of
them, with classifier-free guidance batched). `DiffusionConfig` is what a checkpoint records.
Names are listed without importing torch (completion, config checks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from opensora.registry import Registry

OBJECTIVES: Registry = Registry("objective", "--objective")
OBJECTIVES.add("ddpm", "opensora.diffusion.ddpm:DDPM", "denoising diffusion: 1000 noise levels, epsilon or v prediction")
OBJECTIVES.add("rflow", "opensora.diffusion.rflow:RectifiedFlow",
               "rectified flow: velocity on the straight path from data to noise, logit-normal timesteps")
PREDICTIONS = ("epsilon", "v_prediction")  # what a ddpm model predicts (--prediction)

SAMPLERS: Registry = Registry("sampler", "--sampler")
SAMPLERS.add("ddim", "opensora.diffusion.ddpm:ddim_scheduler", "DDIM, eta 0, deterministic (ddpm)")
SAMPLERS.add("dpm", "opensora.diffusion.ddpm:dpm_scheduler", "DPM-Solver++, multistep, 2nd order (ddpm)")
SAMPLERS.add("euler", "opensora.diffusion.rflow:euler_scheduler", "flow-matching Euler (rflow)")


@dataclass
class DiffusionConfig:
    """The noise process and how the model is trained on it (recorded in every checkpoint)."""

    objective: str = "ddpm"
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"  # ddpm
    beta_start: float = 0.0001  # ddpm
    beta_end: float = 0.02  # ddpm
    prediction_type: str = "epsilon"  # ddpm: or "v_prediction"
    flow_shift: float = 1.0  # rflow: timestep shift t -> s*t / (1 + (s-1)*t), for training and sampling
    cfg_dropout: float = 0.1  # probability of training on the null text

    def scheduler_config(self) -> dict:
        """Keywords shared by every DDPM-family diffusers scheduler we build."""
        return {"num_train_timesteps": self.num_train_timesteps, "beta_schedule": self.beta_schedule,
                "beta_start": self.beta_start, "beta_end": self.beta_end, "prediction_type": self.prediction_type}

    def to_dict(self) -> dict:
        """Plain dict (for checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiffusionConfig:
        """From a checkpoint's record (keys it predates take their defaults, unknown ones are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


def weighted_mse(pred, target, weights=None, total: float | None = None):
    """Mean squared error; with `weights` (B,), sum(weight x per-sample error) / `total` (see `ddpm.diffusion_loss`)."""
    if weights is None:
        import torch.nn.functional as F

        return F.mse_loss(pred.float(), target)
    per_sample = (pred.float() - target).pow(2).flatten(1).mean(1)  # (B,)
    return (per_sample * weights.to(per_sample.device)).sum() / total


def make_objective(diffusion: DiffusionConfig):
    """The objective object (`loss`, default sampler and steps) for `diffusion`."""
    return OBJECTIVES.lookup(diffusion.objective)(diffusion)
