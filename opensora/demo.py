"""`opensora demo`: the whole loop on the built-in shapes world, offline, in minutes on a CPU.

world -> collate -> tiny CLIP text encoder -> encode -> train -> sample held-out prompts -> judge.
Every stage is the same library code the real pipeline uses; only the data and the (randomly
initialised, real-tokenizer) text encoder are small.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from opensora.data.world import HELD_OUT, WorldConfig, caption, generate_world, judge_video
from opensora.errors import collect
from opensora.progress import ProgressEvent, ProgressFn, no_progress
from opensora.schema import field_problems, setting

DEMO_SIZES = ((16, 16), (16, 24), (24, 16))  # small enough to learn in minutes on two CPU cores


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults fit in about ten minutes on two CPU cores (--quick: a minute)."""

    out: Path | None = setting(None, "Demo directory.", shown="HOME/demo, or HOME/demo-quick with --quick")
    steps: int | None = setting(None, "Training steps.", ge=1, shown="5000, or 30 with --quick")
    samples_per_prompt: int | None = setting(None, "Videos per held-out prompt.", flag="--samples", ge=1,
                                             shown="3, or 1 with --quick")
    quick: bool = setting(False, "A tiny run (a minute): checks the pipeline, learns little.")
    seed: int = setting(0, "Seed of the world, training and sampling.", ge=0)
    # rflow: the same held-out accuracy as ddpm with 10 sampling steps instead of 25 (benchmarks/demo_quality.py)
    objective: str = setting("rflow", "Training objective.", choices="opensora.diffusion:OBJECTIVES")
    frame_condition: float = setting(0.0, "Share of samples trained with their first frames given (STDiT); the demo "
                                     "then also continues each held-out clip from its first frame.", ge=0)
    model: str = setting("DiT/T-4", "Model preset (e.g. STDiT/T-4 for spatial-temporal attention).",
                         choices="opensora.models.presets:MODELS")
    temporal_patch: int = 2
    # DiT: adaLN, global colour and motion are what per-block modulation carries best. STDiT modulates
    # every block with one shared projection of the timestep (adaLN-single), so its text goes through
    # cross-attention, as in Open-Sora's STDiT.
    condition: str | None = None
    prediction: str = "v_prediction"  # ddpm's
    batch_size: int = 16
    lr: float = 2e-3
    lr_schedule: str = "constant"
    ema_decay: float = 0.995
    sample_steps: int | None = None  # ddpm 25, rflow 10; 5 with --quick
    cfg_scale: float = 4.0
    height: int = 16
    width: int = 16
    frames: int = 8
    world: WorldConfig | None = None  # the shapes world of `seed` (fewer clips with --quick)
    num_workers: int = 1

    def __post_init__(self) -> None:
        if self.condition is None:
            self.condition = "cross-attn" if self.model.startswith("STDiT/") else "adaln"
        if self.steps is None:
            self.steps = 30 if self.quick else 5000
        if self.samples_per_prompt is None:
            self.samples_per_prompt = 1 if self.quick else 3
        if self.sample_steps is None:
            self.sample_steps = 5 if self.quick else {"rflow": 10}.get(self.objective, 25)
        if self.world is None:
            small = {"videos_per_combo": 2, "test_videos_per_combo": 1} if self.quick else {}
            self.world = WorldConfig(seed=self.seed, sizes=DEMO_SIZES, **small)

    def validate(self) -> None:
        """Raise one ConfigError listing every bad value."""
        from opensora.models.presets import MODELS, frame_condition_problem

        p = field_problems(self)
        if self.model in MODELS and frame_condition_problem(self.model, self.frame_condition):
            p.append(frame_condition_problem(self.model, self.frame_condition))
        collect(p)


