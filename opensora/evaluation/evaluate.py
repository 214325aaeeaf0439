"""`opensora eval`: sample a split's captions from a checkpoint at fixed seeds and score the videos.

The split's first N videos are taken in order, each with its first caption; video k is sampled
with seed + k at its reference's size, from the EMA weights. The reference videos are:
  * an encoded dataset's latents decoded by the checkpoint's compression (exact pixels for raw);
  * a collated split's videos decoded as the checkpoint's training data was (its recorded fps,
    clip limit and size), cropped to a size the model generates.
Metrics: CLIP score (`clipscore.py`), FVD (`fvd.py`) and, when every caption is one of the built-in
world's, the demo judge's colour and direction accuracy. Each comes with its protocol in words.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from opensora.checkpoint import load_model
from opensora.compression import compressor_from_spec
from opensora.devices import resolve_device, resolve_dtype
from opensora.diffusion import DiffusionConfig, make_objective
from opensora.diffusion.sampling import sample_latents, sampling_scheduler
from opensora.errors import UserError
from opensora.evaluation.config import EvalConfig
from opensora.progress import ProgressEvent, ProgressFn, no_progress

COLOUR_RULE = "the demo's judge: the palette colour nearest the object's mean colour is the prompt's"
DIRECTION_RULE = "the demo's judge: the object's centroid moves the prompt's way from the first to the last third"


@dataclass
class Reference:
    """One evaluation item: a caption, its text features, and the reference video it is compared with."""

    caption: str
    text: np.ndarray  # (S, D)
    length: int
    frames: np.ndarray  # (T, H, W, 3) uint8, a size the model generates
    latent_thw: tuple[int, int, int]


@dataclass
class EvalResult:
    """One checkpoint's figures, with the settings and protocol that produced them."""

    checkpoint: str
    step: int | None
    data: str
    samples: int
    seed: int
    steps: int
    sampler: str
    cfg_scale: float
    metrics: dict[str, float] = field(default_factory=dict)
    protocol: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # reference videos that could not be read
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Plain dict (for the results JSON)."""
        return asdict(self)


def default_out(ckpt: Path, data: Path) -> Path:
    """CKPT/eval-SPLIT.json, SPLIT naming the data directory (and its parent for a collated split)."""
    data = Path(data).resolve()
    name = data.name if (data / "manifest.json").exists() else f"{data.parent.name}-{data.name}"
    return Path(ckpt) / f"eval-{name}.json"


def _fit_frames(frames: np.ndarray, compressor, patch: tuple[int, int, int]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Crop (T, H, W, 3) to the largest size the model generates (start kept in time, centre in space)."""
    st, sh, sw = compressor.stride
    pt, ph, pw = patch
    t, h, w = frames.shape[:3]
    if compressor.causal:  # 1 + st*k frames, the k + 1 latent frames a multiple of the patch
        k = ((t - 1) // st + 1) // pt * pt
        nt = compressor.frames_for(k) if k else 0
    else:
        nt = t - t % (st * pt)
    nh, nw = h - h % (sh * ph), w - w % (sw * pw)
    if min(nt, nh, nw) <= 0:
        raise ValueError(f"{t}x{h}x{w} is smaller than one latent patch")
    top, left = (h - nh) // 2, (w - nw) // 2
    out = np.ascontiguousarray(frames[:nt, top : top + nh, left : left + nw])
    return out, compressor.latent_thw(nt, nh, nw)


def _encoded_references(path: Path, meta: dict, compressor, patch, n: int) -> list[Reference]:
    from opensora.data.dataset import EncodedDataset
    from opensora.training.config import data_identity
    from opensora.training.data import crop_to_patch

    data = EncodedDataset(path)
    ours, theirs = meta.get("data") or {}, data_identity(data.manifest)
    if ours and theirs["compression"] != ours.get("compression"):
        raise UserError(f"--data {path}: encoded with {theirs['compression']['name']} compression, the checkpoint with "
                        f"{ours['compression']['name']}; encode the split with the checkpoint's compression")
    from opensora.training.validation import same_path

    text = meta["text_encoder"]
    dims = (data.text_length, data.manifest["text_encoder"]["dim"])
    if not same_path(theirs["text_encoder"], text["path"]) or dims != (text.get("max_length"), text.get("dim")):
        raise UserError(f"--data {path}: text features of {theirs['text_encoder']} ({dims[0]}x{dims[1]}), the checkpoint "
                        f"was trained on {text['path']}; encode the split with the checkpoint's --text-encoder")
    refs, seen = [], set()
    for i in range(len(data)):
        if len(refs) == n:
            break
        if data.video_keys[i] in seen:
            continue
        seen.add(data.video_keys[i])
        row = data[i]
        latent = torch.from_numpy(np.array(row["video"]))[None]
        x0 = crop_to_patch(compressor.to_diffusion(latent), patch)
        frames = compressor.decode_diffusion(x0)[0].cpu().numpy()
        refs.append(Reference(row["caption"], np.asarray(row["text"]), int(row["text_length"]), frames,
                              tuple(x0.shape[-3:])))
    return refs


def _collated_references(split: Path, meta: dict, compressor, patch, n: int, device,
                         skipped: list[str]) -> list[Reference]:
    from opensora.data.captions import load_captions
    from opensora.data.dataset import read_manifest
    from opensora.data.encode import resolve_video
    from opensora.data.video import DecodeSettings, VideoError, read_video
    from opensora.text import load_text_encoder

    train_data = (meta.get("train_config") or {}).get("data")
    try:
        settings = read_manifest(Path(train_data))["settings"]
    except (UserError, TypeError, KeyError):
        raise UserError(f"--data {split}: a collated split is decoded as the checkpoint's training data was, and that "
                        f"dataset ({train_data}) cannot be read here; encode the split with the training settings "
                        "(`opensora data encode`) and pass the encoded dataset") from None
    decode = DecodeSettings(fps=settings.get("fps"), max_frames=settings.get("max_frames"),
                            max_seconds=settings.get("max_seconds"), too_long=settings.get("too_long", "skip"),
                            size=tuple(settings["size"]) if settings.get("size") else None,
                            max_pixels=settings.get("max_pixels"))
    entries = load_captions(split / "annotations.json")
    picked = []
    for e in entries:
        if len(picked) == n:
            break
        try:
            path = resolve_video(split / "videos", e.file)
            frames, _ = read_video(path, decode)
            frames, thw = _fit_frames(frames, compressor, patch)
        except (VideoError, ValueError) as err:
            skipped.append(f"{e.file}: {err}")
            continue
        picked.append((e.captions[0], frames, thw))
    text = meta["text_encoder"]
    encoder = load_text_encoder(text["path"], device=device, max_length=text.get("max_length"))
    feats, lengths = encoder.encode([c for c, _, _ in picked])
    return [Reference(c, feats[k], int(lengths[k]), f, thw) for k, (c, f, thw) in enumerate(picked)]


def load_references(cfg: EvalConfig, meta: dict, compressor, patch, device, skipped: list[str]) -> list[Reference]:
    """The split's first `cfg.samples` videos with their first captions (see the module's docstring)."""
    from opensora.data.dataset import is_dataset

    path = Path(cfg.data)
    if is_dataset(path):
        refs = _encoded_references(path, meta, compressor, patch, cfg.samples)
    elif (path / "annotations.json").is_file():
        refs = _collated_references(path, meta, compressor, patch, cfg.samples, device, skipped)
    else:
        raise UserError(f"--data {path}: neither an encoded dataset nor a collated split (annotations.json + videos/); "
                        "pass `opensora data collate`'s OUT/val or an encoded dataset")
    if len(refs) < 2:
        raise UserError(f"--data {path}: {len(refs)} usable video{'s' if len(refs) != 1 else ''}; evaluation needs at "
                        "least 2 (FVD compares distributions)")
    return refs


def _world_accuracy(videos: list[np.ndarray], refs: list[Reference]) -> dict[str, float] | None:
    from opensora.data.world import judge_video, parse_caption

    combos = [parse_caption(r.caption) for r in refs]
    if any(c is None for c in combos):
        return None
    judged = [judge_video(v) for v in videos]
    return {"colour_accuracy": sum(j[0] == c[0] for j, c in zip(judged, combos)) / len(combos),
            "direction_accuracy": sum(j[1] == c[2] for j, c in zip(judged, combos)) / len(combos)}


def evaluate(cfg: EvalConfig, ckpt: Path, progress: ProgressFn = no_progress) -> EvalResult:
    """Sample the split's captions from `ckpt` and score the videos; writes mp4s only with cfg.save_videos."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.precision, device)
    model, meta = load_model(Path(ckpt), ema=True, device=device, dtype=dtype)
    diffusion = DiffusionConfig.from_dict(meta["diffusion"])
    objective = make_objective(diffusion)
    steps, sampler = cfg.steps or objective.default_steps, cfg.sampler or objective.default_sampler
    sampling_scheduler(sampler, diffusion)  # another objective's sampler is refused before any work
    # the feature extractors load first: a wrong --clip or --i3d fails before minutes of sampling
    scorer = detector = None
    if cfg.clip is not None:
        from opensora.evaluation.clipscore import CLIPScorer

        scorer = CLIPScorer(cfg.clip, device)
    if cfg.i3d is not None:
        from opensora.evaluation.fvd import load_i3d

        detector = load_i3d(cfg.i3d, device)
    compressor = compressor_from_spec(meta["compression"], device=str(device))
    patch = tuple(model.config.patch_size)
    result = EvalResult(str(Path(ckpt)), meta.get("step"), str(cfg.data), 0, cfg.seed, steps, sampler, cfg.cfg_scale)
    refs = load_references(cfg, meta, compressor, patch, device, result.skipped)
    from opensora.data.dataset import is_dataset

    encoded = is_dataset(Path(cfg.data))  # else a collated split (load_references refused anything else)
    result.samples = len(refs)
    out_dir = Path(cfg.out).parent if cfg.out else Path(ckpt)
    videos = []
    progress(ProgressEvent("eval", 0, len(refs), unit="videos"))
    for k, ref in enumerate(refs):
        text = torch.from_numpy(ref.text[None].astype(np.float32))
        mask = torch.arange(text.shape[1])[None] < ref.length
        shape = (1, compressor.latent_channels, *ref.latent_thw)
        x0 = sample_latents(model, shape, text, mask, diffusion, steps=steps, sampler=sampler, cfg_scale=cfg.cfg_scale,
                            generator=torch.Generator().manual_seed(cfg.seed + k))
        videos.append(compressor.decode_diffusion(x0)[0].cpu().numpy())
        if cfg.save_videos:
            from opensora.data.video import write_video

            write_video(out_dir / f"eval-videos-{meta.get('step', 0):07d}" / f"{k:04d}.mp4", videos[-1], 8.0)
        progress(ProgressEvent("eval", k + 1, len(refs), unit="videos"))
    reference = ("the encoded split's latents decoded by the checkpoint's compression" if encoded
                 else "the collated split's videos, decoded as the training data")
    if scorer is not None:
        from opensora.evaluation.clipscore import RULE

        result.metrics["clip_score"] = float(np.mean([scorer.score(v, r.caption) for v, r in zip(videos, refs)]))
        result.protocol["clip_score"] = f"{cfg.clip}: {RULE}"
    if detector is not None:
        from opensora.evaluation.fvd import fvd, i3d_features, protocol_text

        fake = i3d_features(detector, videos, device)
        real = i3d_features(detector, [r.frames for r in refs], device)
        result.metrics["fvd"] = fvd(real, fake)
        result.protocol["fvd"] = protocol_text(cfg.i3d, len(videos), len(refs), reference)
    if encoded:  # the validation loss of `train --val-data`
        from contextlib import nullcontext

        from opensora.data.dataset import read_manifest
        from opensora.training.validation import Validator

        val = Validator(Path(cfg.data), read_manifest(Path(cfg.data)), cfg.samples, patch, 8, 0, 1)
        result.metrics["val_loss"] = val.loss(model, diffusion, compressor, nullcontext, device, 1)
        result.protocol["val_loss"] = (f"the {diffusion.objective} loss of the EMA weights on the split's first "
                                       f"{val.n} rows, row k at the fixed position (k + 0.5)/{val.n} of the noise "
                                       "schedule with fixed noise, caption given (as train --val-data)")
    world = _world_accuracy(videos, refs)
    if world is not None:
        result.metrics.update(world)
        result.protocol.update(colour_accuracy=COLOUR_RULE, direction_accuracy=DIRECTION_RULE)
    result.protocol["sampling"] = (f"video k: the split's k-th video's first caption, seed {cfg.seed} + k, {sampler} "
                                   f"{steps} steps, guidance {cfg.cfg_scale:g}, EMA weights, at the reference's size")
    result.seconds = time.perf_counter() - t0
    return result


def write_results(results: list[EvalResult], path: Path) -> None:
    """One JSON file with every checkpoint's result (atomically)."""
    from opensora.fsutil import write_json_atomic

    write_json_atomic(Path(path), {"results": [r.to_dict() for r in results]})

