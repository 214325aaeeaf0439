"""Shell completion scripts for `opensora`, generated from the Typer app.

Regenerate the files in completions/ with: python -m opensora_cli.completions completions/
"""

from __future__ import annotations

import sys
from pathlib import Path

# Typer has no public function returning the script text for a named shell (only the interactive
# --show-completion, which detects the current shell), so we call the one it uses itself.
from typer._completion_shared import get_completion_script

SHELLS = {"bash": "opensora.bash", "zsh": "_opensora", "fish": "opensora.fish"}


def completion_script(shell: str) -> str:
    """The completion script for `shell` (bash, zsh or fish)."""
    return get_completion_script(prog_name="opensora", complete_var="_OPENSORA_COMPLETE", shell=shell).strip() + "\n"


def write_all(directory: Path) -> list[Path]:
    """Write every shell's script into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shell, name in SHELLS.items():
        (directory / name).write_text(completion_script(shell))
        paths.append(directory / name)
    return paths


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "completions")):
        print(p)
