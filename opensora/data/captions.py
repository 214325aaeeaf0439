"""Captions files: a JSON list or JSON lines of {"file": "video0.mp4", "captions": ["...", ...]}, or CSV.

A CSV file has a header row; one column names the video and one holds a caption (several rows may
name the same video). The columns are found by name: `file`/`video`/`path`/`videoid` and
`caption`/`text`/`name` (WebVid's `videoid,name,...`), or given explicitly. A file name without an
extension (WebVid's ids) gets `.mp4`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from opensora.errors import UserError
from opensora.fsutil import read_user_text


@dataclass
class CaptionedVideo:
    """One entry of a captions file."""

    file: str
    captions: list[str]
    line: int  # 1-based line (JSONL) or entry index + 1 (JSON list), for error messages


def _bad(path: Path, e: json.JSONDecodeError, line_offset: int = 0) -> UserError:
    return UserError(f"{path}:{e.lineno + line_offset}:{e.colno}: malformed JSON ({e.msg}); fix the captions file")


FILE_COLUMNS = ("file", "video", "path", "videoid", "video_id")
CAPTION_COLUMNS = ("caption", "captions", "text", "name")


def _pick_column(header: list[str], given: str | None, known: tuple[str, ...], option: str, path: Path) -> int:
    lowered = [h.strip().lower() for h in header]
    if given is not None:
        if given.strip().lower() not in lowered:
            raise UserError(f"{option} {given!r} is not a column of {path} (columns: {', '.join(header)})")
        return lowered.index(given.strip().lower())
    for name in known:
        if name in lowered:
            return lowered.index(name)
    raise UserError(f"{path}: no column named {' or '.join(known)} (columns: {', '.join(header)}); "
                    f"name it with {option}")


def load_csv_captions(path: Path, text: str, file_column: str | None = None,
                      caption_column: str | None = None) -> list[CaptionedVideo]:
    """Parse a CSV captions file: rows of the same video are merged; bad rows are reported by line."""
    rows = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(rows)
    except StopIteration:
        raise UserError(f"--captions {path}: the CSV file is empty; it needs a header and one row per caption") from None
    except csv.Error as e:
        raise UserError(f"{path}:1: malformed CSV ({e}); fix the captions file") from None
    fi = _pick_column(header, file_column, FILE_COLUMNS, "--file-column", path)
    ci = _pick_column(header, caption_column, CAPTION_COLUMNS, "--caption-column", path)
    by_file: dict[str, CaptionedVideo] = {}
    problems = []
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append(f"{path}:{rows.line_num}: malformed CSV ({e})")
            continue
        line = rows.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(f"{path}:{line}: {len(row)} fields where the header has {len(header)} (quote captions that hold commas)")
            continue
        name = row[fi].strip()
        if not name:
            problems.append(f"{path}:{line}: the {header[fi]!r} column is empty")
            continue
        if not Path(name).suffix:
            name += ".mp4"
        entry = by_file.setdefault(name, CaptionedVideo(name, [], line))
        entry.captions.append(row[ci])
    if problems:
        raise UserError("; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
    return list(by_file.values())


def load_captions(path: Path, file_column: str | None = None, caption_column: str | None = None) -> list[CaptionedVideo]:
    """Parse a captions file (JSON list, JSONL or CSV); a malformed file is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--captions {path}: no such file; pass a captions JSON, JSONL or CSV file")
    text = read_user_text(path, "--captions")
    if path.suffix.lower() == ".csv" or (file_column or caption_column):
        return load_csv_captions(path, text, file_column, caption_column)
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
    if not out:
        raise UserError(f"--captions {path}: no entries; it needs at least one {{file, captions}} entry")
    return out
