"""Atomic writes: a file appears whole or not at all."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


def write_json_atomic(path: Path, obj: object) -> None:
    """Write JSON to `path` through a temporary file and an atomic rename."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to `path` through a temporary file, fsync and an atomic rename.

    The file gets the mode a plain open() would give (0666 less the umask): tempfile.mkstemp's 0600
    would hide manifests and sidecars from the rest of a team on a shared file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def share_tree(root: Path) -> None:
    """Give every file under `root` the mode a plain open() gives (0666 less the umask).

    safetensors writes its files 0600; on a shared cluster a team must be able to read checkpoints.
    The umask is read from a probe file, not os.umask(), which would change it for a moment for
    every thread of the process.
    """
    root = Path(root)
    probe = root / f".mode-probe-{secrets.token_hex(4)}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            p.chmod(mode)
