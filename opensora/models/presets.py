"""Model presets by name: DiT's S/B/L/XL with patch 2, 4 or 8, and a tiny T for tests and the demo.

`MODELS` is the model registry (names and sizes read without torch: completion, config checks).
Our names spell DiT's "DiT-XL/2" as "DiT/XL-2": the family before the slash, so that other
families (a future "STDiT/XL-2") sort beside it; the sizes are the DiT paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from opensora.registry import Registry

if TYPE_CHECKING:
    from opensora.models.dit import VideoDiT


@dataclass(frozen=True)
class ModelPreset:
    """One model size: transformer depth, width, heads and spatial patch."""

    size: str  # T, S, B, L or XL
    depth: int
    hidden_size: int
    num_heads: int
    patch: int

    def config(self, temporal_patch: int = 1) -> dict:
        """VideoDiT's architecture keywords for this preset."""
        return {"depth": self.depth, "hidden_size": self.hidden_size, "num_heads": self.num_heads,
                "patch_size": (temporal_patch, self.patch, self.patch)}


SIZES = {  # name: (depth, hidden, heads), as in the DiT paper; T is ours
    "T": (3, 128, 4),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
MODELS: Registry[ModelPreset] = Registry("model", "--model")
for _size, (_depth, _hidden, _heads) in SIZES.items():
    for _patch in (2, 4, 8):
        MODELS.add(f"DiT/{_size}-{_patch}", ModelPreset(_size, _depth, _hidden, _heads, _patch),
                   f"{_depth} blocks x {_hidden} wide, {_heads} heads, patch {_patch}")
MIN_PATCH = min(MODELS[n].patch for n in MODELS)  # a latent smaller than this trains on no model


def model_config(name: str, temporal_patch: int = 1) -> dict:
    """Architecture keywords of the preset `name` (e.g. DiT/XL-2)."""
    return {**MODELS.lookup(name).config(temporal_patch), "model_name": name}


def create_model(name: str, in_channels: int, condition: str, text_dim: int, text_len: int,
                 temporal_patch: int = 1) -> VideoDiT:
    """A freshly initialised VideoDiT of preset `name`."""
    from opensora.models.dit import CONDITIONINGS, VideoDiT

    CONDITIONINGS.lookup(condition)
    return VideoDiT(in_channels=in_channels, condition=condition, text_dim=text_dim, text_len=text_len,
                    **model_config(name, temporal_patch))
