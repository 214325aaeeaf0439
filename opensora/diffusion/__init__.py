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
    frame_condition: float = 0.0  # probability of training with the first frame groups given clean (STDiT)

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


def weighted_mse(pred, target, weights=None, total: float | None = None, keep=None):
    """Mean squared error; with `weights` (B,), sum(weight x per-sample error) / `total` (see `ddpm.diffusion_loss`).

    `keep` (B, T) bool limits each sample's error to those latent frames (frames given clean are not scored).
    """
    if weights is None and keep is None:
        import torch.nn.functional as F

        return F.mse_loss(pred.float(), target)
    err = (pred.float() - target).pow(2)  # (B, C, T, H, W)
    if keep is None:
        per_sample = err.flatten(1).mean(1)  # (B,)
    else:
        k = keep[:, None, :, None, None].to(err.dtype)
        per_sample = (err * k).flatten(1).sum(1) / (k.expand_as(err).flatten(1).sum(1)).clamp_min(1)
    if weights is None:
        return per_sample.mean()
    return (per_sample * weights.to(per_sample.device)).sum() / total


GIVEN_SEED_OFFSET = 0x5EEDF7A3  # given-frame draws use their own generator: the other draws stay as they were


def draw_given(diffusion: DiffusionConfig, groups: int, randomness, batch: int):
    """Latent frame groups given clean per sample (B,): with probability `frame_condition` k in 1..groups-1, else 0.

    One draw per sample from a generator of its own (seed + GIVEN_SEED_OFFSET), so turning the option
    on changes no other draw and resuming stays exact.
    """
    import torch

    if diffusion.frame_condition <= 0 or groups < 2:
        return torch.zeros(batch, dtype=torch.long)
    gens = [randomness] * batch if isinstance(randomness, torch.Generator) else [
        torch.Generator().manual_seed(int(s) + GIVEN_SEED_OFFSET) for s in randomness]
    out = []
    for g in gens:
        given = torch.rand(1, generator=g).item() < diffusion.frame_condition
        k = int(torch.randint(1, groups, (1,), generator=g))
        out.append(k if given else 0)
    return torch.tensor(out, dtype=torch.long)


def given_frames_mask(given, frames: int, frame_group: int):
    """(B, T) bool: the latent frames of the first `given` (B,) frame groups of `frame_group` frames."""
    import torch

    groups = torch.arange(frames // frame_group, device=given.device)[None] < given[:, None]  # (B, G)
    return groups.repeat_interleave(frame_group, dim=1)


def condition_on_given(x0, xt, t, given, frame_group: int):
    """Frames of the first `given` (B,) groups clean in xt, their timesteps 0.

    Returns (xt, t: (B,) when nothing is given, else (B, groups), kept (B, T) frames to score or None).
    """
    import torch

    if given is None or not bool(given.any()):
        return xt, t, None
    frames = given_frames_mask(given.to(x0.device), x0.shape[2], frame_group)  # (B, T)
    xt = torch.where(frames[:, None, :, None, None], x0.to(xt.dtype), xt)
    per_group = frames[:, ::frame_group]  # (B, G)
    t = torch.where(per_group, torch.zeros_like(t, dtype=t.dtype)[:, None], t[:, None].expand_as(per_group))
    return xt, t, ~frames


def make_objective(diffusion: DiffusionConfig):
    """The objective object (`loss`, default sampler and steps) for `diffusion`."""
    return OBJECTIVES.lookup(diffusion.objective)(diffusion)
