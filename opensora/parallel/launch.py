"""`--nproc N`: start N local worker processes through torchrun's machinery (torch.distributed.launcher)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import uuid
from pathlib import Path

from opensora.errors import OpenSoraError


def under_torchrun() -> bool:
    """True inside a worker started by torchrun (or by `launch_local`)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_local(nproc: int, entry: list[str], monitor_interval: float = 0.5) -> None:
    """Run the command `entry` (an executable and its arguments) in `nproc` local processes; if one dies
    the agent stops the others. Workers find their rank in torchrun's environment variables."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=monitor_interval,
        rdzv_configs={"timeout": 120}, start_method="spawn",
    )
    # The agent logs each worker's exit (and Ctrl-C) at warning/error level; our one-line error says it
    # better. Its modules' loggers set their own level, so the parent's alone does not silence them.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed.elastic")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    import tempfile

    from opensora.training.watchdog import EXIT_CODE, REPORT_ENV

    report = Path(tempfile.mkdtemp(prefix="opensora-launch-")) / "watchdog.txt"
    os.environ[REPORT_ENV] = str(report)  # a worker's watchdog leaves its reason here, for one line below
    try:
        elastic_launch(config, entrypoint=entry[0])(*entry[1:])
    except SignalException as e:  # the agent turns Ctrl-C (SIGINT) into this after stopping the workers
        if e.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode == EXIT_CODE and report.exists():
            raise OpenSoraError(report.read_text()) from None
        how = (f"signal {signal.Signals(-failure.exitcode).name}" if failure.exitcode < 0
               else f"exit code {failure.exitcode}")
        raise OpenSoraError(f"rank {rank} of {nproc} failed ({how}); the other ranks were stopped") from None
    finally:
        os.environ.pop(REPORT_ENV, None)
        shutil.rmtree(report.parent, ignore_errors=True)
