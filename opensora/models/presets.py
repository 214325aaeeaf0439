"""Model sizes by name: DiT's S/B/L/XL with patch 2, 4 or 8, and a tiny T for tests and the demo."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from opensora.errors import UserError

if TYPE_CHECKING:  # names and sizes are read without torch (shell completion, config checks)
    from opensora.models.dit import VideoDiT

SIZES = {  # name: (depth, hidden, heads), as in the DiT paper; T is ours
    "T": (3, 128, 4),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
DiT_models = {f"DiT/{s}-{p}": (s, p) for s in SIZES for p in (2, 4, 8)}
MIN_PATCH = min(p for _, p in DiT_models.values())  # a latent smaller than this trains on no model


def model_config(name: str, temporal_patch: int = 1) -> dict:
    """Architecture keywords of the preset `name` (e.g. DiT/XL-2)."""
    if name not in DiT_models:
        close = difflib.get_close_matches(name, list(DiT_models), n=1)
        hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(DiT_models)}"
        raise UserError(f"--model {name!r} is not a known model; {hint}")
    size, patch = DiT_models[name]
    depth, hidden, heads = SIZES[size]
    return {"depth": depth, "hidden_size": hidden, "num_heads": heads,
            "patch_size": (temporal_patch, patch, patch), "model_name": name}


def create_model(name: str, in_channels: int, condition: str, text_dim: int, text_len: int,
                 temporal_patch: int = 1) -> VideoDiT:
    """A freshly initialised VideoDiT of preset `name`."""
    from opensora.models.dit import CONDITIONS, VideoDiT

    if condition not in CONDITIONS:
        raise UserError(f"--condition {condition!r} is not one of {', '.join(CONDITIONS)}")
    return VideoDiT(in_channels=in_channels, condition=condition, text_dim=text_dim, text_len=text_len,
                    **model_config(name, temporal_patch))
