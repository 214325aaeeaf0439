"""Video I/O with PyAV: probe, decode at a target fps, and write H.264 mp4."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from opensora.errors import OpenSoraError


class VideoError(OpenSoraError):
    """A video that cannot be used; `reason` is a short machine-friendly tag."""

    def __init__(self, path: Path, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = Path(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass
class VideoInfo:
    """What a video file holds, as PyAV reports it."""

    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: float
    frames: int | None
    duration: float | None
    pix_fmt: str | None
    has_audio: bool
    bytes: int

    def to_dict(self) -> dict:
        """The fields as a plain dict (for --json)."""
        return asdict(self)


def _open(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise VideoError(path, "missing", "no such file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file", "0 bytes")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(path, "unreadable", str(e)) from None


def _video_stream(container, path: Path):
    # A cover image of an audio file is a "video" stream of one picture: not a video.
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise VideoError(path, "no video stream", "audio only")
    return streams[0]


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe_video(path: Path) -> VideoInfo:
    """Read a video's metadata without decoding it."""
    path = Path(path)
    with _open(path) as c:
        s = _video_stream(c, path)
        ctx = s.codec_context
        return VideoInfo(
            path=str(path),
            container=c.format.name,
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            fps=round(_fps(s), 4),
            frames=s.frames or None,
            duration=_duration(c, s),
            pix_fmt=ctx.pix_fmt,
            has_audio=bool(c.streams.audio),
            bytes=path.stat().st_size,
        )


# Aspect-ratio buckets, height:width (as Open-Sora 1.1's bucket configs, fewer of them): a video is
# resized to the bucket nearest its displayed aspect ratio, so a mixed set lands in a few shapes.
ASPECT_RATIOS = ((1, 2), (9, 16), (2, 3), (3, 4), (1, 1), (4, 3), (3, 2), (16, 9), (2, 1))
# Named resolutions: the pixel area of a 16:9 frame of that height.
RESOLUTIONS = {"144p": 144 * 256, "240p": 240 * 426, "360p": 360 * 640, "480p": 480 * 854,
               "720p": 720 * 1280, "1080p": 1080 * 1920}
SIZE_MULTIPLE = 16  # bucket sides are multiples of this: a stride-8 VAE's latent is then even (patch 2)
MAX_UPSCALE = 2.0  # a video needing more to fill its bucket is skipped as too small (it would be mostly blur)
TOO_LONG = ("skip", "first", "center")


@dataclass(frozen=True)
class DecodeSettings:
    """How frames are taken from a video; part of a stored latent's identity.

    fps: resample to this rate (None: every frame at the video's own average rate).
    max_frames / max_seconds: the clip limit, counted at the output rate; `too_long` says what a
      longer video gets: "skip" it, keep its "first" frames or a "center" window.
    size: resize to exactly (height, width), ignoring the aspect ratio.
    max_pixels: resize keeping the aspect ratio to about this area, snapped to the nearest bucket of
      ASPECT_RATIOS with sides multiples of SIZE_MULTIPLE, centre-cropping what does not fit.
    """

    fps: float | None = None
    max_frames: int | None = None
    max_seconds: float | None = None
    too_long: str = "skip"
    size: tuple[int, int] | None = None
    max_pixels: int | None = None

    def to_dict(self) -> dict:
        """Plain values (for manifests and cache keys)."""
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        return d