@dataclass
class DemoResult:
    """Where everything went, and how well the samples match their prompts."""

    out: Path
    run_dir: Path
    checkpoint: Path
    videos: list[Path] = field(default_factory=list)
    previews: list[Path] = field(default_factory=list)
    judged: list[dict] = field(default_factory=list)
    continued: list[dict] = field(default_factory=list)  # image-to-video from held-out clips' first frames
    train_seconds: float = 0.0
    sample_seconds: float = 0.0

    @property
    def colour_accuracy(self) -> float:
        """Share of samples whose object has the prompt's colour."""
        return sum(j["colour_ok"] for j in self.judged) / max(len(self.judged), 1)

    @property
    def direction_accuracy(self) -> float:
        """Share of samples whose object moves in the prompt's direction."""
        return sum(j["direction_ok"] for j in self.judged) / max(len(self.judged), 1)

    def continued_accuracy(self) -> tuple[float, float]:
        """(colour, direction) accuracy of the videos continued from held-out clips' first frames."""
        n = max(len(self.continued), 1)
        return (sum(j["colour_ok"] for j in self.continued) / n, sum(j["direction_ok"] for j in self.continued) / n)


STAGES = ("world", "collated", "text-encoder", "dataset", "run", "samples")
# What the stages are built from; sampling-only settings may change between reruns.
_NOT_RECORDED = ("out", "quick", "num_workers", "samples_per_prompt", "sample_steps", "cfg_scale")


# The first stage each recorded setting shapes; the others are settings of training (the run) or sampling.
_FIRST_STAGE = {"seed": "world", "world": "world", "height": "samples", "width": "samples", "frames": "samples"}


def _reuse_or_rebuild(out: Path, cfg: DemoConfig) -> None:
    """Keep `out`'s stages built with `cfg`'s settings; rebuild from the first one a changed setting shapes."""
    import json
    import warnings
    from dataclasses import asdict

    from opensora.errors import OpenSoraWarning
    from opensora.fsutil import write_json_atomic

    settings = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in _NOT_RECORDED}))
    record = out / "demo.json"
    built = [st for st in STAGES if (out / st).exists()]
    if record.exists():
        old = json.loads(record.read_text())
        changed = [k for k, v in settings.items() if old.get(k) != v]
        diffs = [f"{k} {old.get(k)} -> {settings[k]}" for k in changed]
        first = min((STAGES.index(_FIRST_STAGE.get(k, "run")) for k in changed), default=len(STAGES))
    else:
        diffs, first = (["no record of the settings they were built with"], 0) if built else ([], len(STAGES))
    stale = [st for st in built if STAGES.index(st) >= first]
    if diffs and stale:
        warnings.warn(f"{out} holds a demo built with other settings ({'; '.join(diffs)}); rebuilding "
                      f"{', '.join(stale)} (pass another --out to keep both)", OpenSoraWarning, stacklevel=3)
        for st in stale:
            shutil.rmtree(out / st)
    write_json_atomic(record, settings)


