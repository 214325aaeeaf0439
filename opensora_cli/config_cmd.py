"""`opensora config`: see and edit the user config file."""

from __future__ import annotations

from typing import Annotated

import typer

from opensora_cli import choices
from opensora_cli.render import console, print_json, table
from opensora_cli.settings import Settings, config_path, schema, set_value, unset_value

app = typer.Typer(help="See and edit user defaults (config file < OPENSORA_* env < flags).", no_args_is_help=True)


@app.command("path")
def path() -> None:
    """Print the config file's path.

    [bold]Example[/bold]: opensora config path
    """
    print(config_path())


@app.command("show")
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show every setting, its value and where it came from.

    [bold]Example[/bold]: opensora config show --json
    """
    s: Settings = ctx.obj
    rows = [(k, s.get(k), s.source(k)) for k in schema()]
    if as_json:
        print_json({"file": str(s.file), "values": {k: v for k, v, _ in rows}, "home": str(s.home)})
        return
    console.print(table(f"config: {s.file}", rows, ("key", "value", "from")))
    console.print(f"home: {s.home}")


@app.command("set", context_settings={"ignore_unknown_options": True})  # `set train.lr -1` is a value
def set_(
    key: Annotated[str, typer.Argument(help="section.name, e.g. train.model", autocompletion=choices.complete_config_key)],
    value: Annotated[str, typer.Argument(help="the new value")],
) -> None:
    """Set one default in the config file.

    [bold]Example[/bold]: opensora config set train.model DiT/B-2
    """
    path, stored = set_value(key, value)
    console.print(f"{key} = {stored!r} in {path}")


@app.command("unset")
def unset(key: Annotated[str, typer.Argument(help="section.name", autocompletion=choices.complete_config_key)]) -> None:
    """Remove one default from the config file.

    [bold]Example[/bold]: opensora config unset train.model
    """
    path, was_set = unset_value(key)
    console.print(f"removed {key} from {path}" if was_set else f"{key} was not set in {path}; nothing to remove")


@app.command("keys")
def keys() -> None:
    """List every key the config file accepts.

    [bold]Example[/bold]: opensora config keys
    """
    from opensora_cli.options import COMMAND_SECTIONS

    flagged = set(COMMAND_SECTIONS.values())  # paths.home has no flag ($OPENSORA_HOME or the file)
    rows = [(k, key.type.__name__, key.shown_default, key.flag if k.split(".")[0] in flagged else "-", key.help)
            for k, key in schema().items()]
    console.print(table("config keys", rows, ("key", "type", "default", "flag", "meaning")))