def bucket_size(height: int, width: int, max_pixels: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(H, W) of the aspect-ratio bucket nearest height:width, with area about `max_pixels`."""
    ratio = min(ASPECT_RATIOS, key=lambda r: abs(math.log(r[0] / r[1]) - math.log(height / width)))
    h = math.sqrt(max_pixels * ratio[0] / ratio[1])
    w = max_pixels / h
    return max(multiple, round(h / multiple) * multiple), max(multiple, round(w / multiple) * multiple)


class _FrameMaker:
    """Turns decoded frames into upright RGB arrays of the requested size."""

    def __init__(self, settings: DecodeSettings, path: Path):
        self.settings, self.path, self.plan = settings, path, None

    def _plan(self, frame) -> tuple[int, int, int, tuple[int, int] | None]:
        k = round((frame.rotation or 0) / 90) % 4  # counter-clockwise quarter turns (ffmpeg's convention)
        cw, ch = frame.width, frame.height
        dh, dw = (cw, ch) if k % 2 else (ch, cw)  # displayed size
        s = self.settings
        target = None
        if s.size is not None:
            scaled, target = s.size, None
        elif s.max_pixels is not None:
            target = bucket_size(dh, dw, s.max_pixels)
            scale = max(target[0] / dh, target[1] / dw)  # cover the bucket, then centre-crop
            if scale > MAX_UPSCALE:
                raise VideoError(self.path, "too small", f"{dw}x{dh} px would be enlarged {scale:.1f}x to fill "
                                 f"{target[1]}x{target[0]}; choose a smaller --resolution")
            scaled = (max(target[0], round(dh * scale)), max(target[1], round(dw * scale)))
        else:
            scaled = (dh, dw)
        coded = (scaled[1], scaled[0]) if k % 2 else scaled  # (height, width) before rotation
        return k, coded[0], coded[1], target

    def __call__(self, frame) -> np.ndarray:
        if self.plan is None:
            self.plan = self._plan(frame)
        k, h, w, target = self.plan
        if (h, w) == (frame.height, frame.width):
            img = frame.to_ndarray(format="rgb24")
        else:
            interp = "AREA" if h * w < frame.height * frame.width else "BICUBIC"
            img = frame.reformat(width=w, height=h, format="rgb24", interpolation=interp).to_ndarray()
        if k:
            img = np.rot90(img, k)
        if target is not None:
            top, left = (img.shape[0] - target[0]) // 2, (img.shape[1] - target[1]) // 2
            img = img[top : top + target[0], left : left + target[1]]
        return np.ascontiguousarray(img)


def _clip_limit(s: DecodeSettings, fps: float) -> int | None:
    limits = []
    if s.max_frames is not None:
        limits.append(s.max_frames)
    if s.max_seconds is not None:
        limits.append(max(1, math.floor(s.max_seconds * fps + 1e-6)))
    return min(limits) if limits else None


def _too_long(path: Path, s: DecodeSettings, n: int, approx: bool = True) -> VideoError:
    about = "~" if approx else "more than "
    if s.max_frames is not None and n > s.max_frames:
        return VideoError(path, "too long", f"{about}{n} frames > --max-frames {s.max_frames}")
    return VideoError(path, "too long", f"{about}{n} frames at the output rate > --max-seconds {s.max_seconds}")


def _sample_times(decoded, fps: float, end: float | None, src_fps: float):
    """(frame, output index) pairs: for each output time k/fps, the frame on screen at that time.

    Frames are repeated when the target rate exceeds the source's and dropped when it is below. A
    frame counts as shown from its timestamp minus a tolerance, because containers round times
    (Matroska to milliseconds: 0.033 s for 1/30 s). The clip ends at `end` (the stream's duration)
    or, when the container does not say, where the last frame ends.
    """
    eps = min(1.5e-3, 0.25 / max(fps, src_fps, 1.0))
    k, t0, prev, last_t, last_dur = 0, None, None, 0.0, 1.0 / src_fps
    n_max = None
    for i, frame in enumerate(decoded):
        t = float(frame.time) if frame.time is not None else i / src_fps
        if t0 is None:
            t0 = t
            n_max = round((end - t0) * fps) if end is not None else None
        t -= t0
        while prev is not None and k / fps < t - eps and (n_max is None or k < n_max):
            yield prev, k
            k += 1
        prev, last_t = frame, t
        if frame.duration and frame.time_base:
            last_dur = float(frame.duration * frame.time_base)
    if prev is None:
        return
    n_end = n_max if n_max is not None else round((last_t + last_dur) * fps)
    while k < max(n_end, 1):
        yield prev, k
        k += 1


def read_video(path: Path, settings: DecodeSettings | None = None, **kw) -> tuple[np.ndarray, float]:
    """Decode upright RGB frames (T, H, W, 3) uint8 and their rate, as `settings` (or keywords) ask.

    The container's rotation is applied. With `fps`, each output time gets the frame shown at that
    time (see `_sample_times`); without, every frame is kept at the video's average rate. A video
    over the clip limit raises VideoError "too long" (before decoding when the container says so)
    unless `too_long` keeps its first frames or a centred window.
    """
    s = settings or DecodeSettings(**kw)
    if s.too_long not in TOO_LONG:
        raise ValueError(f"too_long must be one of {TOO_LONG}")
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_image(path, s), float(s.fps or 1.0)
    with _open(path) as c:
        stream = _video_stream(c, path)
        src_fps = _fps(stream)
        out_fps = float(s.fps) if s.fps else src_fps
        if out_fps <= 0 or not math.isfinite(out_fps):
            raise VideoError(path, "unknown frame rate", "pass --fps")
        duration = _duration(c, stream)
        limit = _clip_limit(s, out_fps)
        expected = round(duration * out_fps) if duration is not None else None
        start = 0
        if limit is not None and expected is not None and expected > limit:
            if s.too_long == "skip":
                raise _too_long(path, s, expected)
            if s.too_long == "center":
                start = (expected - limit) // 2
        stream.thread_type = "AUTO"
        make = _FrameMaker(s, path)
        frames: list[np.ndarray] = []
        decoded = c.decode(stream)
        if s.fps:
            end = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            pairs = _sample_times(decoded, out_fps, end, src_fps or out_fps)
        else:
            pairs = ((f, i) for i, f in enumerate(decoded))
        last_frame, last_img = None, None
        try:
            for frame, k in pairs:
                if k < start:
                    continue
                if limit is not None and k - start >= limit:
                    if s.too_long == "skip":
                        raise _too_long(path, s, k + 1, approx=False)
                    break
                if frame is not last_frame:  # a repeated frame is converted once
                    last_frame, last_img = frame, make(frame)
                frames.append(last_img)
        except av.FFmpegError as e:
            raise VideoError(path, "corrupt", f"decoding failed after {len(frames)} frames: {e}") from None
    if not frames:
        raise VideoError(path, "no frames", "the video stream decoded to nothing")
    return np.stack(frames), out_fps


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def _read_image(path: Path, s: DecodeSettings) -> np.ndarray:
    """(1, H, W, 3): an image as a one-frame video, upright by its EXIF orientation, sized as `s` asks."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except FileNotFoundError:
        raise VideoError(path, "missing", "no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise VideoError(path, "corrupt", f"not an image PIL can read ({type(e).__name__})") from None
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return _FrameMaker(s, path)(frame)[None]


def write_video(path: Path, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write (T, H, W, 3) uint8 frames as H.264 yuv420p mp4 (odd sizes padded to even)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sizes: repeat the last row/column
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(tmp), mode="w") as c:
            s = c.add_stream("libx264", rate=rate)
            s.width, s.height = frames.shape[2], frames.shape[1]
            s.pix_fmt = "yuv420p"
            s.options = {"crf": str(crf), "preset": "veryfast"}
            for f in frames:
                for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                    c.mux(packet)
            for packet in s.encode():
                c.mux(packet)
        tmp.replace(path)
    except (OSError, av.FFmpegError) as e:
        tmp.unlink(missing_ok=True)  # a full disk leaves nothing half-written
        from opensora.errors import UserError

        why = getattr(e, "strerror", None) or str(e)
        raise UserError(f"{path}: cannot write the video ({why}); free some space or choose another output") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
