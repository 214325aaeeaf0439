"""Video I/O with PyAV: probe, decode at a target fps, and write H.264 mp4."""

from __future__ import annotations

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


def read_video(
    path: Path,
    fps: float | None = None,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, float]:
    """Decode RGB frames (T, H, W, 3) uint8, resampled to `fps` (default the video's own).

    Frames keep their resolution unless `size` (height, width) asks for a resize.

    Raises VideoError with reason "too long" when the video exceeds `max_seconds` or
    `max_frames` (counted at the target fps), before decoding when the container says so.
    """
    path = Path(path)
    with _open(path) as c:
        s = _video_stream(c, path)
        src_fps = _fps(s)
        out_fps = float(fps) if fps else src_fps
        if out_fps <= 0:
            raise VideoError(path, "unknown frame rate", "pass --fps")
        duration = _duration(c, s)
        if duration is not None:
            if max_seconds is not None and duration > max_seconds + 1e-6:
                raise VideoError(path, "too long", f"{duration:.2f}s > --max-seconds {max_seconds}")
            if max_frames is not None and round(duration * out_fps) > max_frames:
                raise VideoError(path, "too long", f"~{round(duration * out_fps)} frames > --max-frames {max_frames}")
        s.thread_type = "AUTO"
        frames: list[np.ndarray] = []
        step = 1.0 / out_fps
        next_t = None  # time of the next sample; None keeps every frame (the video's own rate)
        try:
            for i, frame in enumerate(c.decode(s)):
                if fps:
                    t = float(frame.time) if frame.time is not None else i / src_fps
                    if next_t is None:
                        next_t = t
                    if t + 1e-6 < next_t:
                        continue
                    while next_t <= t + 1e-6:  # a gap in a VFR video skips sample times, never repeats
                        next_t += step
                if size is None:
                    frames.append(frame.to_ndarray(format="rgb24"))
                else:
                    frames.append(frame.reformat(width=size[1], height=size[0], format="rgb24").to_ndarray())
                if max_frames is not None and len(frames) > max_frames:
                    raise VideoError(path, "too long", f"more than --max-frames {max_frames} frames")
                if max_seconds is not None and len(frames) / out_fps > max_seconds + 1e-6:
                    raise VideoError(path, "too long", f"longer than --max-seconds {max_seconds}")
        except av.FFmpegError as e:
            raise VideoError(path, "corrupt", f"decoding failed after {len(frames)} frames: {e}") from None
    if not frames:
        raise VideoError(path, "no frames", "the video stream decoded to nothing")
    return np.stack(frames), out_fps


def write_video(path: Path, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write (T, H, W, 3) uint8 frames as H.264 yuv420p mp4 (odd sizes padded to even)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sizes: repeat the last row/column
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    rate = Fraction(fps).limit_denominator(1001)
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
    return path
