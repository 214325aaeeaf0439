"""Hub ids and local directories: an unreachable Hugging Face Hub fails in seconds, naming the fix.

huggingface_hub retries a failed request with backoff: offline, loading the default text encoder
printed about 100 retry lines over almost 5 minutes before failing. A hub id is checked first:
a local path or a cached repo passes at once; with HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE set, or
when the hub's host does not accept a connection within a few seconds, the load is refused in one
line. The probe is a plain TCP connect, not a request, so nothing is retried.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from opensora.errors import UserError

_TRUE = ("1", "true", "yes", "on")


def offline_setting() -> str | None:
    """The environment variable that puts Hugging Face libraries offline, if one is set."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _reachable(endpoint: str, timeout_s: float) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:  # no DNS, refused, timed out
        return False


def check_loadable(path: str, option: str, timeout_s: float = 5.0) -> None:
    """Return if `path` (for `option`) is a local path, a cached hub repo, or the hub answers; else a UserError."""
    if Path(path).expanduser().exists() or _cached(path):
        return
    if path.startswith(("/", "./", "../", "~")) or path.count("/") != 1:  # a hub id is "owner/name"
        raise UserError(f"{option} {path}: no such directory; pass a local model directory or a hub id (owner/name)")
    fix = (f"download it where there is a network (`hf download {path} --local-dir DIR`) and pass {option} DIR")
    offline = offline_setting()
    if offline:
        raise UserError(f"{option} {path}: not in the local Hugging Face cache and {offline} is set; {fix}")
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if not _reachable(endpoint, timeout_s):
        raise UserError(f"{option} {path}: neither a local directory nor in the Hugging Face cache, and the hub "
                        f"({endpoint}) cannot be reached from here; {fix} (HF_HUB_OFFLINE=1 skips this check's wait)")
