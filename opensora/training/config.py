"""Training settings, validated in one place (every problem reported at once)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from opensora.errors import collect
from opensora.models.dit import CONDITIONS
from opensora.models.presets import DiT_models
from opensora.parallel.dims import SP_MODES
from opensora.training.plugins import PLUGINS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything `train` needs; the CLI fills it from flags and the user config."""

    data: str
    run_dir: str
    model: str = "DiT/S-2"
    condition: str = "cross-attn"
    plugin: str = "hybrid"
    precision: str = "auto"
    batch_size: int = 4  # global: per-rank batch x data-parallel size
    max_tokens_per_batch: int | None = None  # per-rank batch of each bucket from a token budget instead
    lr: float = 1e-4
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # or "cosine": decay to 10% of --lr at --steps
    weight_decay: float = 0.0
    steps: int = 1000
    ckpt_every: int = 500
    keep: int = 3
    ema_decay: float = 0.9999
    grad_clip: float = 1.0
    grad_checkpoint: bool = False
    seed: int | None = None  # None: the checkpoint's when resuming, else 0 (as sample and demo)
    sp: str = "none"
    sp_size: int = 1
    num_workers: int = 2
    prediction_type: str = "epsilon"
    cfg_dropout: float = 0.1
    temporal_patch: int = 1
    resume: str | None = None  # "auto" or a checkpoint directory
    init_from: str | None = None  # a checkpoint whose model and EMA weights start a new run
    device: str = "auto"
    pg_timeout: float = 300.0
    hang_timeout: float = 600.0  # multi-process: a rank without progress this long stops the run

    def validate(self) -> None:
        """Raise one ConfigError listing every invalid setting, each naming its flag."""
        p = []
        if self.model not in DiT_models:
            p.append(f"--model {self.model!r} is not a known model (e.g. DiT/S-2, DiT/XL-2)")
        if self.condition not in CONDITIONS:
            p.append(f"--condition {self.condition!r} is not one of {', '.join(CONDITIONS)}")
        if self.plugin not in PLUGINS:
            p.append(f"--plugin {self.plugin!r} is not one of {', '.join(PLUGINS)}")
        if self.precision not in PRECISIONS:
            p.append(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.sp not in SP_MODES:
            p.append(f"--sp {self.sp!r} is not one of {', '.join(SP_MODES)}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            p.append(f"--prediction {self.prediction_type!r} is not epsilon or v_prediction")
        for name, value in (("--batch-size", self.batch_size), ("--steps", self.steps),
                            ("--ckpt-every", self.ckpt_every), ("--keep", self.keep),
                            ("--temporal-patch", self.temporal_patch)):
            if value < 1:
                p.append(f"{name} {value} must be at least 1")
        if self.sp_size < 0:  # 0: every rank of the job (resolved at launch)
            p.append(f"--sp-size {self.sp_size} must be at least 1")
        if self.seed is not None and self.seed < 0:
            p.append(f"--seed {self.seed} must be 0 or more")
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 1:
            p.append(f"--max-tokens-per-batch {self.max_tokens_per_batch} must be at least 1")
        if not math.isfinite(self.hang_timeout) or self.hang_timeout <= 0:
            p.append(f"--hang-timeout {self.hang_timeout} must be a finite number of seconds > 0")
        if self.lr_schedule not in ("constant", "cosine"):
            p.append(f"--lr-schedule {self.lr_schedule!r} is not constant or cosine")
        if not math.isfinite(self.lr) or self.lr <= 0:
            p.append(f"--lr {self.lr} must be a finite number > 0")
        if not math.isfinite(self.grad_clip) or not math.isfinite(self.weight_decay):
            p.append("--grad-clip and the weight decay must be finite numbers")
        if not 0 <= self.ema_decay < 1:
            p.append(f"--ema-decay {self.ema_decay} must be in [0, 1)")
        if not 0 <= self.cfg_dropout < 1:
            p.append(f"--cfg-dropout {self.cfg_dropout} must be in [0, 1)")
        if self.warmup_steps < 0 or self.num_workers < 0 or self.grad_clip < 0:
            p.append("--warmup-steps, --num-workers and --grad-clip must not be negative")
        collect(p)

    def to_dict(self) -> dict:
        """Plain dict (saved with the run and every checkpoint)."""
        return asdict(self)


# Settings that change what a checkpoint means: a resumed run must keep them (or start anew with --init-from).
MEANING = {"model": "--model", "condition": "--condition", "temporal_patch": "--temporal-patch",
           "prediction_type": "--prediction", "batch_size": "--batch-size",
           "max_tokens_per_batch": "--max-tokens-per-batch", "plugin": "--plugin", "precision": "--precision"}


def data_identity(manifest: dict) -> dict:
    """What identifies a dataset for a checkpoint: its rows, compression and text encoder."""
    return {"rows_digest": manifest.get("rows_digest"), "compression": manifest.get("compression"),
            "text_encoder": (manifest.get("text_encoder") or {}).get("path")}


def resume_differences(cfg: TrainConfig, saved: dict, data_now: dict, data_saved: dict | None) -> list[str]:
    """Each setting of `cfg` that differs from the checkpoint's `saved` train config, as 'flag old (now new)'."""
    out = []
    for key, flag in MEANING.items():
        if key in saved and saved[key] != getattr(cfg, key) and not (key == "precision" and "auto" in (saved[key], cfg.precision)):
            out.append(f"{flag} {saved[key]} (now {getattr(cfg, key)})")
    if data_saved is not None:
        if data_saved.get("rows_digest") != data_now.get("rows_digest"):
            out.append(f"--data {saved.get('data')} (now {cfg.data}: other rows)")
        for k in ("compression", "text_encoder"):
            if data_saved.get(k) != data_now.get(k):
                out.append(f"the dataset's {k.replace('_', ' ')} {data_saved.get(k)} (now {data_now.get(k)})")
    return out
