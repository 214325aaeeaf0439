"""Text encoders by family: `TEXT_ENCODERS` maps a model's config `model_type` to the class that loads it.

`--text-encoder` names a model (hub id or local directory); its config.json says which family it
is. A new family (T5, UMT5, ...) is one class with `spec()`/`encode()` and one entry here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opensora.registry import Registry

DEFAULT_TEXT_ENCODER = "openai/clip-vit-base-patch32"

TEXT_ENCODERS: Registry = Registry("text encoder family", "--text-encoder")
TEXT_ENCODERS.add("clip", "opensora.text.clip:CLIPTextEncoder", "CLIP (the text half of a full CLIP model)")
TEXT_ENCODERS.add("clip_text_model", "opensora.text.clip:CLIPTextEncoder", "CLIP's text transformer alone")
TEXT_ENCODERS.add("t5", "opensora.text.t5:T5TextEncoder", "T5 (v1.1) encoder, as PixArt, Open-Sora and CogVideoX")
TEXT_ENCODERS.add("umt5", "opensora.text.t5:T5TextEncoder", "UMT5 encoder, as Wan")
TEXT_ENCODERS.add("mt5", "opensora.text.t5:T5TextEncoder", "mT5 encoder")


def model_type(path: str) -> str:
    """The `model_type` in `path`'s config.json (local directory or cached hub repo); CLIP when unknown."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(path, "config.json")
        except ValueError:  # not a valid repo id: the loader names the problem
            cached = None
        config = Path(cached) if isinstance(cached, str) else None
    try:
        return json.loads(config.read_text()).get("model_type", "clip") if config else "clip"
    except (OSError, ValueError):
        return "clip"  # the loader reports an unreadable model in its own words


def load_text_encoder(path: str, device: Any = "cpu", max_length: int | None = None) -> Any:
    """The text encoder at `path`, built by the class its config's family is registered to.

    max_length: tokens kept per caption (None: the family's default, CLIP 77, T5 120).
    """
    family = model_type(path)
    if family not in TEXT_ENCODERS:
        from opensora.errors import UserError

        raise UserError(f"--text-encoder {path}: a {family!r} model; supported families: "
                        f"{', '.join(TEXT_ENCODERS.names())}")
    return TEXT_ENCODERS[family](path, device=device, max_length=max_length)
