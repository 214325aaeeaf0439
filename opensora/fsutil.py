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


def read_user_text(path: Path, option: str) -> str:
    """A text file a user gave (`option` names it in errors): UTF-8, readable, else one clear UserError."""
    from opensora.errors import UserError

    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{option} {path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except OSError as e:
        raise UserError(f"{option} {path}: cannot read it ({e.strerror}); check its permissions") from None


def check_writable(directory: Path, option: str, need_bytes: int = 0) -> None:
    """A UserError unless files can be created in `directory` (made if missing) with `need_bytes` free."""
    import shutil

    from opensora.errors import UserError

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except FileExistsError:
        raise UserError(f"{option} {directory}: a file of that name is in the way; choose another path") from None
    except NotADirectoryError:
        raise UserError(f"{option} {directory}: part of the path is a file, not a folder; choose another path") from None
    except OSError as e:
        raise UserError(f"{option} {directory}: cannot write there ({e.strerror}); choose a writable folder") from None
    free = shutil.disk_usage(directory).free
    if need_bytes and free < need_bytes:
        raise UserError(f"{option} {directory}: {free / 2**20:.0f} MiB free, about {need_bytes / 2**20:.0f} MiB needed; "
                        "free some space or choose another folder")


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


class DirectoryLock:
    """An exclusive lock on a directory held for a `with` block (fcntl.flock on DIR/.lock).

    The kernel releases the lock when its holder exits, so a killed run never leaves it stuck.
    `what` names the directory in the error ("--out", "run directory").
    """

    def __init__(self, directory: Path, what: str):
        self.path, self.what, self.fd = Path(directory) / ".lock", what, None

    def __enter__(self) -> DirectoryLock:
        import fcntl

        from opensora.errors import UserError

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(f"{self.what} {self.path.parent}: cannot write there ({e.strerror}); choose a writable "
                            "directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.what} {self.path.parent} is in use by process {holder}; wait for it to finish "
                            "or choose another directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock; the file stays (removing it would race)
            self.fd = None
