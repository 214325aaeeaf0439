"""Settings of `opensora eval`: the schema of its flags, config keys and OPENSORA_EVAL_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from opensora.errors import collect
from opensora.schema import field_problems, setting


@dataclass
class EvalConfig:
    """What to evaluate and with which feature extractors."""

    ckpts: list[str] = field(default_factory=list)  # positional arguments, not a setting
    data: str | None = setting(None, "Encoded dataset, or a collated split (annotations.json + videos/), whose "
                               "captions are sampled and whose videos are the reference.", flag="--data",
                               shown="required")
    samples: int = setting(64, "Videos to generate: the split's first N videos, each with its first caption.", ge=2)
    seed: int = setting(0, "Noise seed (video k uses seed + k).", ge=0)
    steps: int | None = setting(None, "Denoising steps.", ge=1, shown="the objective's: ddpm 50, rflow 30")
    sampler: str | None = setting(None, "Sampler (of the checkpoint's objective).", choices="opensora.diffusion:SAMPLERS",
                                  shown="ddim for ddpm, euler for rflow")
    cfg_scale: float = setting(4.0, "Classifier-free guidance scale.", ge=0)
    clip: str | None = setting(None, "CLIP model (hub id or local directory) for the CLIP score, e.g. "
                               "openai/clip-vit-base-patch32.", shown="no CLIP score")
    i3d: str | None = setting(None, "TorchScript I3D file for FVD (StyleGAN-V's i3d_torchscript.pt).", shown="no FVD")
    device: str = setting("auto", "Where to sample and score: auto, cpu, cuda or cuda:N.")
    precision: str = setting("auto", "auto (bf16 on CUDA, fp32 on the CPU, as train).",
                             choices="opensora.training.config:PRECISIONS")
    out: str | None = setting(None, "Results JSON (all checkpoints in one file).", shown="CKPT/eval-SPLIT.json each")
    save_videos: bool = setting(False, "Also write the generated mp4s beside the results.")

    def validate(self) -> None:
        """Raise one ConfigError listing every bad value."""
        p = field_problems(self)
        if not self.ckpts:
            p.append("no checkpoint given; pass one or more RUN/ckpt-N directories")
        if self.data is None:
            p.append("--data is required: an encoded dataset or a collated split")
        collect(p)
