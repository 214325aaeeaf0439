"""`python -m opensora_cli ...` (e.g. under torchrun) is the `opensora` command."""

from opensora_cli.main import run

run()
