"""T5-family text features (T5 v1.1, UMT5, mT5 encoders, as Open-Sora, PixArt, CogVideoX and Wan use),
and a tiny T5 built locally for tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from opensora.text.base import TextEncoderBase

# config model_type -> the transformers encoder-only class (the decoder of a full checkpoint is not loaded)
ENCODER_CLASSES = {"t5": "T5EncoderModel", "umt5": "UMT5EncoderModel", "mt5": "MT5EncoderModel"}


class T5TextEncoder(TextEncoderBase):
    """A T5-family tokenizer (AutoTokenizer) + encoder, the class chosen from the model's config."""

    family = "T5"
    default_max_length = 120  # PixArt's; Open-Sora 1.2 uses 300 (--text-max-length)

    def _load(self, path: str):
        import transformers
        from transformers import AutoConfig, AutoTokenizer

        model_type = AutoConfig.from_pretrained(path).model_type
        model_cls = getattr(transformers, ENCODER_CLASSES.get(model_type, "T5EncoderModel"))
        return AutoTokenizer.from_pretrained(path), model_cls.from_pretrained(path), None  # relative positions


def build_tiny_t5_encoder(directory: Path, d_model: int = 32, layers: int = 2, heads: int = 4,
                          model_type: str = "t5", seed: int = 0) -> Path:
    """Save a small randomly initialised T5 (or UMT5) encoder with a word-level tokenizer (tests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    words = ("a an the red green blue yellow white circle square triangle moving left right up down person "
             "walking dog cat car on in of and").split()
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                            model_max_length=512).save_pretrained(str(directory))
    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if model_type == "umt5" else (T5Config, T5EncoderModel)
    torch.manual_seed(seed)
    cfg = config_cls(vocab_size=len(vocab), d_model=d_model, d_kv=d_model // heads, d_ff=d_model * 2,
                     num_layers=layers, num_heads=heads, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model_cls(cfg).save_pretrained(str(directory))
    assert json.loads((directory / "config.json").read_text())["model_type"] == model_type
    return directory
