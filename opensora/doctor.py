"""`opensora doctor`: what this machine has for each stage, and a one-line fix for each problem."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
from dataclasses import dataclass


@dataclass
class Check:
    """One finding: what was looked at, what was found, and the fix when it is a problem."""

    name: str
    found: str
    ok: bool = True
    fix: str = ""
    needed: bool = True  # a failed needed check makes doctor exit non-zero


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _packages() -> list[Check]:
    install = "pip install -e . (see README, Install)"
    out = []
    for dist in ("diffusers", "transformers", "datasets", "av", "safetensors"):
        v = _version(dist)
        out.append(Check(dist, v or "missing", v is not None, "" if v else install))
    return out


def _torch() -> list[Check]:
    import torch

    from opensora.devices import cpu_bf16_is_fast

    checks = [Check("torch", f"{torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU build'})")]
    if torch.cuda.is_available():
        checks.append(Check("cuDNN", str(torch.backends.cudnn.version())))
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            checks.append(Check(f"cuda:{i}", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, "
                                f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"))
    else:
        gpu_here = shutil.which("nvidia-smi") is not None
        checks.append(Check("GPU", "none visible to torch", not gpu_here,
                            "this machine has an NVIDIA driver but torch is a CPU build: install the CUDA build "
                            "(README, Install)" if gpu_here else "", needed=False))
        fast = cpu_bf16_is_fast()
        checks.append(Check("CPU bf16", "fast (oneDNN)" if fast else "emulated (use --precision fp32)", True))
    return checks


def _colossalai() -> Check:
    from opensora.parallel.distributed import quiet

    try:
        with quiet():
            import colossalai
            from colossalai.booster import Booster  # noqa: F401
    except Exception as e:  # any import failure of a --no-deps install lands here
        return Check("colossalai", f"not importable ({type(e).__name__}: {str(e).splitlines()[0][:80]})", False,
                     "pip install --no-deps -r requirements-nodeps.txt (see README, Install)")
    return Check("colossalai", f"{colossalai.__version__}; no kernels to build (training uses torch's fused AdamW)")


def run_checks(config_file, home, read_settings) -> list[Check]:
    """Every check; `read_settings` reads the config file and environment (raising on a problem)."""
    from opensora.errors import OpenSoraError
    from opensora.hub import offline_setting

    checks = [Check("python", f"{platform.python_version()} ({sys.executable})", sys.version_info >= (3, 11),
                    "use Python 3.11 or newer")]
    checks += _torch()
    checks.append(_colossalai())
    checks += _packages()
    offline = offline_setting()
    checks.append(Check("hub", f"offline ({offline} is set)" if offline else "online (hub ids are fetched)",
                        needed=False))
    try:
        read_settings()
        checks.append(Check("config", f"{config_file}{'' if config_file.exists() else ' (none: built-in defaults)'}"))
    except OpenSoraError as e:
        checks.append(Check("config", str(config_file), False, str(e)))
    checks.append(Check("home", str(home)))
    return checks
