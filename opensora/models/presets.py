"""Model presets by name: DiT's S/B/L/XL with patch 2, 4 or 8, and a tiny T for tests and the demo,
for two families: DiT (full 3-D attention, `models/dit.py`) and STDiT (spatial + temporal attention,
`models/stdit.py`).

`MODELS` is the model registry (names and sizes read without torch: completion, config checks).
Our names spell DiT's "DiT-XL/2" as "DiT/XL-2": the family before the slash, so that the families
sort side by side; the sizes are the DiT paper's, the same for both families.
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
    family: str  # DiT or STDiT
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
FAMILIES = {  # family: (model class, what its blocks attend to)
    "DiT": ("opensora.models.dit:VideoDiT", "full 3-D attention"),
    "STDiT": ("opensora.models.stdit:STDiT", "spatial + temporal attention"),
}
MODELS: Registry[ModelPreset] = Registry("model", "--model")
for _family, (_, _attends) in FAMILIES.items():
    for _size, (_depth, _hidden, _heads) in SIZES.items():
        for _patch in (2, 4, 8):
            MODELS.add(f"{_family}/{_size}-{_patch}", ModelPreset(_size, _family, _depth, _hidden, _heads, _patch),
                       f"{_depth} blocks x {_hidden} wide, {_heads} heads, patch {_patch}, {_attends}")
MIN_PATCH = min(MODELS[n].patch for n in MODELS)  # a latent smaller than this trains on no model


def model_config(name: str, temporal_patch: int = 1) -> dict:
    """Architecture keywords of the preset `name` (e.g. DiT/XL-2)."""
    return {**MODELS.lookup(name).config(temporal_patch), "model_name": name}


def condition_problem(name: str, condition: str) -> str | None:
    """Why `condition` does not apply to preset `name` (None when it does); torch-free."""
    if MODELS.lookup(name).family == "STDiT" and condition == "token-concat":
        return (f"--condition token-concat prepends text tokens, which have no frame in {name}'s spatial-temporal "
                "attention; use --condition cross-attn or adaln")
    return None


def frame_condition_problem(name: str, frame_condition: float) -> str | None:
    """Why --frame-condition cannot train preset `name` (None when it can); torch-free."""
    if frame_condition > 1:
        return f"--frame-condition {frame_condition} must be in [0, 1]"
    if frame_condition > 0 and MODELS.lookup(name).family != "STDiT":
        return (f"--frame-condition needs one timestep per frame, which {name} does not have; use an STDiT model "
                f"(e.g. --model {name.replace('DiT/', 'STDiT/', 1)})")
    return None


def create_model(name: str, in_channels: int, condition: str, text_dim: int, text_len: int,
                 temporal_patch: int = 1) -> VideoDiT:
    """A freshly initialised model (VideoDiT or STDiT) of preset `name`."""
    from opensora.models.dit import CONDITIONINGS
    from opensora.registry import resolve

    CONDITIONINGS.lookup(condition)
    cls = resolve(FAMILIES[MODELS.lookup(name).family][0])
    return cls(in_channels=in_channels, condition=condition, text_dim=text_dim, text_len=text_len,
               **model_config(name, temporal_patch))
