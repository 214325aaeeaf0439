"""The errors a user can cause, and runtime failures, each with a message naming the fix."""

from __future__ import annotations


class OpenSoraError(Exception):
    """A failure the CLI reports as one line, without a traceback (exit code 1)."""

    exit_code = 1


class OpenSoraWarning(UserWarning):
    """Something that works but that the user likely wants to change; the CLI shows it as one line."""


class Interrupted(OpenSoraError):
    """Ctrl-C, with what the user can do next (exit code 130)."""

    exit_code = 130


class UserError(OpenSoraError):
    """Bad input: a missing file, a bad option or config value (exit code 2)."""

    exit_code = 2


class ConfigError(UserError):
    """One or more invalid settings; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def collect(problems: list[str]) -> None:
    """Raise one ConfigError listing every problem, if there are any."""
    if problems:
        raise ConfigError(problems)
