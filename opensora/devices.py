"""Device and dtype choices."""

from __future__ import annotations

import torch

from opensora.errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """'auto' -> cuda if available else cpu; a CUDA request without CUDA is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{option} {name}: no CUDA device is available here; use {option} cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"{option} {name!r} is not a device; use cpu, cuda or cuda:N") from None


def resolve_dtype(name: str, device: torch.device, option: str = "--precision") -> torch.dtype:
    """'auto' -> bf16 on CUDA, fp32 on CPU; otherwise fp32 | bf16 | fp16."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserError(f"{option} {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]