def run_demo(cfg: DemoConfig, progress: ProgressFn = no_progress) -> DemoResult:
    """Run every stage into cfg.out (rerunning continues: finished stages are reused)."""
    cfg.validate()
    import time

    from opensora.data.collate import collate_msrvtt
    from opensora.data.encode import EncodeConfig, encode_dataset
    from opensora.data.video import read_video
    from opensora.parallel.distributed import shutdown
    from opensora.sampling.sample import SampleConfig, sample_videos, slug
    from opensora.text.clip import build_tiny_clip_text_encoder
    from opensora.training.config import TrainConfig
    from opensora.training.trainer import train

    out = Path(cfg.out)
    _reuse_or_rebuild(out, cfg)
    world = generate_world(out / "world", cfg.world, progress)
    collated = out / "collated"
    collate_msrvtt(world.root, collated, progress)
    text_dir = out / "text-encoder"
    if not (text_dir / "config.json").exists():
        progress(ProgressEvent("text", 0, 1, unit="models"))
        build_tiny_clip_text_encoder(text_dir, hidden=64, layers=1, heads=2, max_length=16, seed=cfg.seed)
        progress(ProgressEvent("text", 1, 1, unit="models"))
    dataset = out / "dataset"
    enc = EncodeConfig(captions=collated / "train" / "annotations.json", videos=collated / "train" / "videos",
                       out=dataset, compression="raw", text_encoder=str(text_dir), num_workers=cfg.num_workers)
    from opensora.data.dataset import FORMAT_VERSION, is_complete

    manifest = dataset / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("version", 1) != FORMAT_VERSION:
        shutil.rmtree(dataset)  # the demo's own dataset of an older format: rebuilt, not an error
    if not is_complete(dataset):  # a crashed encode is continued, a finished one reused
        encode_dataset(enc, progress)
    run_dir = out / "run"
    tcfg = TrainConfig(data=str(dataset), run_dir=str(run_dir), model=cfg.model, condition=cfg.condition,
                       objective=cfg.objective, lr_schedule=cfg.lr_schedule,
                       prediction_type=cfg.prediction if cfg.objective == "ddpm" else "epsilon",
                       batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=min(100, cfg.steps // 10),
                       steps=cfg.steps, ckpt_every=max(cfg.steps // 3, 1), keep=1, ema_decay=cfg.ema_decay,
                       seed=cfg.seed, num_workers=cfg.num_workers, temporal_patch=cfg.temporal_patch,
                       frame_condition=cfg.frame_condition,
                       resume="auto", device="cpu", precision="fp32")
    t0 = time.perf_counter()
    try:
        summary = train(tcfg, progress)
    finally:
        shutdown()
    # a rerun whose training had already finished writes no new checkpoint: use the run's newest
    from opensora.checkpoint import checkpoints_of

    ckpt = summary.last_checkpoint or checkpoints_of(run_dir)[-1]
    result = DemoResult(out, run_dir, ckpt, train_seconds=time.perf_counter() - t0)
    prompts = [caption(*combo) for combo in HELD_OUT]
    samples = out / "samples"
    t0 = time.perf_counter()
    for prompt, combo in zip(prompts, HELD_OUT):
        scfg = SampleConfig(prompts=[prompt], ckpt=str(result.checkpoint), height=cfg.height, width=cfg.width,
                            fps=cfg.world.fps, frames=cfg.frames, steps=cfg.sample_steps, cfg_scale=cfg.cfg_scale,
                            seed=cfg.seed, num_samples=cfg.samples_per_prompt, device="cpu",
                            out=str(samples / f"{slug(prompt)}.mp4"), preview=True, overwrite=True)
        for r in sample_videos(scfg, progress):
            result.videos.append(r.video)
            result.previews.append(r.preview)
            colour, direction = judge_video(read_video(r.video)[0])
            result.judged.append({"prompt": prompt, "video": str(r.video), "colour": colour, "direction": direction,
                                  "colour_ok": colour == combo[0], "direction_ok": direction == combo[2]})
    if cfg.frame_condition > 0:
        result.continued = _continue_held_out_clips(cfg, result.checkpoint, collated / "test", out / "continued",
                                                    progress)
    result.sample_seconds = time.perf_counter() - t0
    return result


def _continue_held_out_clips(cfg: DemoConfig, ckpt: Path, split: Path, out: Path, progress: ProgressFn) -> list[dict]:
    """Image-to-video on the held-out combinations: each test clip's first frame and caption; judged."""
    from PIL import Image

    from opensora.data.video import read_video
    from opensora.data.world import parse_caption
    from opensora.sampling.sample import SampleConfig, sample_videos

    out.mkdir(parents=True, exist_ok=True)
    judged = []
    for entry in json.loads((split / "annotations.json").read_text()):
        prompt = entry["captions"][0]
        combo = parse_caption(prompt)
        if combo is None:
            continue
        first = out / f"{Path(entry['file']).stem}-first.png"
        Image.fromarray(read_video(split / "videos" / entry["file"])[0][0]).save(first)
        scfg = SampleConfig(prompts=[prompt], ckpt=str(ckpt), height=cfg.height, width=cfg.width, fps=cfg.world.fps,
                            frames=cfg.frames, steps=cfg.sample_steps, cfg_scale=cfg.cfg_scale, seed=cfg.seed,
                            device="cpu", image=str(first), out=str(out / f"{Path(entry['file']).stem}.mp4"),
                            overwrite=True)
        for r in sample_videos(scfg, progress):
            colour, direction = judge_video(read_video(r.video)[0])
            judged.append({"prompt": prompt, "image": str(first), "video": str(r.video), "colour": colour,
                           "direction": direction, "colour_ok": colour == combo[0], "direction_ok": direction == combo[2]})
    return judged
