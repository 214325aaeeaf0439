"""Re-running the current command on N local processes (`--nproc`), with some options replaced."""

from __future__ import annotations

# The argv of the running command (after "opensora"); main() fills it in.
CURRENT_ARGV: list[str] = []
# Set for the workers of `--nproc`: their parent reports an interruption, once.
NPROC_CHILD = "_OPENSORA_NPROC_CHILD"


def without_option(argv: list[str], option: str) -> list[str]:
    """`argv` minus every `option VALUE` and `option=VALUE`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def relaunch(nproc: int, replace: dict[str, str]) -> None:
    """Run this command again on `nproc` local processes, without --nproc and with `replace` set."""
    import os
    import sys

    from opensora.parallel.launch import launch_local

    argv = list(CURRENT_ARGV)
    for option in ("--nproc", *replace):
        argv = without_option(argv, option)
    # `python -c` puts the current directory first on the import path: run from the parent of a clone
    # (which holds a folder named opensora/), workers would import that folder instead of the package.
    code = "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; from opensora_cli.main import run; run()"
    os.environ[NPROC_CHILD] = "1"  # inherited by the workers
    try:
        launch_local(nproc, [sys.executable, "-c", code, *argv, *(x for kv in replace.items() for x in kv)])
    finally:
        del os.environ[NPROC_CHILD]
