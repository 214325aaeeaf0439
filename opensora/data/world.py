"""A procedural video world for offline demos and tests: coloured shapes moving in four directions.

Written in MSR-VTT's raw layout (videos + an annotation JSON with `videos` and `sentences`), so it
flows through the same collate -> encode -> train -> sample pipeline as the real dataset. Some
colour x shape x direction combinations are held out of training (split "test") to show that the
model composes what it learned instead of memorising clips.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from opensora.data.video import write_video
from opensora.fsutil import write_json_atomic
from opensora.progress import ProgressEvent, ProgressFn, no_progress

COLOURS = {"red": (225, 40, 40), "green": (40, 200, 70), "blue": (50, 90, 235), "yellow": (235, 215, 40)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (40, 40, 40)
PHRASES = (
    "a {c} {s} moving {d}",
    "a {c} {s} moves {d}",
    "the {c} {s} is moving {d}",
    "{c} {s} going {d}",
)
# Held out of training: every colour, shape and direction still appears in other combinations.
HELD_OUT = (("red", "triangle", "up"), ("green", "circle", "left"), ("blue", "square", "down"),
            ("yellow", "triangle", "right"), ("red", "square", "right"), ("green", "triangle", "down"),
            ("blue", "circle", "up"), ("yellow", "square", "left"))


@dataclass
class WorldConfig:
    """How much world to make."""

    videos_per_combo: int = 6
    sizes: tuple[tuple[int, int], ...] = ((32, 32), (32, 48), (48, 32))  # (height, width)
    lengths: tuple[int, ...] = (8, 12)  # frames
    fps: int = 8
    seed: int = 0
    held_out: tuple[tuple[str, str, str], ...] = HELD_OUT
    test_videos_per_combo: int = 2


@dataclass
class WorldResult:
    """Where the world went and what it holds."""

    root: Path
    videos: int
    captions: int
    held_out: list[str] = field(default_factory=list)


def caption(colour: str, shape: str, direction: str, phrase: int = 0) -> str:
    """A caption of one of the world's phrasings."""
    return PHRASES[phrase % len(PHRASES)].format(c=colour, s=shape, d=direction)


def parse_caption(text: str) -> tuple[str, str, str] | None:
    """(colour, shape, direction) of a caption in one of the world's phrasings, else None."""
    import re

    for phrase in PHRASES:
        pattern = re.escape(phrase).replace(r"\{c\}", "(?P<c>[a-z]+)").replace(r"\{s\}", "(?P<s>[a-z]+)")
        m = re.fullmatch(pattern.replace(r"\{d\}", "(?P<d>[a-z]+)"), text.strip().lower())
        if m and m["c"] in COLOURS and m["s"] in SHAPES and m["d"] in DIRECTIONS:
            return m["c"], m["s"], m["d"]
    return None


def _mask(shape: str, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if shape == "square":
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    # an upward triangle: apex at the top, base at the bottom
    top, bottom = cy - r, cy + r
    half = (yy - top) / (2 * r) * r
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)


def render_clip(colour: str, shape: str, direction: str, h: int, w: int, t: int, rng: np.random.Generator,
                crossing_frames: int | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one shape crossing a plain background.

    The object covers most of the frame in `crossing_frames` frames (default `t`); a world with
    clips of several lengths passes its longest, so speed and start do not depend on a clip's
    length and frame k means the same place in every clip.
    """
    crossing = max(crossing_frames or t, t)
    r = min(h, w) / 5
    dx, dy = DIRECTIONS[direction]
    # The object crosses most of the frame from the side opposite its direction, near the middle of
    # the other axis (a little jitter in position and speed), so a clip's motion is unmistakable.
    lo_x, hi_x, lo_y, hi_y = r + 0.5, w - r - 0.5, r + 0.5, h - r - 0.5
    frac = rng.uniform(0.75, 0.95)
    def path(lo, hi, d):  # start and per-frame step along one axis
        if d == 0:
            mid = (lo + hi) / 2
            return mid + rng.uniform(-0.15, 0.15) * (hi - lo), 0.0
        travel = (hi - lo) * frac
        start = lo + rng.uniform(0, (hi - lo) - travel)
        start = start if d > 0 else hi - (start - lo)
        return start, d * travel / max(crossing - 1, 1)
    cx0, sx = path(lo_x, hi_x, dx)
    cy0, sy = path(lo_y, hi_y, dy)
    frames = np.empty((t, h, w, 3), np.uint8)
    frames[:] = BACKGROUND
    for i in range(t):
        m = _mask(shape, h, w, cy0 + sy * i, cx0 + sx * i, r)
        frames[i][m] = COLOURS[colour]
    return frames


def generate_world(dest: Path, cfg: WorldConfig = WorldConfig(), progress: ProgressFn = no_progress) -> WorldResult:
    """Write DEST/ShapesWorld/{videos/all/*.mp4, annotation/shapes_world.json}; reproducible under cfg.seed."""
    root = Path(dest) / "ShapesWorld"
    vids = root / "videos" / "all"
    vids.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    held = set(cfg.held_out)
    jobs = []
    for combo in itertools.product(COLOURS, SHAPES, DIRECTIONS):
        n = cfg.test_videos_per_combo if combo in held else cfg.videos_per_combo
        jobs += [(combo, "test" if combo in held else ("val" if k == n - 1 and n > 2 else "train")) for k in range(n)]
    videos, sentences = [], []
    for i, ((c, s, d), split) in enumerate(jobs):
        h, w = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
        t = cfg.lengths[int(rng.integers(len(cfg.lengths)))]
        path = vids / f"video{i}.mp4"
        if not path.exists():  # rerunning continues a partial world: same rng draws, same files
            write_video(path, render_clip(c, s, d, h, w, t, rng, max(cfg.lengths)), cfg.fps, crf=10)
        else:
            render_clip(c, s, d, h, w, t, rng, max(cfg.lengths))
        videos.append({"id": i, "video_id": f"video{i}", "category": 0, "url": "", "start time": 0.0,
                       "end time": t / cfg.fps, "split": split, "colour": c, "shape": s, "direction": d})
        for k in range(len(PHRASES)):
            sentences.append({"caption": caption(c, s, d, k), "video_id": f"video{i}", "sen_id": len(sentences)})
        progress(ProgressEvent("world", i + 1, len(jobs), unit="videos"))
    ann = {"info": {"description": "opensora shapes world", "seed": cfg.seed}, "videos": videos, "sentences": sentences}
    write_json_atomic(root / "annotation" / "shapes_world.json", ann)
    return WorldResult(root, len(videos), len(sentences), [caption(*c) for c in cfg.held_out])


def judge_video(frames: np.ndarray) -> tuple[str, str | None]:
    """(colour, direction) of the object in generated frames: nearest palette colour, centroid motion."""
    f = frames.astype(np.float32)
    bg = np.array(BACKGROUND, np.float32)
    diff = np.abs(f - bg).sum(-1)  # (T, H, W)
    fg = diff > 120
    if fg.sum() == 0:
        return "none", None
    mean = f[fg].mean(0)
    colour = min(COLOURS, key=lambda k: float(((np.array(COLOURS[k]) - mean) ** 2).sum()))
    cents = []
    for m in fg:
        if m.sum() > 0:
            ys, xs = np.nonzero(m)
            cents.append((xs.mean(), ys.mean()))
    if len(cents) < 2:
        return colour, None
    k = max(1, len(cents) // 3)
    start, end = np.mean(cents[:k], 0), np.mean(cents[-k:], 0)
    dx, dy = end - start
    if max(abs(dx), abs(dy)) < 1.0:
        return colour, None
    direction = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
    return colour, direction

