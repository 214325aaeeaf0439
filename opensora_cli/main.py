"""Entry point: wires the command groups and turns library errors into one-line messages."""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Annotated

import typer

from opensora import __version__
from opensora.errors import OpenSoraError, OpenSoraWarning
from opensora_cli import (
    config_cmd,
    data_cmd,
    demo_cmd,
    doctor_cmd,
    eval_cmd,
    inspect_cmd,
    relaunch,
    runs_cmd,
    sample_cmd,
    train_cmd,
)
from opensora_cli.options import SettingsCommand
from opensora_cli.render import error_line, warning_line
from opensora_cli.settings import Settings

app = typer.Typer(
    name="opensora",
    help="From captioned videos to a trained text-to-video diffusion model and generated clips.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(config_cmd.app, name="config")
app.command("inspect")(inspect_cmd.inspect)
app.command("train", cls=SettingsCommand)(train_cmd.train)
app.command("sample", cls=SettingsCommand)(sample_cmd.sample)
app.command("eval", cls=SettingsCommand)(eval_cmd.eval_command)
app.command("demo", cls=SettingsCommand)(demo_cmd.demo)
app.command("doctor")(doctor_cmd.doctor)
app.command("runs")(runs_cmd.runs)



def _version(value: bool) -> None:
    if value:
        print(f"opensora {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", envvar="OPENSORA_DEBUG", expose_value=False,
                                        help="Show full tracebacks (read by `main` before parsing).")] = False,
) -> None:
    """[bold]opensora[/bold]: data -> encode -> train -> sample, on one CPU or many GPUs.

    [bold]Examples[/bold]
      opensora demo                      # the whole loop, offline, in minutes
      opensora data encode -c captions.json -v videos/
      opensora train --model DiT/XL-2 --sp ulysses
      opensora sample "a person walking" --sec 5
      opensora eval RUN/ckpt-0002000 --data val/ --clip openai/clip-vit-base-patch32
    """
    ctx.obj = Settings.load()


def _quiet_libraries() -> None:
    """Keep third-party chatter off the terminal: our own progress bars say what is happening.

    diffusers imports bitsandbytes when it is installed, which logs a warning about an optional
    CPU kernel; transformers and datasets draw their own tqdm bars when loading weights.
    """
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # Colossal-AI calls torch APIs that torch has deprecated (TypedStorage): not for the user to act on.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"colossalai(\.|$)")
    # An exception in a finalizer while Ctrl-C unwinds (a DataLoader iterator started half-way) would
    # print "Exception ignored in ... Traceback"; the interruption itself is already reported.
    sys.unraisablehook = lambda unraisable: None
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@contextmanager
def _warnings_as_lines():
    """Show the library's OpenSoraWarnings as one yellow line, once, from rank 0 only."""
    with warnings.catch_warnings():
        python_show = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, OpenSoraWarning):
                python_show(message, category, filename, lineno, file, line)
            elif os.environ.get("RANK", "0") == "0":
                warning_line(str(message))

        warnings.showwarning = show
        warnings.simplefilter("once", OpenSoraWarning)
        yield


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code (0 ok, 1 failure, 2 bad input, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    relaunch.CURRENT_ARGV[:] = argv  # for commands that re-launch themselves (--nproc)
    debug = "--debug" in argv or os.environ.get("OPENSORA_DEBUG", "") not in ("", "0", "false")
    if not debug:
        _quiet_libraries()
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of raising it.
        with _warnings_as_lines():
            rv = app(args=argv, prog_name="opensora", standalone_mode=False)
        # Typer turns Ctrl-C into a returned 130 without a word; --nproc workers leave it to their parent
        if rv == 130 and not os.environ.get(relaunch.NPROC_CHILD):
            error_line("interrupted", hint_debug=False)
        return rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        if not os.environ.get(relaunch.NPROC_CHILD):
            error_line("interrupted", hint_debug=False)
        return 130
    except OpenSoraError as e:
        if debug:
            raise
        error_line(str(e), hint_debug=e.exit_code == 1)  # bad input or Ctrl-C: the message says it all
        return e.exit_code
    except Exception as e:
        if debug:
            raise
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # click's usage errors (Typer vendors click)
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            error_line(e.format_message() + hint, hint_debug=False)
            return e.exit_code
        error_line(f"{type(e).__name__}: {e}")  # unexpected: still one line unless --debug
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
