"""Text to video: load a checkpoint, denoise, decode through the training compression, write mp4s."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from opensora.checkpoint import load_model
from opensora.compression import compressor_from_spec
from opensora.data.video import write_video
from opensora.devices import PRECISION_NAMES, resolve_device, resolve_dtype
from opensora.diffusion import DiffusionConfig, make_objective
from opensora.diffusion.sampling import sample_latents, sampling_scheduler
from opensora.errors import UserError
from opensora.fsutil import check_writable, write_json_atomic
from opensora.progress import ProgressEvent, ProgressFn, no_progress
from opensora.sampling.config import SampleConfig


@dataclass
class SampleResult:
    """One generated video and the files written for it."""

    prompt: str
    seed: int
    video: Path
    sidecar: Path
    preview: Path | None = None
    shape: tuple[int, ...] = field(default_factory=tuple)


PREVIEW_MIN_SIDE = 128  # preview frames are enlarged (nearest neighbour) to at least this many pixels


def output_paths(out: str, n: int) -> list[Path]:
    """`out` itself for one video; out-000.mp4, out-001.mp4, ... for several."""
    p = Path(out)
    if p.suffix.lower() != ".mp4":
        p = p.with_suffix(".mp4")
    if n == 1:
        return [p]
    return [p.with_name(f"{p.stem}-{i:03d}{p.suffix}") for i in range(n)]


def contact_sheet(frames: np.ndarray, max_frames: int = 8, cols: int = 4) -> np.ndarray:
    """A grid of up to `max_frames` evenly spaced frames (H', W', 3) uint8."""
    t = frames.shape[0]
    idx = np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)
    picks = frames[idx]
    cols = min(cols, len(picks))
    rows = math.ceil(len(picks) / cols)
    h, w = picks.shape[1:3]
    sheet = np.full((rows * h + (rows - 1) * 2, cols * w + (cols - 1) * 2, 3), 255, np.uint8)
    for k, f in enumerate(picks):
        r, c = divmod(k, cols)
        sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = f
    return sheet


def preview_sheet(frames: np.ndarray) -> np.ndarray:
    """The contact sheet of (T, H, W, 3) frames, enlarged (nearest neighbour) so frames are PREVIEW_MIN_SIDE or more."""
    zoom = max(1, math.ceil(PREVIEW_MIN_SIDE / min(frames.shape[1:3])))  # 16x16 frames: big enough to see
    return contact_sheet(frames).repeat(zoom, axis=0).repeat(zoom, axis=1)


def slug(text: str, limit: int | None = None) -> str:
    """A file-name-safe form of a prompt (lower case, dashes), cut to `limit` characters."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit]


