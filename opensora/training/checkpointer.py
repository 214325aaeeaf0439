"""Everything a training checkpoint holds, written and read in one place.

RUN/ckpt-NNNNNNN is written into a temporary directory by every rank and renamed when whole:
  model/, ema/           the weights (`opensora.checkpoint.save_model_dir`, safetensors + config)
  opensora.json          what the model needs to sample (compression, text encoder, diffusion, train config)
  optimizer/             the optimizer state through the booster (absent before the first taken step)
  master-rankNNNNN.safetensors   fp32 master weights of 16-bit plugins (ZeRO: this rank's shards)
  rng-rankNNNNN.safetensors      each rank's torch RNG state
  trainer_state.json     step, data position, schedule, loss scaler, layout, seed
`resolve_resume` picks the checkpoint a run continues from.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from opensora.checkpoint import checkpoint_problem, checkpoints_of, save_model_dir
from opensora.errors import OpenSoraError, OpenSoraWarning, UserError
from opensora.fsutil import share_tree
from opensora.training.config import data_identity
from opensora.training.data import DataPosition
from opensora.training.plugins import keeps_masters
from opensora.training.precision import colossal_scaler, load_scaler_state, master_params, scaler_state

if TYPE_CHECKING:
    from opensora.training.trainer import Trainer


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


class Checkpointer:
    """Saves and restores the state of a `Trainer` (its model, EMA, optimizer, schedule and data position)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def _meta(self) -> dict:
        t = self.trainer
        m = t.data.manifest
        return {"format": "opensora-checkpoint", "model_name": t.cfg.model, "step": t.step,
                "compression": m["compression"], "text_encoder": m["text_encoder"], "stride": m["stride"],
                "diffusion": t.diffusion.to_dict(), "train_config": t.cfg.to_dict(),
                "data": data_identity(m),
                "world_size": t.env.world_size}

    def save(self) -> Path:
        """Write RUN/ckpt-NNNNNNN atomically (every rank takes part); prune to --keep."""
        t = self.trainer
        tmp = t.run_dir / f".ckpt-{t.step:07d}.tmp"
        try:
            return self._save(tmp)
        except BaseException as e:
            if t.is_main:
                shutil.rmtree(tmp, ignore_errors=True)  # a full disk or a Ctrl-C leaves no half checkpoint
            if isinstance(e, OSError):
                raise OpenSoraError(f"cannot write the checkpoint of step {t.step} in {t.run_dir} ({e.strerror or e}); "
                                    "free some space, then continue with --resume auto") from None
            raise

    def _save(self, tmp: Path) -> Path:
        t = self.trainer
        final = t.run_dir / f"ckpt-{t.step:07d}"
        if t.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        if t.is_main:
            save_model_dir(tmp, t.model.unwrap(), self._meta(), ema=t.ema)
        # Before the first successful step (every fp16 step skipped so far) the optimizer has no state,
        # which Colossal-AI's ZeRO cannot save; a fresh optimizer is then exactly what resume needs.
        has_state = self._optimizer_has_state()
        if has_state:
            # TorchDDPPlugin cannot load its own sharded optimizer files on the CPU: save those whole.
            t.booster.save_optimizer(t.optimizer, str(tmp / "optimizer"), shard=t.cfg.plugin != "ddp")
        from safetensors.torch import save_file

        rank = f"rank{t.env.rank:05d}"
        rng = {"torch_cpu": torch.get_rng_state()}  # the loss's draws come from per-sample seeds
        if t.env.device.type == "cuda":
            rng["torch_cuda"] = torch.cuda.get_rng_state(t.env.device)
        save_file(rng, tmp / f"rng-{rank}.safetensors")
        if self._saves_masters():
            # The fp32 masters (ZeRO: this rank's shards): the saved model holds the 16-bit working
            # weights, and masters rebuilt from those would not continue the run exactly.
            save_file({str(i): p.detach().cpu().contiguous() for i, p in enumerate(master_params(t.optimizer))},
                      tmp / f"master-{rank}.safetensors")
        dist.barrier()
        if t.is_main:
            sched = {k: v for k, v in t.lr_scheduler.state_dict().items() if k != "lr_lambdas"}
            state = {"step": t.step, "epoch": t.position.epoch, "batch": t.position.batch,
                     "world_size": t.env.world_size, "dp_size": t.dims.dp_size, "sp_size": t.dims.sp_size,
                     "global_batch_of": [[list(k), v] for k, v in sorted(t.global_batch_of.items())],
                     "lr_scheduler": sched, "seed": t.cfg.seed, "optimizer_state": has_state,
                     "plugin": t.cfg.plugin, "precision": t.precision,
                     "skipped_steps": t.skipped_steps, "loss_scaler": self._scaler_state()}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
            share_tree(tmp)
            fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)  # the checkpoint appears whole, or the previous one stays the newest
            for old in checkpoints_of(t.run_dir)[: -t.cfg.keep]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return final

    def load(self, ckpt: Path) -> None:
        """Restore the trainer's optimizer, masters, schedule, step, data position and RNG from `ckpt`."""
        from safetensors.torch import load_file

        t = self.trainer
        state = json.loads((ckpt / "trainer_state.json").read_text())
        relayout = (state["world_size"], state["sp_size"]) != (t.env.world_size, t.dims.sp_size)
        if relayout and (t.cfg.plugin == "zero2" or "global_batch_of" not in state):
            n = state["world_size"]
            why = ("zero2 keeps per-rank shards of the fp32 weights" if t.cfg.plugin == "zero2"
                   else "it predates layout-independent data order")
            raise UserError(f"--resume {ckpt} was saved by {n} process{'es' if n != 1 else ''} (sp {state['sp_size']}) "
                            f"and cannot continue on another layout ({why}); resume with the same --nproc/--sp-size")
        if "global_batch_of" in state:  # the data order of the run, whatever the layout is now
            t.global_batch_of = {tuple(k): v for k, v in state["global_batch_of"]}
        saved = (state.get("plugin", t.cfg.plugin), state.get("precision", t.precision))
        if saved != (t.cfg.plugin, t.precision):
            raise UserError(f"--resume {ckpt} was trained with --plugin {saved[0]} --precision {saved[1]}; "
                            f"resume with those to continue exactly")
        if state.get("optimizer_state", True):
            import pickle

            try:  # Colossal-AI calls torch.load, whose default (torch >= 2.6) refuses pickled code
                t.booster.load_optimizer(t.optimizer, str(ckpt / "optimizer"))
            except pickle.UnpicklingError as e:
                raise UserError(f"--resume {ckpt}: the optimizer state holds more than tensors and was not loaded "
                                f"({str(e).splitlines()[0][:100]}); resume only checkpoints you trust, or start "
                                "a new run") from None
            steps_to_param_device(getattr(t.optimizer, "optim", t.optimizer))
        rank = f"rank{t.env.rank:05d}"
        if self._saves_masters():
            # hybrid keeps whole masters on every rank: another layout reads rank 0's (zero2 was refused above)
            own = ckpt / f"master-{rank}.safetensors"
            masters = load_file(own if own.exists() else ckpt / "master-rank00000.safetensors")
            with torch.no_grad():
                for i, p in enumerate(master_params(t.optimizer)):
                    p.copy_(masters[str(i)])
        self._load_scaler_state(state.get("loss_scaler") or {})
        t.skipped_steps = state.get("skipped_steps", 0)
        t.lr_scheduler.load_state_dict({**state["lr_scheduler"], "lr_lambdas": [None]})
        # --lr may change on resume: the schedule continues from the new peak (the saved state holds the old)
        factor = t.lr_scheduler.lr_lambdas[0](t.lr_scheduler.last_epoch)
        t.lr_scheduler.base_lrs = [t.cfg.lr] * len(t.lr_scheduler.base_lrs)
        for group in t.optimizer.param_groups:
            group["initial_lr"], group["lr"] = t.cfg.lr, t.cfg.lr * factor
        t.step = state["step"]
        t.position = DataPosition(state["epoch"], state["batch"])
        rng_file = ckpt / f"rng-{rank}.safetensors"
        rng = load_file(rng_file if rng_file.exists() else ckpt / "rng-rank00000.safetensors")
        torch.set_rng_state(rng["torch_cpu"])
        if "torch_cuda" in rng and t.env.device.type == "cuda":
            torch.cuda.set_rng_state(rng["torch_cuda"], t.env.device)

    def _optimizer_has_state(self) -> bool:
        t = self.trainer
        inner = getattr(t.optimizer, "optim", t.optimizer)
        has = torch.tensor([float(len(inner.state) > 0)], device=t.env.device)
        dist.all_reduce(has, op=dist.ReduceOp.MIN)  # every rank saves, or none
        return bool(has.item() > 0)

    def _saves_masters(self) -> bool:
        t = self.trainer
        # fp32 plugins have no separate masters (zero2's fp32 shards are copies of the saved model).
        return keeps_masters(t.cfg.plugin, t.precision)

    def _scaler_state(self) -> dict:
        t = self.trainer
        scaler = colossal_scaler(t.optimizer)
        return scaler_state(scaler) if scaler is not None else t.amp.state_dict()

    def _load_scaler_state(self, state: dict) -> None:
        t = self.trainer
        scaler = colossal_scaler(t.optimizer)
        if scaler is not None and state:
            load_scaler_state(scaler, state)
        else:
            t.amp.load_state_dict(state)


def steps_to_param_device(optimizer: torch.optim.Optimizer) -> None:
    """Put Adam's step counters where torch's fused kernel wants them (on the parameter's device).

    torch's own load_state_dict does this; Colossal-AI's checkpoint IO fills the state itself and
    leaves them on the CPU, which fused AdamW refuses ("state_steps is on cpu").
    """
    if not optimizer.defaults.get("fused"):
        return
    for param, state in optimizer.state.items():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].to(device=param.device, dtype=torch.float32)


def fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
