"""What every text encoder does: tokenize to a fixed length, run the transformer, keep the last hidden
states (S, D) and each caption's token count (the padding mask the DiT's attention uses)."""

from __future__ import annotations

import numpy as np
import torch

from opensora.errors import UserError
from opensora.hub import check_loadable


class TextEncoderBase:
    """A Hugging Face tokenizer + encoder loaded with `from_pretrained` (hub id or local directory).

    Subclasses name their `family` and implement `_load(path) -> (tokenizer, model, longest)`, where
    `longest` is the most tokens the model takes (None: no limit of its own).
    """

    family = ""
    default_max_length = 77

    def __init__(self, path: str, device: str | torch.device = "cpu", batch_size: int = 64,
                 max_length: int | None = None):
        self.path, self.device, self.batch_size = str(path), torch.device(device), batch_size
        check_loadable(self.path, "--text-encoder")
        try:
            self.tokenizer, model, longest = self._load(self.path)
        except (OSError, ValueError) as e:
            raise UserError(
                f"--text-encoder {path}: cannot load a {self.family} text model ({str(e).splitlines()[0]}); "
                f"pass a local directory with a {self.family} tokenizer and model, or a reachable hub id"
            ) from None
        self.model = model.to(self.device).eval().requires_grad_(False)
        wanted = max_length or self.default_max_length
        self.max_length = int(min(wanted, longest) if longest else wanted)
        self.dim = int(self.model.config.hidden_size)  # T5 configs map it to d_model

    def _load(self, path: str):
        raise NotImplementedError

    def spec(self) -> dict:
        """What to record so the same encoder can be rebuilt."""
        return {"path": self.path, "max_length": self.max_length, "dim": self.dim, "family": self.family}

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, D) float32 last hidden states and (N,) token counts, padded to max length."""
        feats, lengths = [], []
        for i in range(0, len(captions), self.batch_size):
            tok = self.tokenizer(captions[i : i + self.batch_size], padding="max_length", truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            out = self.model(input_ids=tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device))
            feats.append(out.last_hidden_state.float().cpu().numpy())
            lengths.append(tok.attention_mask.sum(1).numpy())
        if not feats:
            return np.zeros((0, self.max_length, self.dim), np.float32), np.zeros((0,), np.int64)
        return np.concatenate(feats), np.concatenate(lengths)