def check_size(cfg: SampleConfig, compressor, patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """The latent (T', H', W') for the requested video; a UserError suggesting valid sizes otherwise."""
    from opensora.compression.base import check_multiples

    stride = tuple(s * p for s, p in zip(compressor.stride, patch))  # compression stride x model patch
    frames = cfg.num_frames()
    what = f"{compressor.name} compression with patch {patch}"
    if compressor.causal:  # 1 + st*k frames, k + 1 a multiple of the temporal patch
        st, pt = compressor.stride[0], patch[0]
        if (frames - 1) % st or ((frames - 1) // st + 1) % pt:
            m = max(1, round(((frames - 1) / st + 1) / pt))
            near = sorted({compressor.frames_for(pt * max(1, m - 1)), compressor.frames_for(pt * m),
                           compressor.frames_for(pt * (m + 1))}, key=lambda n: (abs(n - frames), n))[:2]
            given = f"--frames {frames}" if cfg.frames is not None else f"--sec {cfg.sec:g} x --fps {cfg.fps:g} = {frames} frames"
            raise UserError(f"{given}: the {compressor.name} compression takes 1 + {st}k frames (its first frame alone)"
                            f"{f' with 1 + k a multiple of {pt}' if pt > 1 else ''}; pass --frames "
                            f"{' or --frames '.join(map(str, sorted(near)))}")
        check_multiples((cfg.height, cfg.width), stride[1:], ("--height", "--width"), what)
        return compressor.latent_thw(frames, cfg.height, cfg.width)
    if cfg.frames is None and frames % stride[0]:
        lo, hi = max(stride[0], frames // stride[0] * stride[0]), (frames // stride[0] + 1) * stride[0]
        raise UserError(f"--sec {cfg.sec:g} x --fps {cfg.fps:g} gives {frames} frames, not a multiple of {stride[0]} "
                        f"for {what}; pass --frames {lo} or --frames {hi}")
    check_multiples((frames, cfg.height, cfg.width), stride, ("--frames", "--height", "--width"), what)
    return compressor.latent_thw(frames, cfg.height, cfg.width)


@dataclass
class SamplePlan:
    """What a sampling run will do, known before its first step."""

    frames: int
    height: int
    width: int
    latent: tuple[int, int, int]
    tokens: int
    videos: int
    steps: int
    forwards_per_step: int
    device: str
    seconds: float | None  # estimated from the model's FLOPs and this device's measured matmul rate


def sample_videos(cfg: SampleConfig, progress: ProgressFn = no_progress,
                  on_start=None) -> list[SampleResult]:
    """Generate `num_samples` videos per prompt; write mp4 + JSON sidecar (+ PNG preview).

    `on_start(SamplePlan)` is called once the sizes are known, before the first denoising step.
    """
    try:
        return _sample_videos(cfg, progress, on_start)
    finally:
        if cfg.sp != "none":
            from opensora.parallel.distributed import shutdown

            shutdown()  # NCCL warns at exit about a process group left alive


def _estimate(model, tokens: int, frames: int, forwards: int, device, dtype) -> float | None:
    from opensora.models.presets import MODELS
    from opensora.training.plan import ModelCost, matmul_flops_per_s

    c = model.config
    family = MODELS.lookup(c.model_name).family
    cost = ModelCost(c.model_name, 0, c.hidden_size, c.depth, c.num_heads, tuple(c.patch_size), c.condition, c.text_len,
                     family)
    try:
        rate = matmul_flops_per_s(str(device), PRECISION_NAMES[dtype])
    except (RuntimeError, TypeError):
        return None
    return forwards * cost.flops_per_sample(tokens, train=False, frames=frames) / (0.5 * rate)


def _sample_videos(cfg: SampleConfig, progress: ProgressFn, on_start) -> list[SampleResult]:
    from opensora.text import load_text_encoder

    if not cfg.prompts:
        raise UserError("no prompt given; pass one or more prompts or --prompts FILE")
    cfg.validate()
    existing = [p for p in output_paths(cfg.out, len(cfg.prompts) * cfg.num_samples) if p.exists()]
    if existing and not cfg.overwrite:
        raise UserError(f"-o {cfg.out}: {existing[0]}{f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''} "
                        "exists; pass --overwrite to replace it or choose another -o")
    check_writable(Path(cfg.out).parent, "-o", cfg.num_frames() * cfg.height * cfg.width * 3 // 10 * len(cfg.prompts)
                   * cfg.num_samples)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.precision, device)
    model, meta = load_model(Path(cfg.ckpt), ema=cfg.ema, device=device, dtype=dtype)
    writer = True
    if cfg.sp != "none":
        # Every rank of the SP group runs the same loop with the same noise; the sequence is split
        # inside the model and gathered before unpatchify, so rank 0 holds the whole video.
        from opensora.parallel.parallelize import init_parallel, parallelize

        env, dims = init_parallel(str(device), cfg.sp, cfg.sp_size)
        if dims.dp_size != 1:
            raise UserError(f"sampling splits one sequence over every rank: --sp-size must equal the {env.world_size} "
                            "processes")
        model, _, _ = parallelize(model, dims)
        device, writer = env.device, env.rank == 0
    diffusion = DiffusionConfig.from_dict(meta["diffusion"])
    objective = make_objective(diffusion)  # the checkpoint's: its default steps and sampler fill what is not given
    cfg.steps, cfg.sampler = cfg.steps or objective.default_steps, cfg.sampler or objective.default_sampler
    sampling_scheduler(cfg.sampler, diffusion)  # another objective's sampler is refused before the text encoder loads
    if cfg.model and cfg.model != meta.get("model_name"):
        raise UserError(f"--model {cfg.model} does not match the checkpoint's {meta.get('model_name')}; "
                        "drop --model or pass the right --ckpt")
    compressor = compressor_from_spec(meta["compression"], device=str(device))
    latent = check_size(cfg, compressor, tuple(model.config.patch_size))
    given = None
    if cfg.image is not None or cfg.extend is not None:
        from opensora.sampling.given import given_latents

        if not diffusion.frame_condition:
            raise UserError(f"{'--image' if cfg.image else '--extend'}: {cfg.ckpt} was not trained with frames given; "
                            "train an STDiT with --frame-condition (e.g. 0.5) for image-to-video and extension")
        given = given_latents(cfg.image, cfg.extend, compressor, tuple(model.config.patch_size), latent, cfg.height,
                              cfg.width).to(device)
    text_encoder = load_text_encoder(meta["text_encoder"]["path"], device=device,
                                     max_length=meta["text_encoder"].get("max_length"))
    feats, lengths = text_encoder.encode(cfg.prompts)
    # (prompt index, seed): sample i of prompt k uses seed + k * n + i
    jobs = [(k, cfg.seed + k * cfg.num_samples + i) for k in range(len(cfg.prompts)) for i in range(cfg.num_samples)]
    paths = output_paths(cfg.out, len(jobs))
    shape = (1, compressor.latent_channels, *latent)
    patch = tuple(model.config.patch_size)
    tokens = math.prod(x // p for x, p in zip(latent, patch))
    guided = 1 if cfg.disable_cfg or cfg.cfg_scale == 1 else 2
    if on_start is not None and writer:
        seconds = _estimate(model, tokens, latent[0] // patch[0], guided * cfg.steps * len(jobs), device, dtype)
        on_start(SamplePlan(cfg.num_frames(), cfg.height, cfg.width, tuple(latent), tokens, len(jobs), cfg.steps,
                            guided, str(device), seconds))
    progress(ProgressEvent("denoise", 0, len(jobs) * cfg.steps, unit="steps"))
    results = []
    for n, ((k, seed), path) in enumerate(zip(jobs, paths)):
        prompt = cfg.prompts[k]
        text = torch.from_numpy(feats[k : k + 1])
        mask = torch.arange(text.shape[1])[None] < int(lengths[k])

        def step_progress(ev: ProgressEvent, n=n) -> None:
            progress(ProgressEvent("denoise", n * cfg.steps + ev.completed, len(jobs) * cfg.steps, unit="steps"))

        x0 = sample_latents(model, shape, text, mask, diffusion, steps=cfg.steps, sampler=cfg.sampler,
                            cfg_scale=cfg.cfg_scale, disable_cfg=cfg.disable_cfg,
                            generator=torch.Generator().manual_seed(seed), progress=step_progress, given=given,
                            frame_group=model.config.patch_size[0])
        if not writer:
            continue
        frames = compressor.decode_diffusion(x0)[0].cpu().numpy()  # (T, H, W, 3) uint8
        write_video(path, frames, cfg.fps)
        preview = None
        path.with_suffix(".png").unlink(missing_ok=True)  # never leave an earlier prompt's sheet beside this video
        if cfg.preview:
            from PIL import Image

            preview = path.with_suffix(".png")
            Image.fromarray(preview_sheet(frames)).save(preview)
        sidecar = path.with_suffix(".json")
        write_json_atomic(sidecar, {
            "prompt": prompt, "seed": seed, "steps": cfg.steps, "sampler": cfg.sampler,
            "cfg_scale": None if cfg.disable_cfg else cfg.cfg_scale, "checkpoint": str(Path(cfg.ckpt).resolve()),
            "weights": meta["weights"], "step": meta.get("step"), "model": meta.get("model_name"),
            "height": cfg.height, "width": cfg.width, "frames": int(frames.shape[0]), "fps": cfg.fps,
            "precision": PRECISION_NAMES[dtype], "device": str(device), "video": path.name,
            # --frames wins over --sec: record the one that made the video
            "command": {k: v for k, v in asdict(cfg).items()
                        if k not in ("prompts", "out", "overwrite") and not (k == "sec" and cfg.frames is not None)},
        })
        results.append(SampleResult(prompt, seed, path, sidecar, preview, tuple(frames.shape)))
    return results
