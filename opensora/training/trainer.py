"""Training: a `Trainer` builds the run (data, model, EMA, optimizer, booster), then its loop composes a
train step, the metrics logger (`metrics.py`) and the checkpointer (`checkpointer.py`)."""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from opensora.checkpoint import checkpoint_problem, is_checkpoint, load_dit
from opensora.compression import compressor_from_spec
from opensora.data.dataset import EncodedDataset
from opensora.devices import PRECISION_NAMES, resolve_dtype
from opensora.diffusion import DiffusionConfig, make_objective
from opensora.errors import OpenSoraError, UserError
from opensora.fsutil import DirectoryLock
from opensora.parallel.distributed import quiet, shutdown
from opensora.parallel.parallelize import init_parallel, parallelize
from opensora.progress import ProgressFn, no_progress
from opensora.training.checkpointer import Checkpointer, resolve_resume
from opensora.training.config import TrainConfig, data_identity, resume_differences
from opensora.training.data import DataPosition, crop_to_patch, make_loader, plan_dataset
from opensora.training.metrics import MetricsLogger
from opensora.training.plugins import check_plugin, make_plugin, optimizer_clips
from opensora.training.precision import (
    TorchAmp,
    colossal_scaler,
    colossal_step_skipped,
    grad_norm,
)


@dataclass
class StepResult:
    """What one optimizer step reports."""

    loss: float  # the global batch's mean loss
    grad_norm: float | None  # None: skipped, or not measured by the plugin
    skipped: bool  # the fp16 loss scaler skipped it
    samples: int


@dataclass
class TrainSummary:
    """What a run did."""

    run_dir: Path
    start_step: int
    steps: int
    losses: list[float] = field(default_factory=list)
    samples_per_s: float = 0.0
    last_checkpoint: Path | None = None
    world_size: int = 1
    skipped_steps: int = 0  # fp16 steps the loss scaler skipped (inf/NaN gradients)
    val_loss: float | None = None  # the last validation loss (--val-data)


OOM_FIXES = "try --grad-checkpoint, a smaller --batch-size, --sp N or re-encoding with a smaller --max-frames/--resolution"


