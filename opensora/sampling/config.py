"""Settings of `opensora sample`: the schema of its flags, config keys and OPENSORA_SAMPLE_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from opensora.errors import collect
from opensora.schema import field_problems, setting


@dataclass
class SampleConfig:
    """What to generate and how; the CLI fills it from flags, the environment and the user config."""

    prompts: list[str] = field(default_factory=list)  # positional arguments (and --prompts FILE), not a setting
    prompts_file: str | None = setting(None, "A file with one prompt a line.", flag="--prompts", shown="none")
    ckpt: str | None = setting(None, "Checkpoint, run or model directory.", shown="newest of the newest run")
    height: int = setting(256, "Video height in pixels.", ge=1)
    width: int = setting(256, "Video width in pixels.", ge=1)
    fps: float = setting(8.0, "Frames per second.", gt=0)
    sec: float = setting(2.0, "Length in seconds (frames = sec x fps).", gt=0)
    frames: int | None = setting(None, "Length in frames (instead of --sec).", ge=1, shown="--sec x --fps")
    steps: int | None = setting(None, "Denoising steps.", ge=1, shown="the objective's: ddpm 50, rflow 30")
    sampler: str | None = setting(None, "Sampler (of the checkpoint's objective).", choices="opensora.diffusion:SAMPLERS",
                                  shown="ddim for ddpm, euler for rflow")
    cfg_scale: float = setting(4.0, "Classifier-free guidance scale (1: no guidance).", ge=0)
    disable_cfg: bool = setting(False, "One forward per step, no guidance.")
    seed: int = setting(0, "Noise seed (sample i of prompt k uses seed + k*n + i).", ge=0)
    num_samples: int = setting(1, "Videos per prompt.", ge=1)
    ema: bool = setting(True, "Use the EMA weights when present.")
    device: str = setting("auto", "Where to sample: auto, cpu, cuda or cuda:N.")
    precision: str = setting("auto", "auto (bf16 on CUDA, fp32 on the CPU, as train).",
                             choices="opensora.training.config:PRECISIONS")
    out: str = setting("sample.mp4", "Output mp4 (numbered when several).")
    image: str | None = setting(None, "Image-to-video: the video starts from this image (a checkpoint trained with "
                                "--frame-condition).", shown="none")
    extend: str | None = setting(None, "Continue this clip: its last frames start the video (a checkpoint trained "
                                 "with --frame-condition).", shown="none")
    overwrite: bool = False  # replace existing output videos (a flag, never a config default)
    preview: bool = setting(False, "Also write a PNG contact sheet.")
    model: str | None = setting(None, "Check the checkpoint is this preset.", choices="opensora.models.presets:MODELS",
                                shown="any")
    sp: str = setting("none", "Sequence parallelism over --nproc ranks.",
                      choices="opensora.parallel.sequence:SP_STRATEGIES")
    nproc: int = setting(1, "Local processes (with --sp).", ge=1)
    sp_size: int | None = None  # ranks that split each sequence (None: every rank of the job)

    def validate(self) -> None:
        """Raise one ConfigError listing every bad value (NaN, infinities, zero, negatives, unknown names)."""
        p = field_problems(self)
        if self.image is not None and self.extend is not None:
            p.append("--image and --extend exclude each other; pass one")
        if self.nproc > 1 and self.sp == "none":
            p.append("--nproc needs --sp ulysses or --sp fastseq (the ranks split each video's sequence)")
        collect(p)

    def num_frames(self) -> int:
        """--frames, or --sec x --fps."""
        return self.frames if self.frames is not None else max(1, round((self.sec or 0) * self.fps))
