"""CLIP score: how well each generated frame matches its prompt under a CLIP model.

The rule (stated beside every figure): for each video, 100 x max(0, cos(image features of the frame,
text features of the prompt)) averaged over all its frames; then averaged over the videos. Frames
go through the model's own CLIPImageProcessor; prompts are truncated to the model's text length.
"""

from __future__ import annotations

import numpy as np
import torch

from opensora.errors import UserError
from opensora.hub import check_loadable

RULE = ("100 x max(0, cosine(frame, prompt)), averaged over every frame of a video, then over the videos; "
        "frames through the model's own image processor")


def _tensor(out) -> torch.Tensor:
    """transformers returns features as a tensor or (newer) as an output with pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPScorer:
    """A CLIP model and its processors, loaded from a hub id or a local directory."""

    def __init__(self, path: str, device: torch.device):
        from transformers import AutoConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

        check_loadable(path, "--clip")
        try:
            kind = AutoConfig.from_pretrained(path).model_type
        except (OSError, ValueError) as e:
            kind = f"unreadable config: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        if kind != "clip":  # transformers would load a text-only CLIP with random image weights, and only warn
            raise UserError(f"--clip {path}: not a CLIP model with image and text towers ({kind}); pass e.g. "
                            "openai/clip-vit-base-patch32 or its local copy")
        try:
            self.model = CLIPModel.from_pretrained(path).eval().to(device)
            self.tokenizer = CLIPTokenizer.from_pretrained(path)
            self.processor = CLIPImageProcessor.from_pretrained(path)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"--clip {path}: not a CLIP model with its tokenizer and image processor ({first})") from None
        self.path, self.device = path, device

    @torch.no_grad()
    def score(self, frames: np.ndarray, prompt: str) -> float:
        """The CLIP score of one video (T, H, W, 3) uint8 for `prompt`."""
        pixels = self.processor(images=list(frames), return_tensors="pt")["pixel_values"].to(self.device)
        image = _tensor(self.model.get_image_features(pixel_values=pixels))  # (T, D)
        tokens = self.tokenizer([prompt], padding=True, truncation=True, return_tensors="pt").to(self.device)
        text = _tensor(self.model.get_text_features(**tokens))  # (1, D)
        cos = torch.nn.functional.cosine_similarity(image.float(), text.float())  # (T,)
        return float((100 * cos.clamp(min=0)).mean())