def out_of_memory(e: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA's, and the CPU allocator's RuntimeError)."""
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def ema_decay_at(decay: float, step: int) -> float:
    """The EMA decay after `step` optimizer steps: warmed up as min(decay, (1 + step) / (10 + step)).

    diffusers' EMAModel uses the same schedule; without it a 0.9999 EMA of a few-thousand-step run
    would still be close to the initial weights.
    """
    return min(decay, (1 + step) / (10 + step))


class LRFactor:
    """Linear warm-up, then constant or cosine decay to 10% at the last step (picklable, no state)."""

    def __init__(self, warmup: int, total: int, schedule: str):
        self.warmup, self.total, self.schedule = warmup, total, schedule

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """One training run on this process's rank."""

    def __init__(self, cfg: TrainConfig, progress: ProgressFn = no_progress):
        cfg.validate()
        self.cfg, self.progress = cfg, progress
        self.env, self.dims = init_parallel(cfg.device, cfg.sp, cfg.sp_size, cfg.pg_timeout)
        if cfg.sp != "none" and self.env.world_size == 1:
            raise UserError(f"--sp {cfg.sp} splits each video's sequence over processes, and this is one process; "
                            "pass --nproc N (N >= 2), run under torchrun, or drop --sp")
        self.is_main = self.env.rank == 0
        self.run_dir = Path(broadcast(cfg.run_dir))  # every rank writes into rank 0's run directory
        cfg.run_dir = str(self.run_dir)
        if cfg.batch_size % self.dims.dp_size:
            raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the data-parallel size "
                            f"{self.dims.dp_size} (world {self.env.world_size} / sp {self.dims.sp_size})")
        self.dtype = resolve_dtype(cfg.precision, self.env.device)
        self.precision = PRECISION_NAMES[self.dtype]
        check_plugin(cfg.plugin, self.precision, self.env.device)  # before any data or model is loaded
        # Who clips and measures the gradient: Colossal-AI's mixed-precision and ZeRO optimizers do it
        # inside step() (they alone see the fp32/sharded gradients); otherwise we do, on the model's grads.
        self.optimizer_clips = optimizer_clips(cfg.plugin, self.precision)
        # ddp trains fp32 weights under autocast; the other plugins cast the model themselves.
        self.amp = TorchAmp(self.dtype if cfg.plugin == "ddp" else torch.float32, self.env.device)
        self.skipped_steps = 0
        self.checkpointer = Checkpointer(self)

    def setup(self) -> None:
        """Data, model, EMA, optimizer, booster; then resume if asked."""
        cfg, dev = self.cfg, self.env.device
        self.data = EncodedDataset(Path(cfg.data))
        manifest = self.data.manifest
        self.compressor = compressor_from_spec(manifest["compression"], device=str(dev))
        text = manifest["text_encoder"]
        self.resume_from = resolve_resume(cfg.resume, self.run_dir)
        if cfg.seed is None:  # a resumed run keeps the seed that orders its data; a new one starts at 0
            saved = json.loads((self.resume_from / "trainer_state.json").read_text()) if self.resume_from else {}
            cfg.seed = saved.get("seed", 0)
        torch.manual_seed(cfg.seed)
        from opensora.models.presets import create_model

        if self.resume_from is not None:
            self._check_resumable(self.resume_from, manifest)
            model = load_dit(self.resume_from / "model")
            ema = load_dit(self.resume_from / "ema")
        elif cfg.init_from is not None:  # a new run from another run's weights: fresh optimizer and data order
            init = Path(cfg.init_from)
            problem = checkpoint_problem(init) if is_checkpoint(init) else "not a checkpoint"
            if problem:
                raise UserError(f"--init-from {init}: {problem}; pass a RUN/ckpt-N directory")
            meta = json.loads((init / "opensora.json").read_text())
            if meta.get("model_name") != cfg.model:
                raise UserError(f"--init-from {init} holds a {meta.get('model_name')}, not --model {cfg.model}; "
                                f"pass --model {meta.get('model_name')}")
            model = load_dit(init / "model")
            ema = load_dit(init / "ema") if (init / "ema").is_dir() else copy.deepcopy(model)
        else:
            model = create_model(cfg.model, self.compressor.latent_channels, cfg.condition, text["dim"],
                                 text["max_length"], cfg.temporal_patch)
            ema = copy.deepcopy(model)
        self._check_compatible(model, manifest)
        self.patch = tuple(model.patch_size)
        self.plan = plan_dataset(self.data, self.patch, cfg.batch_size, self.dims.dp_size, cfg.max_tokens_per_batch)
        self.plan.mix_images(cfg.image_ratio)  # refuses a mix that leaves no batch
        self.global_batch_of = self.plan.global_batch_of()
        self.ema = ema.to(dev).requires_grad_(False).eval()
        self.diffusion = DiffusionConfig(objective=cfg.objective, prediction_type=cfg.prediction_type,
                                         flow_shift=cfg.flow_shift, cfg_dropout=cfg.cfg_dropout,
                                         frame_condition=cfg.frame_condition)
        self.objective = make_objective(self.diffusion)
        optimizer = self._optimizer(model)
        lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(cfg.warmup_steps, cfg.steps, cfg.lr_schedule))
        with quiet():
            from colossalai.booster import Booster

            self.booster = Booster(plugin=make_plugin(cfg.plugin, self.precision, dev, cfg.grad_clip))
        self.model, self.optimizer, self.lr_scheduler = parallelize(
            model.to(dev), self.dims, grad_checkpoint=cfg.grad_checkpoint, booster=self.booster, optimizer=optimizer,
            lr_scheduler=lr_scheduler)
        self.validator = self.previewer = None
        if cfg.val_data is not None:
            from opensora.training.validation import Validator

            self.validator = Validator(Path(cfg.val_data), manifest, cfg.val_samples, self.patch,
                                       max(1, cfg.batch_size // self.dims.dp_size), self.dims.dp_rank, self.dims.dp_size)
        if cfg.sample_prompts is not None:
            from opensora.training.previews import Previewer

            self.previewer = Previewer(Path(cfg.sample_prompts), self.data, self.compressor, self.patch, self.diffusion,
                                       cfg.sample_steps, dev, self.env.rank, self.env.world_size)
        self.step, self.position = 0, DataPosition()
        if self.resume_from is not None:
            self.checkpointer.load(self.resume_from)

    def _check_resumable(self, ckpt: Path, manifest: dict) -> None:
        """One line listing every setting that would change what the checkpoint means."""
        meta = json.loads((ckpt / "opensora.json").read_text())
        saved = {**meta.get("train_config", {}), "model": meta.get("model_name")}
        diffs = resume_differences(self.cfg, saved, data_identity(manifest), meta.get("data"))
        if diffs:
            raise UserError(f"--resume {ckpt} was trained with {'; '.join(diffs)}: keep the old values (drop the "
                            f"changed flags), or start a new run from its weights with --init-from {ckpt} and "
                            "another --run-dir")

    def _optimizer(self, model):
        params = [p for p in model.parameters() if p.requires_grad]
        # torch's AdamW: fused on CUDA (one kernel for all parameters, nothing to build), its default on the CPU.
        # Colossal-AI's HybridAdam would JIT-build two kernels (about 85 s) on every fresh machine.
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                                 fused=self.env.device.type == "cuda")

    def _check_compatible(self, model, manifest: dict) -> None:
        mc = model.config
        problems = []
        if mc.in_channels != self.compressor.latent_channels:
            problems.append(f"the model takes {mc.in_channels} latent channels but --data {self.cfg.data} has "
                            f"{self.compressor.latent_channels} ({manifest['compression']['name']})")
        text = manifest["text_encoder"]
        if mc.text_dim != text["dim"] or mc.text_len != text["max_length"]:
            problems.append(f"the model expects text features {mc.text_len}x{mc.text_dim} but the dataset has "
                            f"{text['max_length']}x{text['dim']} ({text['path']})")
        if problems:
            raise UserError("; ".join(problems) + "; encode the data with the model's settings or train a new model")

    def _optimizer_step(self, params) -> tuple[float | None, bool]:
        """Clip, step and zero the gradients; (global gradient norm or None, whether the step was skipped)."""
        cfg = self.cfg
        if self.optimizer_clips:
            self.optimizer.step()
            skipped = colossal_step_skipped(self.optimizer)
            norm = None if skipped else grad_norm(self.optimizer)
        else:
            inner = getattr(self.optimizer, "optim", self.optimizer)
            self.amp.unscale_(inner)
            # max_norm inf measures without clipping, so the norm is logged with --grad-clip 0 too
            norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf))
            skipped = self.amp.step(inner if self.amp.scaler is not None else self.optimizer)
            if skipped or not math.isfinite(norm):
                norm = None
        self.optimizer.zero_grad()
        with warnings.catch_warnings():
            # The schedule counts steps, taken or skipped; torch warns when the first step was skipped.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.lr_scheduler.step()
        return norm, skipped

    def loss_scale(self) -> float | None:
        """The fp16 loss scale now in force (None without one)."""
        scaler = colossal_scaler(self.optimizer)
        return float(scaler.scale.item()) if scaler is not None else self.amp.loss_scale

    # ---------------------------------------------------------------- loop
    def _batches(self):
        loader, sampler = make_loader(self.data, self.global_batch_of, self.dims.dp_rank, self.dims.dp_size,
                                      self.cfg.seed, self.cfg.num_workers, self.cfg.image_ratio)
        while True:
            sampler.set_position(self.position.epoch, self.position.batch)
            for batch in loader:
                self.position.batch += 1
                yield batch
            self.position = DataPosition(self.position.epoch + 1, 0)

    def train_step(self, batch: dict, params: list) -> StepResult:
        """One optimizer step on `batch`: loss, backward, clip, step, EMA; the loss averaged over every rank."""
        cfg, dev = self.cfg, self.env.device
        x0 = crop_to_patch(self.compressor.to_diffusion(batch["video"].to(dev)), self.patch)
        try:
            with self.amp.autocast():
                # The global batch's mean, times dp because data-parallel gradients are averaged over ranks.
                loss = self.objective.loss(self.model, x0, batch["text"].to(dev), batch["text_mask"].to(dev),
                                           batch["seeds"], batch["weight"], batch["global_batch"] / self.dims.dp_size,
                                           frame_group=self.patch[0])
            self.booster.backward(self.amp.scale(loss), self.optimizer)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not out_of_memory(e):
                raise
            shape = "x".join(map(str, x0.shape[2:]))
            raise OpenSoraError(f"out of memory at step {self.step + 1} on a {len(x0)} x {shape} latent batch; "
                                f"see `opensora train --plan` and {OOM_FIXES}") from None
        norm, skipped = self._optimizer_step(params)
        if skipped:
            self.skipped_steps += 1
        else:
            with torch.no_grad():
                decay = ema_decay_at(cfg.ema_decay, self.step)
                torch._foreach_lerp_(list(self.ema.parameters()), [p.detach().float() for p in params], 1 - decay)
        self.step += 1
        logged = loss.detach().float().clone()
        dist.all_reduce(logged)  # each sequence-parallel group's share, once per rank of the group
        logged = logged.item() / self.env.world_size
        if not math.isfinite(logged):
            raise UserError(f"the loss became {logged} at step {self.step}; lower --lr or use --precision fp32")
        return StepResult(logged, norm, skipped, int(batch["global_batch"]))

    def validate(self) -> float:
        """The validation loss of the training weights now (every rank calls it)."""
        self.model.eval()
        try:
            return self.validator.loss(self.model, self.diffusion, self.compressor, self.amp.autocast, self.env.device,
                                       self.dims.sp_size)
        finally:
            self.model.train()

    def _evaluations(self, metrics: MetricsLogger, rec: dict, info: dict) -> bool:
        """Validation loss and sample previews when due at this step, into the step's record and progress line."""
        cfg, ran = self.cfg, False
        if self.validator is not None and self.step % (cfg.val_every or cfg.ckpt_every) == 0:
            rec["val_loss"] = info["val"] = self.validate()
            ran = True
        if self.previewer is not None and self.step % (cfg.sample_every or cfg.ckpt_every) == 0:
            r = self.previewer.run(self.ema, self.compressor, self.step, self.run_dir)
            rec["preview_seconds"] = info["preview s"] = r.seconds
            metrics.images(self.step, r.sheets)
            ran = True
        return ran

    def train(self) -> TrainSummary:
        """Run until --steps, checkpointing every --ckpt-every and at the end."""
        cfg = self.cfg
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        metrics = MetricsLogger(self.run_dir, self.step, cfg.steps, self.progress, enabled=self.is_main)
        watchdog = None
        if self.env.world_size > 1:
            from opensora.training.watchdog import Watchdog

            watchdog = Watchdog(self.run_dir, self.env.rank, self.env.world_size, cfg.hang_timeout).start(self.step)
        try:
            summary = self._loop(metrics, watchdog)
        finally:
            if watchdog is not None:
                watchdog.stop()
        metrics.close({"start_step": summary.start_step, "steps": self.step, "samples_per_s": summary.samples_per_s,
                       "last_loss": summary.losses[-1] if summary.losses else None, "world_size": self.env.world_size,
                       "last_checkpoint": str(summary.last_checkpoint), "skipped_steps": self.skipped_steps,
                       "last_val_loss": summary.val_loss})
        return summary

    def _loop(self, metrics: MetricsLogger, watchdog) -> TrainSummary:
        """The steps: a train step, its metrics, a checkpoint when due."""
        cfg = self.cfg
        summary = TrainSummary(self.run_dir, self.step, cfg.steps, world_size=self.env.world_size)
        params = [p for p in self.model.unwrap().parameters() if p.requires_grad]
        t_start, n_samples = time.perf_counter(), 0
        batches = self._batches()
        self.model.train()
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            r = self.train_step(next(batches), params)
            if watchdog is not None:
                watchdog.beat(self.step)
            dt = time.perf_counter() - t0
            n_samples += r.samples
            summary.losses.append(r.loss)
            if self.is_main:
                rec = {"loss": r.loss, "lr": self.lr_scheduler.get_last_lr()[0], "samples": r.samples,
                       "samples_per_s": r.samples / dt}
                if r.grad_norm is not None:  # a skipped step, or a plugin that does not measure it: absent
                    rec["grad_norm"] = r.grad_norm
                scale = self.loss_scale()
                if scale is not None:
                    rec.update(loss_scale=scale, skipped=r.skipped, skipped_steps=self.skipped_steps)
                info = {"loss": r.loss, "samples/s": r.samples / dt, **({"skipped": self.skipped_steps}
                                                                         if self.skipped_steps else {})}
            else:
                rec, info = {}, {}
            if self._evaluations(metrics, rec, info) and watchdog is not None:  # every rank: they are collectives
                watchdog.beat(self.step)  # validation and previews are progress too
            summary.val_loss = rec.get("val_loss", summary.val_loss)
            if self.is_main:
                metrics.log(self.step, rec, info)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                summary.last_checkpoint = self.checkpointer.save()
        summary.samples_per_s = n_samples / max(time.perf_counter() - t_start, 1e-9)
        summary.skipped_steps = self.skipped_steps
        batches.close()  # stops the persistent data workers
        return summary


