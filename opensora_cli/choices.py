"""Value completion for arguments that are not settings (settings complete through `options.SettingsCommand`)."""

from __future__ import annotations


def complete_config_key(incomplete: str) -> list[str]:
    """Config keys, for `opensora config set/unset`."""
    from opensora_cli.settings import schema

    return [k for k in schema() if k.startswith(incomplete)]
