"""Flags of settings: their help, shown default, choices and completion come from the library's fields.

A command's options are declared in its module by flag name and type only (`typer.Option("--lr")`,
default None = not given). `SettingsCommand` matches each option to the field of the same name in
the command's section (see `settings.SECTIONS`) and, when help is shown, writes the field's help,
its choices (from the registry) and its default with where that default comes from. The registries
and config classes are imported only then, so starting the CLI stays fast.
"""

from __future__ import annotations

import os
from typing import Any

from rich.markup import escape
from typer.core import TyperCommand

# Command name -> config section whose fields are its settings.
COMMAND_SECTIONS = {"download": "download", "collate": "collate", "encode": "encode", "train": "train",
                    "sample": "sample", "eval": "eval", "demo": "demo"}
# Options that are actions or per-invocation switches, not defaults a config file should hold.
ACTIONS = {"help", "json", "as_json", "plan", "force", "overwrite", "debug", "version", "install_completion",
           "show_completion", "runs_dir"}


def setting_keys(command: str, names: list[str]) -> dict[str, Any]:
    """{option name: settings.Key} for the options of `command` that are settings."""
    from opensora_cli.settings import schema

    section = COMMAND_SECTIONS.get(command)
    keys = schema()
    return {n: keys[f"{section}.{n}"] for n in names if section and f"{section}.{n}" in keys}


def describe(key: Any, settings: Any = None) -> str:
    """The `--help` text of a setting: meaning, choices, and the default with its source (rich-escaped)."""
    from opensora.schema import choices_of

    text = key.help
    names = choices_of(key.field)
    if names:
        text += f" One of: {', '.join(names)}."
    source, value = "default", None
    if settings is not None:
        try:
            if os.environ.get(key.env) is not None or key.key in settings.values:
                source, value = ("env" if os.environ.get(key.env) is not None else "config"), settings.get(key.key)
        except Exception:  # a broken config file is reported when a command runs, not in --help
            pass
    if source == "default":
        suffix = f"[default: {key.shown_default}; config {key.key}]"
    else:
        where = "the environment" if source == "env" else "the config file"
        suffix = f"[default: {value} from {where}; built in: {key.shown_default}; config {key.key}]"
    return escape(text) + " " + escape(suffix)


class SettingsCommand(TyperCommand):
    """A command whose setting options describe and complete themselves from the config schema."""

    def __init__(self, name: str | None, **kw: Any):
        super().__init__(name, **kw)
        for param in self.params:
            if param.name in ACTIONS or getattr(param, "param_type_name", "") != "option":
                continue
            if getattr(param, "_custom_shell_complete", None) is None:
                # click's hook for value completion: filled lazily from the setting's registry
                param._custom_shell_complete = self._completer(param.name)

    def _completer(self, name: str):
        def complete(ctx, param, incomplete: str) -> list[str]:
            from opensora.schema import choices_of

            key = setting_keys(self.name, [name]).get(name)
            names = choices_of(key.field) if key is not None else None
            return [n for n in names or () if n.startswith(incomplete)]

        return complete

    def format_help(self, ctx, formatter) -> None:
        """Write each setting's help from its field (once), then render as usual."""
        keys = setting_keys(self.name, [p.name for p in self.params])
        for param in self.params:
            if param.name in keys:
                param.help = describe(keys[param.name], ctx.find_root().obj)
        return super().format_help(ctx, formatter)
