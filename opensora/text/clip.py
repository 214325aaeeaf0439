"""CLIP text features (transformers), and a tiny CLIP with CLIP's real tokenizer for tests and the demo."""

from __future__ import annotations

from pathlib import Path

import torch

from opensora.errors import UserError
from opensora.text.base import TextEncoderBase


class CLIPTextEncoder(TextEncoderBase):
    """A CLIP tokenizer + text model loaded with `from_pretrained` (hub id or local directory)."""

    family = "CLIP"

    def _load(self, path: str):
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer, model = CLIPTokenizer.from_pretrained(path), CLIPTextModel.from_pretrained(path)
        # learned positions: never more tokens than the model has positions for
        limit = int(min(tokenizer.model_max_length, model.config.max_position_embeddings))
        return tokenizer, model, limit


def clip_vocab_file() -> Path:
    """CLIP's BPE vocabulary as shipped inside the open-clip-torch package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the CLIP vocabulary needs open-clip-torch: pip install --no-deps open-clip-torch")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise UserError(f"{path} is missing; reinstall open-clip-torch")
    return path


def build_clip_tokenizer_files(directory: Path, max_length: int = 77, num_merges: int | None = None) -> int:
    """Write vocab.json + merges.txt (CLIP's official BPE) into `directory`; return the vocab size.

    `num_merges` keeps only the first merges, which gives a smaller vocabulary (for tiny models)
    that still tokenizes any text, and identically to CLIP for words its merges cover.
    """
    import gzip
    import json

    # Mirrors the construction of CLIP's published tokenizer: bytes-to-unicode alphabet, each symbol
    # and its end-of-word form, one token per merge, then the two special tokens.
    lines = gzip.open(clip_vocab_file(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    if num_merges is not None:
        merges = merges[:num_merges]
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    }))
    return len(vocab)


def build_tiny_clip_text_encoder(directory: Path, hidden: int = 32, layers: int = 2, heads: int = 2,
                                 max_length: int = 16, num_merges: int = 2000, seed: int = 0) -> Path:
    """Save a small randomly initialised CLIP text model with CLIP's real tokenizer (tests, demo)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_size = build_clip_tokenizer_files(directory, max_length=max_length, num_merges=num_merges)
    tok = CLIPTokenizer.from_pretrained(str(directory))
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4,
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_length,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    CLIPTextModel(cfg).save_pretrained(str(directory))
    return Path(directory)
