"""Colossal-AI booster plugins by name, with a one-line error for a plugin this machine cannot run."""

from __future__ import annotations

import torch

from opensora.errors import UserError
from opensora.training.distributed import quiet


def _no_shard_policy():
    """A shardformer policy that leaves our model as it is (auto policies exist only for HF models)."""
    from colossalai.shardformer.policies.base_policy import Policy

    class NoShardPolicy(Policy):
        def config_sanity_check(self):
            pass

        def preprocess(self):
            return self.model

        def module_policy(self):
            return {}

        def postprocess(self):
            return self.model

        def get_held_layers(self):
            return [self.model]

        def get_shared_params(self):
            return []

    return NoShardPolicy()


def make_plugin(name: str, precision: str, device: torch.device, grad_clip: float):
    """The booster plugin `name` (ddp | zero2 | gemini | hybrid) for `precision` on `device`."""
    if device.type != "cuda" and name in ("zero2", "gemini"):
        raise UserError(f"--plugin {name} needs a CUDA GPU (Colossal-AI asserts one); on this machine use "
                        "--plugin hybrid or --plugin ddp")
    if device.type != "cuda" and precision == "fp16":
        raise UserError("--precision fp16 needs a CUDA GPU (loss scaling); on the CPU use fp32 or bf16")
    with quiet():
        from colossalai.booster.plugin import (
            GeminiPlugin,
            HybridParallelPlugin,
            LowLevelZeroPlugin,
            TorchDDPPlugin,
        )
    if name == "ddp":
        return TorchDDPPlugin(broadcast_buffers=False)
    if name == "zero2":
        return LowLevelZeroPlugin(stage=2, precision=precision, max_norm=grad_clip)
    if name == "gemini":
        return GeminiPlugin(precision=precision, max_norm=grad_clip)
    return HybridParallelPlugin(tp_size=1, pp_size=1, zero_stage=0, precision=precision,
                                custom_policy=_no_shard_policy(), broadcast_buffers=False)


def clips_itself(name: str) -> bool:
    """Whether the plugin's optimizer clips gradients (ZeRO shards them, so we cannot)."""
    return name in ("zero2", "gemini")
