"""Named extension points: one `Registry` per kind maps each name to its implementation, once.

Models, conditionings, compressions, text encoders, SP strategies, samplers, plugins and
objectives each have one registry, declared beside their implementations. Validation, the CLI's
help choices and shell completion all read it, so adding an implementation is one entry in one
module. An entry may name its implementation lazily ("package.module:attr") so that listing the
names does not import heavy libraries.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opensora.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered implementation."""

    target: Any  # the implementation, or "module:attr" to import on first use
    help: str = ""
    listed: bool = True  # False: accepted (to explain a refusal) but not offered as a choice


class Registry(Mapping[str, T], Generic[T]):
    """name -> implementation, with the option that chooses among them (for messages)."""

    def __init__(self, kind: str, flag: str):
        self.kind, self.flag = kind, flag
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: Any, help: str = "", listed: bool = True) -> None:
        """Register `target` (or a lazy "module:attr") under `name`."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(target, help, listed)

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        """Decorator form of `add`."""
        def wrap(obj: T) -> T:
            self.add(name, obj, help)
            return obj

        return wrap

    def __getitem__(self, name: str) -> T:
        target = self._entries[name].target
        if isinstance(target, str) and ":" in target:
            module, attr = target.split(":")
            return getattr(importlib.import_module(module), attr)
        return target

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """The names offered as choices (help, completion)."""
        return tuple(n for n, e in self._entries.items() if e.listed)

    def help(self, name: str) -> str:
        """The one-line description of `name`."""
        return self._entries[name].help

    def problem(self, name: Any) -> str | None:
        """None if `name` is registered, else a message naming the flag, the choices and a close match."""
        if name in self._entries:
            return None
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{self.flag} {name!r} is not one of {', '.join(self.names())}{hint}"

    def lookup(self, name: str) -> T:
        """The implementation of `name`; a UserError naming the choices if there is none."""
        problem = self.problem(name)
        if problem:
            raise UserError(problem)
        return self[name]


def resolve(path: str) -> Any:
    """Import "package.module:attr" (registries and choice lists named in config fields)."""
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


def choices_of(path: str) -> tuple[str, ...]:
    """The names a setting may take, from the registry or tuple at `path`."""
    obj = resolve(path)
    return obj.names() if isinstance(obj, Registry) else tuple(obj)
