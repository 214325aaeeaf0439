"""Mixed-precision state that the plugins keep in different places: loss scale, skipped steps, masters.

Colossal-AI's optimizers (hybrid, zero2, gemini) hold a loss scaler in a "mixin" whose attribute
name differs per optimizer, and fp32 master weights in their inner torch optimizer. `ddp` uses
torch's own autocast + GradScaler (`TorchAmp`). This module reads and restores that state so a
checkpoint resumes exactly and the metrics say what happened (loss scale, skipped steps, real norm).
"""

from __future__ import annotations

import contextlib
import math

import torch

from opensora.training.plugins import FP16_INITIAL_SCALE


def _mixin(optimizer):
    for name in ("mixed_precision", "mixed_precision_mixin", "mix_precision_mixin"):
        m = getattr(optimizer, name, None)
        if m is not None:
            return m
    return None


def colossal_scaler(optimizer):
    """The DynamicGradScaler of a Colossal-AI fp16 optimizer, or None (bf16, fp32, ddp)."""
    return getattr(_mixin(optimizer), "grad_scaler", None)


def colossal_step_skipped(optimizer) -> bool:
    """Whether the last step() of a Colossal-AI fp16 optimizer was skipped for an inf/NaN gradient."""
    found = getattr(_mixin(optimizer), "found_overflow", None)
    return bool(found is not None and found.item() > 0)


def scaler_state(scaler) -> dict:
    """A JSON-able copy of a Colossal-AI DynamicGradScaler's state."""
    return {"scale": float(scaler.scale.item()), "growth_step": scaler._growth_step,
            "hysteresis_step": scaler._hysteresis_step}


def load_scaler_state(scaler, state: dict) -> None:
    """Restore what `scaler_state` saved (the scaler has no state_dict of its own)."""
    scaler._scale = torch.tensor([state["scale"]], device=scaler.scale.device, dtype=scaler.scale.dtype)
    scaler._growth_step, scaler._hysteresis_step = state["growth_step"], state["hysteresis_step"]


def master_params(optimizer) -> list[torch.Tensor]:
    """The fp32 tensors the inner optimizer updates (masters, or ZeRO's shards of them), in order."""
    return [p for group in optimizer.optim.param_groups for p in group["params"]]


def grad_norm(optimizer) -> float | None:
    """The global gradient norm the optimizer computed in its last step, unscaled; None if it did not."""
    norm = optimizer.get_grad_norm() if hasattr(optimizer, "get_grad_norm") else None
    if norm is None:
        return None
    norm = float(norm)
    scaler = colossal_scaler(optimizer)
    if scaler is not None:  # Colossal-AI computes the norm of the scaled gradients
        norm /= float(scaler.scale.item())
    return norm if math.isfinite(norm) else None


class TorchAmp:
    """fp32 weights under torch autocast; fp16 adds torch's GradScaler (the `ddp` plugin's precision)."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        self.enabled = dtype != torch.float32
        self.scaler = torch.amp.GradScaler(device.type, init_scale=FP16_INITIAL_SCALE) \
            if dtype == torch.float16 else None

    def autocast(self):
        """The forward pass's context."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale_(self, optimizer) -> None:
        """Bring the gradients back to their true size before clipping."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> bool:
        """optimizer.step() (skipped on inf/NaN gradients under fp16); True if it was skipped."""
        if self.scaler is None:
            optimizer.step()
            return False
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() < before  # GradScaler backs off exactly when it skipped

    @property
    def loss_scale(self) -> float | None:
        return self.scaler.get_scale() if self.scaler is not None else None

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
