"""Resumable, checksummed download of a dataset archive and its safe extraction."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from opensora.data.config import MSRVTT_URL
from opensora.errors import OpenSoraError
from opensora.fsutil import write_json_atomic
from opensora.progress import ProgressEvent, ProgressFn, no_progress

CHUNK = 1 << 20
MARKER = ".download-complete.json"


@dataclass
class DownloadResult:
    """What `download_dataset` did."""

    dest: Path
    archive: Path
    bytes: int
    sha256: str
    resumed_from: int
    skipped: bool


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _archive_name(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    return name or "dataset.zip"


class _Stalled(Exception):
    pass


STALL_BYTES = 1024  # fewer bytes than this in a whole stall window stops the download


def _fetch(url: str, part: Path, progress: ProgressFn, timeout: float,
           stall_seconds: float = 60.0) -> tuple[int, int | None]:
    """Append the rest of `url` to `part` (HTTP Range); return (bytes resumed from, total size).

    `timeout` bounds the connection; `stall_seconds` bounds a transfer that sends (almost) nothing.
    """
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "opensora"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=min(timeout, stall_seconds))
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the partial file is already whole
            return have, have
        raise OpenSoraError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise OpenSoraError(f"cannot reach {url}: {getattr(e, 'reason', e)}; check --url or the network") from None
    with resp:
        if have and resp.status == 206:
            mode, start = "ab", have
            crange = resp.headers.get("Content-Range", "")
            total = int(crange.rsplit("/", 1)[-1]) if "/" in crange and not crange.endswith("*") else None
        else:  # server ignored the Range header: start over
            mode, start = "wb", 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length else None
        done = start
        progress(ProgressEvent("download", done, total, unit="bytes"))
        window_start, window_bytes = time.monotonic(), 0
        with open(part, mode) as f:
            try:
                while chunk := resp.read1(CHUNK):  # whatever has arrived: smooth progress on slow links
                    f.write(chunk)
                    done += len(chunk)
                    window_bytes += len(chunk)
                    progress(ProgressEvent("download", done, total, unit="bytes"))
                    if time.monotonic() - window_start >= stall_seconds:
                        if window_bytes < STALL_BYTES:  # a trickle is a stall too (1 byte every 30 s never times out)
                            raise _Stalled(f"{window_bytes} bytes in the last {stall_seconds:g} s")
                        window_start, window_bytes = time.monotonic(), 0
            except (_Stalled, TimeoutError, OSError) as e:
                f.flush()
                why = str(e) if isinstance(e, _Stalled) else f"no data for {stall_seconds:g} s"
                raise OpenSoraError(f"download of {url} stalled ({why}) after {done:,} bytes; rerun the same "
                                    "command to resume, or raise --stall-timeout") from None
            f.flush()
            os.fsync(f.fileno())
    return start, total


def _safe_target(dest: Path, name: str) -> Path:
    target = (dest / name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise OpenSoraError(f"refusing archive entry {name!r}: it would be written outside {dest}")
    return target


def extract_archive(archive: Path, dest: Path, progress: ProgressFn = no_progress) -> int:
    """Extract a zip or tar archive into `dest`, refusing entries that escape it (zip-slip)."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:  # validate every entry before writing any
                _safe_target(dest, info.filename)
            for i, info in enumerate(infos, 1):
                zf.extract(info, dest)
                progress(ProgressEvent("extract", i, len(infos), unit="files"))
            return len(infos)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _safe_target(dest, m.name)
                if m.issym() or m.islnk():
                    _safe_target(dest, os.path.join(os.path.dirname(m.name), m.linkname))
            # The "data" filter (PEP 706) also refuses device files and absolute links.
            for i, m in enumerate(members, 1):
                tf.extract(m, dest, filter="data")
                progress(ProgressEvent("extract", i, len(members), unit="files"))
            return len(members)
    raise OpenSoraError(f"{archive} is neither a zip nor a tar archive; check --url")


def download_dataset(
    dest: Path,
    url: str = MSRVTT_URL,
    sha256: str | None = None,
    size: int | None = None,
    progress: ProgressFn = no_progress,
    timeout: float = 60.0,
    stall_seconds: float = 60.0,
) -> DownloadResult:
    """Download `url` into `dest` (resuming a partial download), verify it, and extract it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / _archive_name(url)
    marker = dest / MARKER
    if marker.exists() and archive.exists():
        info = json.loads(marker.read_text())
        if info.get("url") == url and (sha256 is None or info.get("sha256") == sha256.lower()):
            return DownloadResult(dest, archive, info["bytes"], info["sha256"], 0, True)
    part = archive.with_name(archive.name + ".part")
    resumed_from, total = _fetch(url, part, progress, timeout, stall_seconds)
    got = part.stat().st_size
    expected = size if size is not None else total
    if expected is not None and got != expected:
        raise OpenSoraError(
            f"{part} has {got} bytes but {expected} were expected; rerun the same command to resume"
        )
    digest = _sha256(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise OpenSoraError(
            f"checksum mismatch for {url}: got sha256 {digest}, expected {sha256.lower()}; "
            "the corrupt file was removed, rerun to download it again"
        )
    os.replace(part, archive)
    extract_archive(archive, dest, progress)
    write_json_atomic(marker, {"url": url, "bytes": got, "sha256": digest})
    return DownloadResult(dest, archive, got, digest, resumed_from, False)


def remove_partial(dest: Path) -> None:
    """Forget a previous download in `dest` (used by --force)."""
    for p in Path(dest).glob("*.part"):
        p.unlink()
    (Path(dest) / MARKER).unlink(missing_ok=True)