def broadcast(obj):
    """Rank 0's `obj` on every rank (itself in a one-process job)."""
    if dist.get_world_size() == 1:
        return obj
    objs = [obj]
    dist.broadcast_object_list(objs, src=0)
    return objs[0]


def train(cfg: TrainConfig, progress: ProgressFn = no_progress) -> TrainSummary:
    """Train on this rank (all ranks of a torchrun job call this); returns the run's summary."""
    lock, created = None, False
    try:
        trainer = Trainer(cfg, progress)
        refusal = None
        if trainer.is_main:  # one run per directory: a second `train` into it is refused
            created = not trainer.run_dir.exists()
            try:
                lock = DirectoryLock(trainer.run_dir, "--run-dir").__enter__()
            except UserError as e:
                refusal = str(e)
        refusal = broadcast(refusal)
        if refusal:
            raise UserError(refusal)
        try:
            trainer.setup()
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not out_of_memory(e):
                raise
            raise OpenSoraError(f"out of memory while building {cfg.model}, its EMA and optimizer; see "
                                "`opensora train --plan` and try a smaller --model or more memory") from None
        return trainer.train()
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
            if created and {p.name for p in lock.path.parent.iterdir()} <= {".lock"}:
                shutil.rmtree(lock.path.parent, ignore_errors=True)  # refused or failed before writing anything
        shutdown()  # NCCL warns at exit about a process group left alive
