"""README's quickstart and .ci/run must agree on the test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"TEST_COMMAND='(.+)'", ci).group(1)
    quick = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in re.findall(r"```(?:bash|sh)?\n(.*?)```", quick, re.S)[0].splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert len(commands) == 2, commands
    assert commands[1] == command


def test_changelog_has_unreleased_section():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog") and "## [Unreleased]" in text
