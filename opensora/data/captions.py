"""Captions files: a JSON list or JSON lines of {"file": "video0.mp4", "captions": ["...", ...]}."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from opensora.errors import UserError


@dataclass
class CaptionedVideo:
    """One entry of a captions file."""

    file: str
    captions: list[str]
    line: int  # 1-based line (JSONL) or entry index + 1 (JSON list), for error messages


def _bad(path: Path, e: json.JSONDecodeError, line_offset: int = 0) -> UserError:
    return UserError(f"{path}:{e.lineno + line_offset}:{e.colno}: malformed JSON ({e.msg}); fix the captions file")


def load_captions(path: Path) -> list[CaptionedVideo]:
    """Parse a captions file (JSON list or JSONL); a malformed file is an error naming line and column."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--captions {path}: no such file; pass a captions JSON or JSONL file")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    entries: list[tuple[int, object]] = []
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise _bad(path, e) from None
        entries = list(enumerate(data, 1))
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    entries.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{i}:{e.colno}: malformed JSON line ({e.msg}); fix the captions file") from None
    out, problems = [], []
    for where, item in entries:
        if not isinstance(item, dict) or not isinstance(item.get("file"), str):
            problems.append(f"{path}: entry {where} has no string 'file'")
            continue
        caps = item.get("captions", item.get("caption", []))
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            problems.append(f"{path}: entry {where} ('{item['file']}'): 'captions' must be a list of strings")
            continue
        out.append(CaptionedVideo(item["file"], caps, where))
    if problems:
        raise UserError("; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
    return out
