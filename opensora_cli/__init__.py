"""The `opensora` command: a thin Typer layer over the `opensora` library."""
