"""The denoising loop shared by every objective: a diffusers scheduler steps, the model predicts, and
classifier-free guidance runs the conditional and unconditional passes as one batch."""

from __future__ import annotations

import torch

from opensora.diffusion import SAMPLERS, DiffusionConfig, make_objective
from opensora.errors import UserError
from opensora.progress import ProgressEvent, ProgressFn, no_progress


def sampling_scheduler(name: str | None, diffusion: DiffusionConfig):
    """The diffusers scheduler of sampler `name` (None: the objective's default), checked against the objective."""
    objective = make_objective(diffusion)
    name = name or objective.default_sampler
    factory = SAMPLERS.lookup(name)
    if name not in objective.samplers:
        raise UserError(f"--sampler {name} does not sample a model trained with --objective {diffusion.objective}; "
                        f"use {' or '.join(objective.samplers)}")
    return factory(diffusion)


@torch.no_grad()
def sample_latents(
    model,
    shape: tuple[int, ...],
    text: torch.Tensor,
    text_mask: torch.Tensor | None,
    diffusion: DiffusionConfig,
    steps: int | None = None,
    sampler: str | None = None,
    cfg_scale: float = 4.0,
    disable_cfg: bool = False,
    generator: torch.Generator | None = None,
    progress: ProgressFn = no_progress,
    given: torch.Tensor | None = None,
    frame_group: int = 1,
) -> torch.Tensor:
    """Denoise Gaussian noise of `shape` (B, C, T, H, W) into latents, guided by `text` (B, S, Dt).

    `steps` and `sampler` default to the objective's. With guidance, the conditional and
    unconditional passes run as one batched forward of 2B; with `disable_cfg` (or cfg_scale 1)
    one forward of B per step. `given` (B, C, Tg, H, W) holds clean latents of the first Tg frames
    (Tg a multiple of `frame_group`, the model's temporal patch): they stay fixed, at timestep 0,
    and the model generates the rest (image-to-video, extension; for models trained with them).
    """
    steps = steps or make_objective(diffusion).default_steps
    if steps < 1:
        raise UserError(f"--steps {steps} must be at least 1")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    scheduler = sampling_scheduler(sampler, diffusion)
    scheduler.set_timesteps(steps)
    sigma = getattr(scheduler, "init_noise_sigma", 1.0)
    x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device) * sigma
    text = text.to(device, dtype)
    guided = not disable_cfg and cfg_scale != 1.0
    B = shape[0]
    if given is not None:
        given = given.to(device, torch.float32).expand(B, -1, -1, -1, -1)
        n_given = given.shape[2]
        x[:, :, :n_given] = given
        per_group = (torch.arange(shape[2] // frame_group, device=device) < n_given // frame_group)[None].expand(B, -1)

    def timesteps(t: torch.Tensor, n: int) -> torch.Tensor:  # (n,), or (n, groups) with the given groups at 0
        t = t.to(device).expand(n)
        if given is None:
            return t
        groups = per_group.repeat(n // B, 1)
        return torch.where(groups, torch.zeros_like(t)[:, None], t[:, None].expand_as(groups))

    if guided:
        text_in = torch.cat([text, text])
        mask_in = None if text_mask is None else torch.cat([text_mask, text_mask]).to(device)
        drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)]).to(device)
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        if guided:
            out = model(torch.cat([x_in, x_in]).to(dtype), timesteps(t, 2 * B), text_in, mask_in, drop).float()
            cond, uncond = out.chunk(2)
            pred = uncond + cfg_scale * (cond - uncond)
        else:
            mask = None if text_mask is None else text_mask.to(device)
            pred = model(x_in.to(dtype), timesteps(t, B), text, mask, None).float()
        x = scheduler.step(pred, t, x).prev_sample
        if given is not None:
            x[:, :, :n_given] = given
        progress(ProgressEvent("denoise", i + 1, steps, unit="steps"))
    return x
