"""`opensora runs`: the runs under HOME with what to run next."""

from __future__ import annotations

import json
import shutil


def test_runs_lists_model_progress_checkpoint_and_next_commands(cli, trained_checkpoint, isolated_user_dirs):
    r = cli("runs")
    assert r.code == 0 and "no runs under" in r.out
    run = isolated_user_dirs / "home" / "runs" / "r1"
    shutil.copytree(trained_checkpoint.parent, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # a run killed mid-write: the torn line is skipped
    r = cli("runs", "--json")
    assert r.code == 0, r.err
    (info,) = json.loads(r.out)
    assert (info["model"], info["steps"], info["target_steps"]) == ("DiT/T-2", 4, 4)
    assert info["newest_checkpoint"] == str(run / "ckpt-0000004") and info["last_loss"] > 0
    r = cli("runs")
    assert str(run) in r.out and f"opensora train --resume auto --run-dir {run} --data " in r.out  # with its settings
    assert f'opensora sample "a prompt" --ckpt {run}' in r.out
