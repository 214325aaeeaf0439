"""Config fields that describe themselves: the one schema of every setting.

A config dataclass field made with `setting(default, help, ...)` carries its help text, its CLI
flag, where its choices come from (a registry, by "module:NAME") and its allowed range. The CLI
derives each flag's help and shown default, the config-file keys and the OPENSORA_* variables from
these fields, and `field_problems` checks any config against them, so a config's `validate()` adds
only the rules that tie several fields together. A default is written once: in the field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import MISSING, Field
from typing import Any


def setting(default: Any = MISSING, help: str = "", *, flag: str | None = None, choices: str | None = None,
            ge: float | None = None, gt: float | None = None, shown: str | None = None,
            default_factory: Any = MISSING, cli: bool = True) -> Any:
    """A dataclass field that is a user setting.

    flag: the CLI option (default "--field-name"); choices: "module:NAME" of a Registry or tuple;
    ge / gt: smallest value allowed (inclusive / exclusive); shown: how `--help` describes the
    default when the value alone says too little ("the video's own"); cli: False for a setting
    only the library fills in (never a flag or a config key).
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "ge": ge, "gt": gt, "shown": shown, "cli": cli}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings_of(cls: type) -> list[Field]:
    """The fields of config class `cls` that are user settings (flags and config keys)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli")]


def flag_of(f: Field) -> str:
    """The CLI option of a setting."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def default_of(f: Field) -> Any:
    """The built-in default of a setting (MISSING when it has none)."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def choices_of(f: Field) -> tuple[str, ...] | None:
    """The names a setting may take (imports its registry), or None if it is free-form."""
    from opensora.registry import choices_of as names

    path = f.metadata.get("choices")
    return names(path) if path else None


def base_type(cls: type, f: Field) -> type:
    """The plain type of a setting: int, float, str, bool or list (Optional and Path unwrapped)."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    t = typing.get_origin(args[0]) or args[0]
    if t in (list, tuple):
        return list
    return t if t in (int, float, bool) else str


def value_problem(f: Field, value: Any, where: str | None = None) -> str | None:
    """Why `value` is not allowed for setting `f` (choices, range, finite), or None; `where` names its source."""
    if value is None:
        return None
    where = where or flag_of(f)
    choices_path = f.metadata.get("choices")
    if choices_path:
        from opensora.registry import Registry, resolve

        registry = resolve(choices_path)
        if isinstance(registry, Registry):
            problem = registry.problem(value)
            return None if problem is None else problem.replace(registry.flag, where, 1)
        if value not in registry:
            return f"{where} {value!r} is not one of {', '.join(registry)}"
    ge, gt = f.metadata.get("ge"), f.metadata.get("gt")
    if (ge is not None or gt is not None) and isinstance(value, (int, float)) and not isinstance(value, bool):
        low_ok = (ge is None or value >= ge) and (gt is None or value > gt)
        if not math.isfinite(value) or not low_ok:
            if isinstance(value, int) and ge is not None:
                return f"{where} {value} must be at least {ge:g}"
            bound = f">= {ge:g}" if ge is not None else f"> {gt:g}"
            return f"{where} {value} must be a finite number {bound}"
    return None


def field_problems(cfg: Any) -> list[str]:
    """Every setting of `cfg` whose value its field does not allow, each naming the flag."""
    return [p for f in settings_of(type(cfg)) if (p := value_problem(f, getattr(cfg, f.name))) is not None]
