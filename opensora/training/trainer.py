"""The training loop: Colossal-AI booster, bucketed data, EMA, exact-resume checkpoints, logs."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from opensora.checkpoint import checkpoint_problem, checkpoints_of, is_checkpoint, load_dit, save_model_dir
from opensora.compression import compressor_from_spec
from opensora.data.dataset import EncodedDataset
from opensora.devices import PRECISION_NAMES, resolve_dtype
from opensora.diffusion.gaussian import DiffusionConfig, diffusion_loss, train_scheduler
from opensora.errors import OpenSoraError, OpenSoraWarning, UserError
from opensora.fsutil import DirectoryLock, share_tree
from opensora.parallel.dims import ParallelDims
from opensora.progress import ProgressEvent, ProgressFn, no_progress
from opensora.training.config import TrainConfig, data_identity, resume_differences
from opensora.training.data import DataPosition, crop_to_patch, make_loader, plan_dataset
from opensora.training.distributed import DistEnv, init_distributed, quiet, shutdown
from opensora.training.plugins import check_plugin, keeps_masters, make_plugin, optimizer_clips
from opensora.training.precision import (
    TorchAmp,
    colossal_scaler,
    colossal_step_skipped,
    grad_norm,
    load_scaler_state,
    master_params,
    scaler_state,
)


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


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to continue from: None, the newest of `run_dir` ("auto"), or a given one."""
    if resume is None:
        return None
    if resume == "auto":
        ckpts = checkpoints_of(run_dir) if run_dir.is_dir() else []
        for ckpt in reversed(ckpts):  # a damaged newest checkpoint falls back to the previous good one
            problem = checkpoint_problem(ckpt, training=True)
            if problem is None:
                return ckpt
            warnings.warn(f"skipping {ckpt}: {problem}; resuming from an earlier checkpoint", OpenSoraWarning,
                          stacklevel=2)
        if ckpts:
            raise UserError(f"--resume auto: every checkpoint of {run_dir} is damaged; start a new run (another --run-dir)")
        return None
    p = Path(resume)
    if not (p / "trainer_state.json").exists():
        raise UserError(f"--resume {resume}: not a training checkpoint (no trainer_state.json); pass RUN/ckpt-N or auto")
    problem = checkpoint_problem(p, training=True)
    if problem:
        raise UserError(f"--resume {resume}: {problem}; pass an earlier checkpoint or --resume auto")
    return p


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
        self.env: DistEnv = init_distributed(cfg.device, cfg.pg_timeout)
        self.is_main = self.env.rank == 0
        self.dims = ParallelDims(self.env.world_size, cfg.sp_size, cfg.sp, self.env.rank)
        self.dims.build_groups()
        self.run_dir = Path(cfg.run_dir)
        if cfg.batch_size % self.dims.dp_size:
            raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the data-parallel size "
                            f"{self.dims.dp_size} (world {self.env.world_size} / sp {cfg.sp_size})")
        self.dtype = resolve_dtype(cfg.precision, self.env.device)
        self.precision = PRECISION_NAMES[self.dtype]
        check_plugin(cfg.plugin, self.precision, self.env.device)  # before any data or model is loaded
        # Who clips and measures the gradient: Colossal-AI's mixed-precision and ZeRO optimizers do it
        # inside step() (they alone see the fp32/sharded gradients); otherwise we do, on the model's grads.
        self.optimizer_clips = optimizer_clips(cfg.plugin, self.precision)
        # ddp trains fp32 weights under autocast; the other plugins cast the model themselves.
        self.amp = TorchAmp(self.dtype if cfg.plugin == "ddp" else torch.float32, self.env.device)
        self.skipped_steps = 0

    def _broadcast(self, obj):
        objs = [obj]
        dist.broadcast_object_list(objs, src=0)
        return objs[0]

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
        self.global_batch_of = self.plan.global_batch_of()
        if cfg.grad_checkpoint:
            model.enable_gradient_checkpointing()
        if self.dims.sp_enabled:
            from opensora.parallel.parallelize import apply_sequence_parallel

            apply_sequence_parallel(model, self.dims)
        self.ema = ema.to(dev).requires_grad_(False).eval()
        self.diffusion = DiffusionConfig(prediction_type=cfg.prediction_type, cfg_dropout=cfg.cfg_dropout)
        self.scheduler = train_scheduler(self.diffusion)
        optimizer = self._optimizer(model)
        lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(cfg.warmup_steps, cfg.steps, cfg.lr_schedule))
        with quiet():
            from colossalai.booster import Booster

            self.plugin = make_plugin(cfg.plugin, self.precision, dev, cfg.grad_clip)
            self.booster = Booster(plugin=self.plugin)
            self.model, self.optimizer, _, _, self.lr_scheduler = self.booster.boost(
                model.to(dev), optimizer, lr_scheduler=lr_scheduler)
        self.step, self.position = 0, DataPosition()
        if self.resume_from is not None:
            self._load_state(self.resume_from)

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
        # torch's AdamW: fused on CUDA (one kernel for all parameters, nothing to build), foreach on CPU.
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

    # ---------------------------------------------------------------- checkpoints
    def _meta(self) -> dict:
        m = self.data.manifest
        return {"format": "opensora-checkpoint", "model_name": self.cfg.model, "step": self.step,
                "compression": m["compression"], "text_encoder": m["text_encoder"], "stride": m["stride"],
                "diffusion": self.diffusion.to_dict(), "train_config": self.cfg.to_dict(),
                "data": data_identity(m),
                "world_size": self.env.world_size}

    def save_checkpoint(self) -> Path:
        """Write RUN/ckpt-NNNNNNN atomically (every rank takes part); prune to --keep."""
        tmp = self.run_dir / f".ckpt-{self.step:07d}.tmp"
        try:
            return self._save_checkpoint(tmp)
        except BaseException as e:
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)  # a full disk or a Ctrl-C leaves no half checkpoint
            if isinstance(e, OSError):
                raise OpenSoraError(f"cannot write the checkpoint of step {self.step} in {self.run_dir} ({e.strerror or e}); "
                                    "free some space, then continue with --resume auto") from None
            raise

    def _save_checkpoint(self, tmp: Path) -> Path:
        final = self.run_dir / f"ckpt-{self.step:07d}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        if self.is_main:
            save_model_dir(tmp, self.model.unwrap(), self._meta(), ema=self.ema)
        # Before the first successful step (every fp16 step skipped so far) the optimizer has no state,
        # which Colossal-AI's ZeRO cannot save; a fresh optimizer is then exactly what resume needs.
        has_state = self._optimizer_has_state()
        if has_state:
            # TorchDDPPlugin cannot load its own sharded optimizer files on the CPU: save those whole.
            self.booster.save_optimizer(self.optimizer, str(tmp / "optimizer"), shard=self.cfg.plugin != "ddp")
        from safetensors.torch import save_file

        rank = f"rank{self.env.rank:05d}"
        rng = {"torch_cpu": torch.get_rng_state()}  # the loss's draws come from per-sample seeds
        if self.env.device.type == "cuda":
            rng["torch_cuda"] = torch.cuda.get_rng_state(self.env.device)
        save_file(rng, tmp / f"rng-{rank}.safetensors")
        if self._saves_masters():
            # The fp32 masters (ZeRO: this rank's shards): the saved model holds the 16-bit working
            # weights, and masters rebuilt from those would not continue the run exactly.
            save_file({str(i): p.detach().cpu().contiguous() for i, p in enumerate(master_params(self.optimizer))},
                      tmp / f"master-{rank}.safetensors")
        dist.barrier()
        if self.is_main:
            sched = {k: v for k, v in self.lr_scheduler.state_dict().items() if k != "lr_lambdas"}
            state = {"step": self.step, "epoch": self.position.epoch, "batch": self.position.batch,
                     "world_size": self.env.world_size, "dp_size": self.dims.dp_size, "sp_size": self.dims.sp_size,
                     "global_batch_of": [[list(k), v] for k, v in sorted(self.global_batch_of.items())],
                     "lr_scheduler": sched, "seed": self.cfg.seed, "optimizer_state": has_state,
                     "plugin": self.cfg.plugin, "precision": self.precision,
                     "skipped_steps": self.skipped_steps, "loss_scaler": self._scaler_state()}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
            share_tree(tmp)
            _fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)  # the checkpoint appears whole, or the previous one stays the newest
            for old in checkpoints_of(self.run_dir)[: -self.cfg.keep]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return final

    def _load_state(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        state = json.loads((ckpt / "trainer_state.json").read_text())
        relayout = (state["world_size"], state["sp_size"]) != (self.env.world_size, self.dims.sp_size)
        if relayout and (self.cfg.plugin == "zero2" or "global_batch_of" not in state):
            n = state["world_size"]
            why = ("zero2 keeps per-rank shards of the fp32 weights" if self.cfg.plugin == "zero2"
                   else "it predates layout-independent data order")
            raise UserError(f"--resume {ckpt} was saved by {n} process{'es' if n != 1 else ''} (sp {state['sp_size']}) "
                            f"and cannot continue on another layout ({why}); resume with the same --nproc/--sp-size")
        if "global_batch_of" in state:  # the data order of the run, whatever the layout is now
            self.global_batch_of = {tuple(k): v for k, v in state["global_batch_of"]}
        saved = (state.get("plugin", self.cfg.plugin), state.get("precision", self.precision))
        if saved != (self.cfg.plugin, self.precision):
            raise UserError(f"--resume {ckpt} was trained with --plugin {saved[0]} --precision {saved[1]}; "
                            f"resume with those to continue exactly")
        if state.get("optimizer_state", True):
            import pickle

            try:  # Colossal-AI calls torch.load, whose default (torch >= 2.6) refuses pickled code
                self.booster.load_optimizer(self.optimizer, str(ckpt / "optimizer"))
            except pickle.UnpicklingError as e:
                raise UserError(f"--resume {ckpt}: the optimizer state holds more than tensors and was not loaded "
                                f"({str(e).splitlines()[0][:100]}); resume only checkpoints you trust, or start "
                                "a new run") from None
            _steps_to_param_device(getattr(self.optimizer, "optim", self.optimizer))
        rank = f"rank{self.env.rank:05d}"
        if self._saves_masters():
            # hybrid keeps whole masters on every rank: another layout reads rank 0's (zero2 was refused above)
            own = ckpt / f"master-{rank}.safetensors"
            masters = load_file(own if own.exists() else ckpt / "master-rank00000.safetensors")
            with torch.no_grad():
                for i, p in enumerate(master_params(self.optimizer)):
                    p.copy_(masters[str(i)])
        self._load_scaler_state(state.get("loss_scaler") or {})
        self.skipped_steps = state.get("skipped_steps", 0)
        self.lr_scheduler.load_state_dict({**state["lr_scheduler"], "lr_lambdas": [None]})
        # --lr may change on resume: the schedule continues from the new peak (the saved state holds the old)
        factor = self.lr_scheduler.lr_lambdas[0](self.lr_scheduler.last_epoch)
        self.lr_scheduler.base_lrs = [self.cfg.lr] * len(self.lr_scheduler.base_lrs)
        for group in self.optimizer.param_groups:
            group["initial_lr"], group["lr"] = self.cfg.lr, self.cfg.lr * factor
        self.step = state["step"]
        self.position = DataPosition(state["epoch"], state["batch"])
        rng_file = ckpt / f"rng-{rank}.safetensors"
        rng = load_file(rng_file if rng_file.exists() else ckpt / "rng-rank00000.safetensors")
        torch.set_rng_state(rng["torch_cpu"])
        if "torch_cuda" in rng and self.env.device.type == "cuda":
            torch.cuda.set_rng_state(rng["torch_cuda"], self.env.device)

    def _optimizer_has_state(self) -> bool:
        inner = getattr(self.optimizer, "optim", self.optimizer)
        has = torch.tensor([float(len(inner.state) > 0)], device=self.env.device)
        dist.all_reduce(has, op=dist.ReduceOp.MIN)  # every rank saves, or none
        return bool(has.item() > 0)

    def _saves_masters(self) -> bool:
        # fp32 plugins have no separate masters (zero2's fp32 shards are copies of the saved model).
        return keeps_masters(self.cfg.plugin, self.precision)

    def _scaler_state(self) -> dict:
        scaler = colossal_scaler(self.optimizer)
        return scaler_state(scaler) if scaler is not None else self.amp.state_dict()

    def _load_scaler_state(self, state: dict) -> None:
        scaler = colossal_scaler(self.optimizer)
        if scaler is not None and state:
            load_scaler_state(scaler, state)
        else:
            self.amp.load_state_dict(state)

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
                                      self.cfg.seed, self.cfg.num_workers)
        while True:
            sampler.set_position(self.position.epoch, self.position.batch)
            for batch in loader:
                self.position.batch += 1
                yield batch
            self.position = DataPosition(self.position.epoch + 1, 0)

    def train(self) -> TrainSummary:
        """Run until --steps, checkpointing every --ckpt-every and at the end."""
        cfg = self.cfg
        summary = TrainSummary(self.run_dir, self.step, cfg.steps, world_size=self.env.world_size)
        metrics = self.run_dir / "metrics.jsonl"
        writer = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            _truncate_metrics(metrics, self.step)  # steps after the checkpoint are redone
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events at and after it: the checkpoint's own step was logged and stays
            writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1 if self.step else None)
        self.progress(ProgressEvent("train", self.step, cfg.steps, unit="steps"))
        watchdog = None
        if self.env.world_size > 1:
            from opensora.training.watchdog import Watchdog

            watchdog = Watchdog(self.run_dir, self.env.rank, self.env.world_size, cfg.hang_timeout).start(self.step)
        try:
            return self._loop(summary, metrics, writer, watchdog)
        finally:
            if watchdog is not None:
                watchdog.stop()

    def _loop(self, summary: TrainSummary, metrics: Path, writer, watchdog) -> TrainSummary:
        cfg, dev = self.cfg, self.env.device
        params = [p for p in self.model.unwrap().parameters() if p.requires_grad]
        ema_params = [p for p in self.ema.parameters()]
        t_start, n_samples = time.perf_counter(), 0
        batches = self._batches()
        self.model.train()
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            batch = next(batches)
            x0 = crop_to_patch(self.compressor.to_diffusion(batch["video"].to(dev)), self.patch)
            try:
                with self.amp.autocast():
                    # The global batch's mean, times dp because data-parallel gradients are averaged over ranks.
                    loss = diffusion_loss(self.model, x0, batch["text"].to(dev), batch["text_mask"].to(dev),
                                          self.diffusion, self.scheduler, batch["seeds"], batch["weight"],
                                          batch["global_batch"] / self.dims.dp_size)
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
                    torch._foreach_lerp_(ema_params, [p.detach().float() for p in params], 1 - decay)
            self.step += 1
            if watchdog is not None:
                watchdog.beat(self.step)
            logged = loss.detach().float().clone()
            dist.all_reduce(logged)  # each sequence-parallel group's share, once per rank of the group
            logged, step_samples = logged.item() / self.env.world_size, int(batch["global_batch"])
            if not math.isfinite(logged):
                raise UserError(f"the loss became {logged} at step {self.step}; lower --lr or use --precision fp32")
            dt = time.perf_counter() - t0
            n_samples += step_samples
            summary.losses.append(logged)
            if self.is_main:
                lr = self.lr_scheduler.get_last_lr()[0]
                rec = {"step": self.step, "loss": logged, "lr": lr, "samples": step_samples,
                       "samples_per_s": step_samples / dt}
                if norm is not None:  # a skipped step, or a plugin that does not measure it: absent
                    rec["grad_norm"] = norm
                scale = self.loss_scale()
                if scale is not None:
                    rec.update(loss_scale=scale, skipped=skipped, skipped_steps=self.skipped_steps)
                with open(metrics, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                for k, v in rec.items():
                    if k != "step":
                        writer.add_scalar(f"train/{k}", float(v), self.step)
                info = {"loss": logged, "samples/s": step_samples / dt}
                if self.skipped_steps:
                    info["skipped"] = self.skipped_steps
                self.progress(ProgressEvent("train", self.step, cfg.steps, unit="steps", info=info))
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                summary.last_checkpoint = self.save_checkpoint()
        summary.samples_per_s = n_samples / max(time.perf_counter() - t_start, 1e-9)
        summary.skipped_steps = self.skipped_steps
        batches.close()  # stops the persistent data workers
        if writer is not None:
            writer.close()
            (self.run_dir / "summary.json").write_text(json.dumps({
                "start_step": summary.start_step, "steps": self.step, "samples_per_s": summary.samples_per_s,
                "last_loss": summary.losses[-1] if summary.losses else None, "world_size": self.env.world_size,
                "last_checkpoint": str(summary.last_checkpoint), "skipped_steps": self.skipped_steps}, indent=2))
        return summary


def _steps_to_param_device(optimizer: torch.optim.Optimizer) -> None:
    """Put Adam's step counters where torch's fused kernel wants them (on the parameter's device).

    torch's own load_state_dict does this; Colossal-AI's checkpoint IO fills the state itself and
    leaves them on the CPU, which fused AdamW refuses ("state_steps is on cpu").
    """
    if not optimizer.defaults.get("fused"):
        return
    for param, state in optimizer.state.items():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].to(device=param.device, dtype=torch.float32)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step`; a line torn by a kill (the last one) is dropped, not fatal."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("step", step + 1) <= step:
            keep.append(line)
    path.write_text("".join(x + "\n" for x in keep))


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def train(cfg: TrainConfig, progress: ProgressFn = no_progress) -> TrainSummary:
    """Train on this rank (all ranks of a torchrun job call this); returns the run's summary."""
    lock, created = None, False
    try:
        trainer = Trainer(cfg, progress)
        if trainer.env.world_size > 1:  # every rank must use rank 0's run directory
            trainer.run_dir = Path(trainer._broadcast(str(trainer.run_dir)))
            trainer.cfg.run_dir = str(trainer.run_dir)
        refusal = None
        if trainer.is_main:  # one run per directory: a second `train` into it is refused
            created = not trainer.run_dir.exists()
            try:
                lock = DirectoryLock(trainer.run_dir, "--run-dir").__enter__()
            except UserError as e:
                refusal = str(e)
        if trainer.env.world_size > 1:
            refusal = trainer._broadcast(refusal)
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
