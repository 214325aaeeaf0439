"""Model directories and training checkpoints: safetensors + JSON, loadable without pickle.

A model directory (what `sample` and `inspect` read):
  opensora.json   model preset, conditioning, compression, text encoder, diffusion settings, step
  model/          VideoDiT.save_pretrained: config.json + diffusion_pytorch_model.safetensors
  ema/            the EMA weights, same format (optional)
A training checkpoint is a model directory plus:
  optimizer(/)                 Colossal-AI's optimizer checkpoint (a folder of shards; one file for ddp)
  trainer_state.json           step, data position, layout, the global batch per latent shape, LR schedule
  rng-rankNNNNN.safetensors    each rank's torch RNG state
  master-rankNNNNN.safetensors the fp32 master weights of 16-bit hybrid/zero2 runs
`checkpoint_problem` tells a damaged checkpoint from a good one without loading its weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from opensora.errors import UserError

META = "opensora.json"


def is_checkpoint(path: Path) -> bool:
    """True if `path` is a model directory or a training checkpoint."""
    return (Path(path) / META).exists() and (Path(path) / "model").is_dir()


def read_meta(path: Path) -> dict:
    """The checkpoint's opensora.json; a clear error if `path` is not one."""
    path = Path(path)
    if not is_checkpoint(path):
        raise UserError(f"--ckpt {path}: not a checkpoint (no {META} + model/); pass a RUN/ckpt-N directory")
    return json.loads((path / META).read_text())


def save_model_dir(directory: Path, model, meta: dict, ema=None) -> None:
    """Write opensora.json, model/ and (if given) ema/ into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory / "model", safe_serialization=True)
    if ema is not None:
        ema.save_pretrained(directory / "ema", safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    (directory / META).write_text(json.dumps({**meta, "parameters": n_params, "has_ema": ema is not None}, indent=2))


def checkpoint_problem(path: Path, training: bool = False) -> str | None:
    """What is damaged or missing in a checkpoint (None when every file reads), without loading weights.

    Reads the JSON files and each safetensors header (a truncated file fails there); with
    `training`, also the trainer state, RNG files and optimizer directory that resuming needs.
    """
    from safetensors import safe_open

    path = Path(path)
    jsons = [META, "model/config.json"] + (["trainer_state.json"] if training else [])
    if (path / "ema").is_dir():
        jsons.append("ema/config.json")
    for name in jsons:
        try:
            json.loads((path / name).read_text())
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, ValueError) as e:
            return f"{name} is unreadable ({str(e).splitlines()[0][:80]})"
    tensors = sorted(path.glob("model/*.safetensors")) + sorted(path.glob("ema/*.safetensors"))
    if not sorted(path.glob("model/*.safetensors")):
        return "model/ has no weights file"
    if training:
        tensors += sorted(path.glob("rng-*.safetensors")) + sorted(path.glob("master-*.safetensors"))
        if not (path / "optimizer").exists() and json.loads((path / "trainer_state.json").read_text()).get("optimizer_state", True):
            return "the optimizer state is missing"
    for f in tensors:
        try:
            expected = _safetensors_end(f)
            if f.stat().st_size < expected:
                return f"{f.relative_to(path)} is truncated ({f.stat().st_size} of {expected} bytes)"
            with safe_open(str(f), "pt") as st:
                st.keys()
        except Exception as e:  # safetensors raises its own error types for every kind of damage
            return f"{f.relative_to(path)} is unreadable ({str(e).splitlines()[0][:80]})"
    return None


def _safetensors_end(f: Path) -> int:
    """The size a safetensors file must have: 8 + header + the largest tensor end offset."""
    with open(f, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + n + max(ends, default=0)


def load_dit(directory: Path, dtype: torch.dtype = torch.float32):
    """A VideoDiT or STDiT saved with save_pretrained (config.json + safetensors), without pickle.

    The class is the config's `_class_name`. Models saved before `pos_embed` existed used the
    concatenated layout; their config lacks the key, and the current default ("sum") would silently
    give them other positions.
    """
    from opensora.models.dit import VideoDiT
    from opensora.models.stdit import STDiT

    config = json.loads((Path(directory) / "config.json").read_text())
    cls = {"VideoDiT": VideoDiT, "STDiT": STDiT}.get(config.get("_class_name"))
    if cls is None:
        raise UserError(f"{directory}: a {config.get('_class_name')} model, not one of opensora's (VideoDiT, STDiT)")
    extra = {} if "pos_embed" in config else {"pos_embed": "concat"}
    return cls.from_pretrained(directory, torch_dtype=dtype, **extra)


def load_model(path: Path, ema: bool = True, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(model, meta) from a checkpoint; EMA weights when present and `ema` is True."""
    path = Path(path)
    meta = read_meta(path)
    problem = checkpoint_problem(path)
    if problem:
        others = [c for c in checkpoints_of(path.parent) if c != path and not checkpoint_problem(c)]
        hint = f"use another one, e.g. --ckpt {others[-1]}" if others else "use another checkpoint"
        raise UserError(f"--ckpt {path}: {problem}; {hint}")
    sub = "ema" if ema and (path / "ema").is_dir() else "model"
    model = load_dit(path / sub, dtype)
    return model.to(device).eval(), {**meta, "weights": sub}


def describe_checkpoint(path: Path) -> dict:
    """Model, conditioning, compression, text encoder, parameters, step, EMA, training config."""
    meta = read_meta(path)
    model_cfg = json.loads((Path(path) / "model" / "config.json").read_text())
    return {
        "path": str(path),
        "model": meta.get("model_name", model_cfg.get("model_name")),
        "condition": model_cfg.get("condition"),
        "compression": (meta.get("compression") or {}).get("name"),
        "text_encoder": (meta.get("text_encoder") or {}).get("path"),
        "parameters": meta.get("parameters"),
        "step": meta.get("step"),
        "ema": (Path(path) / "ema").is_dir(),
        "latent_channels": model_cfg.get("in_channels"),
        "patch_size": model_cfg.get("patch_size"),
        "objective": (meta.get("diffusion") or {}).get("objective", "ddpm"),
        "prediction_type": (meta.get("diffusion") or {}).get("prediction_type")  # ddpm's alone
        if (meta.get("diffusion") or {}).get("objective", "ddpm") == "ddpm" else None,
        "config": meta.get("train_config", {}),
    }


def checkpoints_of(run: Path) -> list[Path]:
    """A run's complete checkpoints, oldest first (ckpt-NNNNNNN, ordered by step)."""
    found = [p for p in Path(run).glob("ckpt-*") if p.is_dir() and is_checkpoint(p)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))
