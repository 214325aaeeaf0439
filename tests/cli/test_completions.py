"""completions/ must match what the app generates, and the app must answer completion requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensora_cli.completions import SHELLS, completion_script
from tests.conftest import run_opensora

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_completion_files_are_current(shell):
    path = ROOT / "completions" / SHELLS[shell]
    assert path.read_text() == completion_script(shell), (
        f"{path} drifted from the app; run `python -m opensora_cli.completions completions/`"
    )


def test_completion_lists_commands_and_options():
    env = {"_OPENSORA_COMPLETE": "complete_bash", "COMP_WORDS": "opensora data co", "COMP_CWORD": "2"}
    r = run_opensora(env=env)
    assert r.returncode == 0 and r.stdout.split() == ["collate"]
    env = {"_OPENSORA_COMPLETE": "complete_bash", "COMP_WORDS": "opensora data download --d", "COMP_CWORD": "3"}
    r = run_opensora(env=env)
    assert "--dest" in r.stdout.split()


@pytest.mark.parametrize(("words", "expected"), [
    ("opensora train --plugin ", ["hybrid", "ddp", "zero2"]),
    ("opensora train --model DiT/X", ["DiT/XL-2", "DiT/XL-4", "DiT/XL-8"]),
    ("opensora train --condition ", ["adaln", "cross-attn", "token-concat"]),
    ("opensora train --sp ", ["none", "ulysses", "fastseq"]),
    ("opensora data encode --compression ", ["raw", "vqvae", "sdvae", "video-vae"]),
    ("opensora config set train.mo", ["train.model"]),
])
def test_values_complete_from_the_registries(words, expected):
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    r = run_opensora(env={"_OPENSORA_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert r.stdout.split() == expected, r.stderr
