"""The `opensora` command: a thin Typer layer over the `opensora` library."""

import os

# Library chatter (hub progress bars, load reports) is not the user's business; our own bars say enough.
for _var, _val in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                   ("DIFFUSERS_VERBOSITY", "error"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
    os.environ.setdefault(_var, _val)
