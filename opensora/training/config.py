"""Training settings, validated in one place (every problem reported at once).

`TrainConfig` is the schema of `opensora train`: each field's help, flag, choices and range feed
the CLI's flags and `--help`, the config file's `train.*` keys and the OPENSORA_TRAIN_* variables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from opensora.errors import collect
from opensora.schema import field_problems, setting

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: bf16 on CUDA, fp32 on the CPU


@dataclass
class TrainConfig:
    """Everything `train` needs; the CLI fills it from flags, the environment and the user config."""

    data: str | None = setting(None, "Encoded dataset.", flag="--data", shown="the newest under HOME/datasets")
    run_dir: str | None = setting(None, "Run directory.", shown="HOME/runs/TIME-MODEL")
    model: str = setting("DiT/S-2", "Model preset.", choices="opensora.models.presets:MODELS")
    condition: str = setting("cross-attn", "How the text conditions the model.",
                             choices="opensora.models.dit:CONDITIONINGS")
    plugin: str = setting("hybrid", "Colossal-AI booster plugin.", choices="opensora.training.plugins:PLUGINS")
    precision: str = setting("auto", "Weights and compute precision (auto: bf16 on CUDA, fp32 on the CPU).",
                             choices="opensora.training.config:PRECISIONS")
    batch_size: int = setting(4, "Global batch size (per-rank batch x data-parallel size).", ge=1)
    max_tokens_per_batch: int | None = setting(
        None, "Per-rank batch of each latent shape from this token budget (replaces --batch-size): small "
        "shapes get big batches.", ge=1, shown="off")
    lr: float = setting(1e-4, "Peak learning rate.", gt=0)
    warmup_steps: int = setting(0, "Linear learning-rate warm-up.", ge=0)
    lr_schedule: str = setting("constant", "constant, or cosine (to 10% of --lr at --steps).",
                               choices="opensora.training.config:LR_SCHEDULES")
    weight_decay: float = setting(0.0, "AdamW weight decay.", ge=0)
    steps: int = setting(1000, "Optimizer steps to train to.", ge=1)
    ckpt_every: int = setting(500, "Checkpoint every N steps (and at the end).", ge=1)
    keep: int = setting(3, "Keep the last N checkpoints.", ge=1)
    ema_decay: float = setting(0.9999, "EMA decay of the weights (warmed up over the first steps).", ge=0)
    grad_clip: float = setting(1.0, "Clip the gradient norm (0: off).", ge=0)
    grad_checkpoint: bool = setting(False, "Recompute activations per block (less memory, ~1/3 more time).")
    seed: int | None = setting(None, "Seed of initialisation, data order and noise.", ge=0,
                               shown="0; a resumed run keeps its own")
    sp: str = setting("none", "Sequence parallelism.", choices="opensora.parallel.sequence:SP_STRATEGIES")
    sp_size: int | None = setting(None, "Ranks per sequence.", ge=1, shown="all ranks when --sp is set")
    nproc: int = setting(1, "Start N local processes (torchrun's machinery).", ge=1)
    num_workers: int = setting(2, "Data-loading workers per process.", ge=0)
    objective: str = setting("ddpm", "Training objective (the sampler follows it).",
                             choices="opensora.diffusion:OBJECTIVES")
    prediction_type: str = setting("epsilon", "What a ddpm model predicts.", flag="--prediction",
                                   choices="opensora.diffusion:PREDICTIONS")
    flow_shift: float = setting(1.0, "rflow: shift timesteps towards noise, t -> s*t / (1 + (s-1)*t) (SD3: 3.0 at "
                                "1024 px; larger latents want more).", gt=0)
    cfg_dropout: float = setting(0.1, "Probability of training on the null text (for guidance).", ge=0)
    image_ratio: float | None = setting(None, "Data with images (one-frame latents) beside videos: the share of "
                                        "batches drawn from the images.", ge=0,
                                        shown="as the data holds them: every row once an epoch")
    temporal_patch: int = setting(1, "Frames per patch (the spatial patch comes from --model).", ge=1)
    frame_condition: float = setting(0.0, "Share of samples trained with their first latent frames given clean (STDiT): "
                                     "makes `sample --image` and `--extend` work.", ge=0)
    resume: str | None = setting(None, "auto (the run's newest good checkpoint) or RUN/ckpt-N; options not given "
                                 "are the run's own.", shown="a new run")
    init_from: str | None = setting(None, "Start a new run from a checkpoint's model and EMA weights (fresh "
                                    "optimizer and data order).", shown="fresh weights")
    val_data: str | None = setting(None, "Encoded validation dataset (e.g. the collated val split, encoded): its loss "
                                   "on fixed (sample, timestep, noise) triples is logged as val_loss.", shown="none")
    val_every: int | None = setting(None, "Validate every N steps.", ge=1, shown="--ckpt-every")
    val_samples: int = setting(64, "Validation triples: the first N rows of --val-data.", ge=1)
    sample_prompts: str | None = setting(None, "A file with one prompt a line, sampled from the EMA at fixed seeds "
                                         "into RUN/samples/step-N/ and TensorBoard.", shown="none")
    sample_every: int | None = setting(None, "Sample the previews every N steps.", ge=1, shown="--ckpt-every")
    sample_steps: int | None = setting(None, "Denoising steps of the previews.", ge=1,
                                       shown="the objective's: ddpm 50, rflow 30")
    device: str = setting("auto", "Where to train: auto (CUDA when there is a GPU), cpu, cuda or cuda:N.")
    pg_timeout: float = setting(300.0, "Seconds a collective may wait for a peer before the run fails.", gt=0)
    hang_timeout: float = setting(600.0, "Several processes: stop the run when a rank makes no progress for "
                                  "this many seconds.", gt=0)

    def validate(self) -> None:
        """Raise one ConfigError listing every invalid setting, each naming its flag."""
        p = field_problems(self)
        for name in ("data", "run_dir"):
            if getattr(self, name) is None:
                p.append(f"--{name.replace('_', '-')} is required")
        if self.ema_decay >= 1:
            p.append(f"--ema-decay {self.ema_decay} must be in [0, 1)")
        if self.cfg_dropout >= 1:
            p.append(f"--cfg-dropout {self.cfg_dropout} must be in [0, 1)")
        if self.objective != "ddpm" and self.prediction_type != "epsilon":
            p.append(f"--prediction {self.prediction_type} applies to --objective ddpm only")
        if self.objective != "rflow" and self.flow_shift != 1.0:
            p.append(f"--flow-shift {self.flow_shift} applies to --objective rflow only")
        if self.val_every is not None and self.val_data is None:
            p.append(f"--val-every {self.val_every} needs --val-data")
        for name in ("sample_every", "sample_steps"):
            if getattr(self, name) is not None and self.sample_prompts is None:
                p.append(f"--{name.replace('_', '-')} {getattr(self, name)} needs --sample-prompts")
        from opensora.models.presets import MODELS, condition_problem, frame_condition_problem

        if self.model in MODELS and condition_problem(self.model, self.condition):
            p.append(condition_problem(self.model, self.condition))
        if self.image_ratio is not None and self.image_ratio > 1:
            p.append(f"--image-ratio {self.image_ratio} must be in [0, 1]")
        if self.model in MODELS and frame_condition_problem(self.model, self.frame_condition):
            p.append(frame_condition_problem(self.model, self.frame_condition))
        if self.sp == "none" and self.sp_size not in (None, 1):
            p.append(f"--sp-size {self.sp_size} needs --sp ulysses or --sp fastseq")
        collect(p)

    def resolved_sp_size(self, world_size: int) -> int:
        """Ranks per sequence in a job of `world_size` ranks (--sp without --sp-size: all of them)."""
        if self.sp == "none":
            return 1
        return self.sp_size or world_size

    def to_dict(self) -> dict:
        """Plain dict (saved with the run and every checkpoint)."""
        return asdict(self)


LR_SCHEDULES = ("constant", "cosine")

# Settings that change what a checkpoint means: a resumed run must keep them (or start anew with --init-from).
MEANING = {"model": "--model", "condition": "--condition", "temporal_patch": "--temporal-patch",
           "objective": "--objective", "prediction_type": "--prediction", "flow_shift": "--flow-shift",
           "frame_condition": "--frame-condition",
           "batch_size": "--batch-size", "max_tokens_per_batch": "--max-tokens-per-batch", "plugin": "--plugin", "precision": "--precision"}


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
