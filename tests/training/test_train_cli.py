"""`opensora train` for real: Colossal-AI booster on gloo, 1 and 2 processes, kill -9 and exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import run_opensora

# Pinned to the CPU: 2-process gloo runs and CPU-only refusals (tests/gpu/ covers CUDA).
TRAIN = ["train", "--model", "DiT/T-2", "--batch-size", "4", "--num-workers", "0", "--lr", "2e-3", "--device", "cpu"]


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if x]


def _popen(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from opensora_cli.main import run; run()", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_two_processes_train_and_loss_falls(tmp_path, encoded_dataset):
    run = tmp_path / "run"
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--steps", "30", "--ckpt-every", "30",
                     "--nproc", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    losses = _losses(run)
    assert len(losses) == 30 and all(map(lambda v: v == v and abs(v) < 1e3, losses))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 * 0.8, losses
    ckpt = run / "ckpt-0000030"
    assert (ckpt / "model" / "config.json").exists() and (ckpt / "ema").is_dir()
    assert json.loads((ckpt / "trainer_state.json").read_text())["world_size"] == 2
    assert (run / "tensorboard").is_dir() and json.loads((run / "config.json").read_text())["steps"] == 30
    info = json.loads(run_opensora("inspect", ckpt, "--json").stdout)
    assert info["kind"] == "checkpoint" and info["step"] == 30 and info["ema"] is True
    assert info["model"] == "DiT/T-2" and info["condition"] == "cross-attn" and info["compression"] == "raw"


@pytest.mark.parametrize("nproc, objective", [(1, "ddpm"), (2, "ddpm"), (1, "rflow")])
def test_kill_9_and_resume_matches_uninterrupted(tmp_path, encoded_dataset, nproc, objective):
    args = [*TRAIN, "--data", encoded_dataset, "--steps", "8", "--ckpt-every", "3", "--nproc", str(nproc),
            "--condition", "adaln", "--objective", objective]
    full = tmp_path / "full"
    r = run_opensora(*args, "--run-dir", full)
    assert r.returncode == 0, r.stderr[-3000:]
    cut = tmp_path / "cut"
    proc = _popen([*args, "--run-dir", cut])
    deadline = time.time() + 300
    while time.time() < deadline and not (cut / "ckpt-0000003").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank, mid-run
    proc.wait()
    assert (cut / "ckpt-0000003").exists() and not (cut / "ckpt-0000008").exists()
    r = run_opensora(*args, "--run-dir", cut, "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _losses(cut) == _losses(full)  # step for step, bit for bit


def test_one_rank_dying_stops_the_others(tmp_path, encoded_dataset):
    run = tmp_path / "run"
    proc = _popen([*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--steps", "100000", "--nproc", "2"])
    deadline = time.time() + 300
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()):
        time.sleep(0.1)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "train" in " ".join(p.cmdline())]
    assert len(workers) == 2
    workers[-1].send_signal(signal.SIGKILL)
    t0 = time.time()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.time() - t0 < 60
    assert proc.returncode == 1 and "failed" in err and "SIGKILL" in err
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)


def test_plugins_that_cannot_run_here_are_one_line(tmp_path, encoded_dataset):
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--run-dir", tmp_path / "r", "--steps", "1", "--plugin", "zero2")
    assert r.returncode == 2 and "--plugin zero2 needs a CUDA GPU" in r.stderr and "hybrid" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--run-dir", tmp_path / "g", "--steps", "1", "--plugin", "gemini")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "use --plugin zero2" in r.stderr
    assert not (tmp_path / "g").exists()  # refused before anything was written
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--run-dir", tmp_path / "s", "--steps", "1", "--sp", "ulysses")
    assert r.returncode == 2 and "this is one process" in r.stderr and "--nproc" in r.stderr
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--steps", "0", "--condition", "film", "--run-dir", tmp_path / "r")
    assert r.returncode == 2 and "--steps 0" in r.stderr and "--condition 'film'" in r.stderr


def test_ddp_plugin_trains_and_resumes(tmp_path, encoded_dataset):
    args = [*TRAIN, "--data", encoded_dataset, "--plugin", "ddp", "--ckpt-every", "2", "--run-dir", tmp_path / "r"]
    assert run_opensora(*args, "--steps", "2").returncode == 0
    r = run_opensora(*args, "--steps", "4", "--resume", "auto")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(_losses(tmp_path / "r")) == 4


def test_channel_mismatch_is_one_line_before_any_step(tmp_path, encoded_dataset, tiny_sdvae, tiny_text_encoder):
    run = tmp_path / "r"
    assert run_opensora(*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--steps", "1").returncode == 0
    vids = encoded_dataset.parent / "videos"
    sd = tmp_path / "sd"
    r = run_opensora("data", "encode", "-c", encoded_dataset.parent / "captions.json", "-v", vids, "-o", sd,
                     "--compression", "sdvae", "--vae", tiny_sdvae, "--text-encoder", tiny_text_encoder,
                     "--num-workers", "0")
    assert r.returncode == 0, r.stderr
    r = run_opensora(*TRAIN, "--data", sd, "--run-dir", run, "--steps", "2", "--resume", "auto")
    assert r.returncode == 2 and "compression" in r.stderr and "Traceback" not in r.stderr  # another dataset
    assert len(_losses(run)) == 1
    r = run_opensora(*TRAIN, "--data", sd, "--run-dir", tmp_path / "new", "--steps", "1", "--init-from",
                     run / "ckpt-0000001")
    assert r.returncode == 2 and "latent channels" in r.stderr and "Traceback" not in r.stderr


CRASH_IN_SAVE = """
import os, sys
import opensora.training.checkpointer as checkpointer
original = checkpointer.save_model_dir
def crash_mid_save(directory, *args, **kwargs):
    original(directory, *args, **kwargs)
    if "0000006" in str(directory):
        os._exit(9)  # the process dies with the new checkpoint half written
checkpointer.save_model_dir = crash_mid_save
from opensora_cli.main import run
sys.argv = ["opensora", *sys.argv[1:]]
run()
"""


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, encoded_dataset):
    from opensora.checkpoint import checkpoints_of, load_model

    run = tmp_path / "run"
    args = [*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--steps", "8", "--ckpt-every", "3"]
    r = subprocess.run([sys.executable, "-c", CRASH_IN_SAVE, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 9
    assert [p.name for p in checkpoints_of(run)] == ["ckpt-0000003"]
    assert (run / ".ckpt-0000006.tmp").exists()  # the half-written one never took the real name
    model, meta = load_model(run / "ckpt-0000003")
    assert meta["step"] == 3
    r = run_opensora(*args, "--resume", "auto")
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p.name for p in checkpoints_of(run)][-1] == "ckpt-0000008"
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == list(range(1, 9))


@pytest.mark.parametrize("nproc", [1, 2])
def test_ctrl_c_names_the_last_checkpoint_and_how_to_resume(tmp_path, encoded_dataset, nproc):
    run = tmp_path / "run"
    proc = _popen([*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--steps", "100000", "--ckpt-every", "2",
                   "--nproc", str(nproc)])
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "ckpt-0000002").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "interrupted; the last checkpoint is" in lines[0], err[-2000:]
    assert "--resume auto" in lines[0] and str(run) in lines[0] and "Traceback" not in err


def test_progress_in_a_pipe_is_plain_lines(tmp_path, encoded_dataset):
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--run-dir", tmp_path / "r", "--steps", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines[0] == "train 0/3" and lines[-1].startswith("train 3/3  loss "), lines  # first and last, plainly
    assert "steps/s" in lines[-1] and not any("━" in x for x in lines)
    assert r.stdout.count("training done") == 1


def test_seed_defaults_to_0_and_a_resumed_run_keeps_its_own(tmp_path, encoded_dataset):
    run = tmp_path / "r"
    args = [*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--ckpt-every", "2"]
    assert run_opensora(*args, "--steps", "2", "--seed", "7").returncode == 0
    r = run_opensora(*args, "--steps", "4", "--resume", "auto")  # no --seed: the run's own, not the default
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / "ckpt-0000004" / "trainer_state.json").read_text())["seed"] == 7
    assert run_opensora(*args, "--steps", "1", "--run-dir", tmp_path / "new").returncode == 0
    assert json.loads((tmp_path / "new" / "config.json").read_text())["seed"] == 0


def test_resume_auto_skips_a_damaged_checkpoint_and_a_torn_metrics_line(tmp_path, encoded_dataset):
    run = tmp_path / "run"
    args = [*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--ckpt-every", "2", "--keep", "2"]
    r = run_opensora(*args, "--steps", "4")
    assert r.returncode == 0, r.stderr[-3000:]
    newest = run / "ckpt-0000004"
    weights = next((newest / "model").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1000])  # truncated on disk
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # a line torn by a kill
    r = run_opensora(*args, "--steps", "6", "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipping" in r.stderr and "ckpt-0000004" in r.stderr and "truncated" in r.stderr
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # continued from step 2, the torn line dropped


def test_a_planted_optimizer_pickle_is_refused_not_run(tmp_path, encoded_dataset):
    import pickle

    run = tmp_path / "run"
    args = [*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--plugin", "ddp"]
    assert run_opensora(*args, "--steps", "1").returncode == 0
    ckpt = run / "ckpt-0000001"
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    opt = ckpt / "optimizer"  # ddp saves one file, the other plugins a folder of shards
    files = [opt] if opt.is_file() else [p for p in opt.rglob("*.bin")]
    assert files
    for p in files:
        p.write_bytes(pickle.dumps(Payload()))
    r = run_opensora(*args, "--steps", "2", "--resume", str(ckpt))
    assert r.returncode == 2 and "optimizer state holds more than tensors" in r.stderr, r.stderr[-2000:]
    assert not marker.exists()


def test_token_budget_trains_end_to_end(tmp_path, encoded_dataset):
    run = tmp_path / "run"
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--steps", "3", "--max-tokens-per-batch", "200")
    assert r.returncode == 0, r.stderr[-3000:]
    # 4x16x16 latents have 4*8*8 = 256 tokens at patch 2: batch 1; 4x16x24 have 384: batch 1 too
    assert "batch/rank" in r.stdout
    samples = [json.loads(x)["samples"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert samples == [1, 1, 1]


def test_workers_start_from_a_folder_holding_an_opensora_directory(tmp_path, encoded_dataset):
    """The parent of a `git clone` holds opensora/: workers must import the installed package."""
    (tmp_path / "opensora").mkdir()
    (tmp_path / "opensora" / "README.md").write_text("a clone's folder, not the package\n")
    import shutil

    script = shutil.which("opensora")  # the console script, as a user runs it (not `python -c`)
    assert script is not None
    r = subprocess.run([script, *TRAIN, "--data", encoded_dataset, "--run-dir", tmp_path / "run", "--steps", "1",
                        "--nproc", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_ema_warms_up_and_tensorboard_keeps_every_step_across_a_resume(tmp_path, encoded_dataset):
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from opensora.checkpoint import load_dit
    from opensora.models.presets import create_model
    from opensora.training.trainer import ema_decay_at

    assert ema_decay_at(0.9999, 0) == 0.1 and ema_decay_at(0.9999, 2000) < 0.996 and ema_decay_at(0.99, 10**6) == 0.99
    run = tmp_path / "run"
    args = [*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--ckpt-every", "2"]
    assert run_opensora(*args, "--steps", "4").returncode == 0
    r = run_opensora(*args, "--steps", "6", "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    # The EMA (default decay 0.9999) has moved with the model instead of staying at the initial weights.
    model, ema = load_dit(run / "ckpt-0000006" / "model"), load_dit(run / "ckpt-0000006" / "ema")
    torch.manual_seed(0)
    init = create_model("DiT/T-2", model.config.in_channels, model.config.condition, model.config.text_dim,
                        model.config.text_len)

    def dist(a, b):
        return sum((x - y).pow(2).sum() for x, y in zip(a.parameters(), b.parameters())).sqrt().item()

    assert dist(ema, model) < 0.5 * dist(init, model)


def test_plan_reports_and_the_preflight_refuses_what_cannot_fit(tmp_path, encoded_dataset):
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--plan", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(r.stdout)
    assert plan["params"] > 0 and plan["tokens"] == 4 * 8 * 12 and plan["batch_per_rank"] == 4 and plan["fits"]
    mem = plan["memory"]
    assert mem["total"] == sum(v for k, v in mem.items() if k.startswith(("weights", "gradients", "optimizer", "EMA",
                                                                         "fixed"))) + mem["activations"]
    assert mem["total_with_grad_checkpoint"] < mem["total_without_grad_checkpoint"]
    r = run_opensora(*TRAIN, "--data", encoded_dataset, "--plan")
    assert r.returncode == 0 and "peak per rank" in r.stdout and "time per step" in r.stdout
    run = tmp_path / "run"
    big = ["train", "--data", encoded_dataset, "--model", "DiT/XL-2", "--batch-size", "256", "--device", "cpu",
           "--num-workers", "0", "--run-dir", run, "--steps", "1"]
    r = run_opensora(*big)
    assert r.returncode == 2 and "--force" in r.stderr and "would fit with" in r.stderr and "--batch-size" in r.stderr
    assert len([x for x in r.stderr.splitlines() if x.startswith("error")]) == 1 and "Traceback" not in r.stderr
    assert not run.exists()  # refused before anything was written


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_resume_on_another_process_count_continues_the_same_samples(tmp_path, encoded_dataset, before, after):
    """A lost node (2 -> 1) or a bigger allocation (1 -> 2): same global samples, noise and losses."""
    args = [*TRAIN, "--data", encoded_dataset, "--ckpt-every", "3"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    r = run_opensora(*args, "--run-dir", full, "--steps", "6", "--nproc", str(before))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_opensora(*args, "--run-dir", cut, "--steps", "3", "--nproc", str(before))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_opensora(*args, "--run-dir", cut, "--steps", "6", "--nproc", str(after), "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _losses(full), _losses(cut)
    assert len(a) == len(b) == 6
    assert a[:3] == b[:3]
    for x, y in zip(a[3:], b[3:]):
        assert abs(x - y) <= 1e-4 * abs(x), (a, b)


def test_resume_checks_what_it_resumes_and_init_from_starts_anew(tmp_path, encoded_dataset, tiny_text_encoder):
    run = tmp_path / "run"
    base = ["train", "--num-workers", "0", "--device", "cpu", "--run-dir", run]
    r = run_opensora(*base, "--data", encoded_dataset, "--model", "DiT/T-2", "--batch-size", "4", "--steps", "2",
                     "--lr", "2e-3")
    assert r.returncode == 0, r.stderr[-2000:]
    # meaning-changing flags: refused, each listed, with the way out
    r = run_opensora(*base, "--resume", "auto", "--steps", "4", "--model", "DiT/T-4", "--condition", "token-concat",
                     "--lr", "5e-2")
    assert r.returncode == 2, r.stderr[-2000:]
    err = [x for x in r.stderr.splitlines() if x.startswith("error")]
    assert len(err) == 1 and "--model DiT/T-2 (now DiT/T-4)" in err[0] and "--condition cross-attn (now token-concat)" in err[0]
    assert "--init-from" in err[0] and "--lr" not in err[0]
    r = run_opensora(*base, "--resume", "auto", "--steps", "4", "--batch-size", "8")
    assert r.returncode == 2 and "--batch-size 4 (now 8)" in r.stderr
    other = tmp_path / "other"
    (tmp_path / "c.json").write_text(json.dumps([{"file": "v0.mp4", "captions": ["another caption"]}]))
    r = run_opensora("data", "encode", "-c", tmp_path / "c.json", "-v", encoded_dataset.parent / "videos", "-o", other,
                     "--text-encoder", tiny_text_encoder, "--num-workers", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_opensora(*base, "--resume", "auto", "--steps", "4", "--data", other)
    assert r.returncode == 2 and "--data" in r.stderr and "other rows" in r.stderr
    assert len(list(run.glob("ckpt-*"))) == 1  # nothing was trained by the refused runs
    # options not given are the run's own: model, data, batch size, lr; a new lr is allowed and recorded
    r = run_opensora(*base, "--resume", "auto", "--steps", "4", "--lr", "1e-3")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((run / "ckpt-0000004" / "opensora.json").read_text())
    assert meta["model_name"] == "DiT/T-2" and meta["train_config"]["lr"] == 1e-3
    assert [json.loads(x)["lr"] for x in (run / "metrics.jsonl").read_text().splitlines()][2:] == [1e-3, 1e-3]
    # --init-from: a new run from the weights, here on the other dataset with another lr
    new = tmp_path / "new"
    r = run_opensora("train", "--num-workers", "0", "--device", "cpu", "--run-dir", new, "--data", other, "--model",
                     "DiT/T-2", "--init-from", run / "ckpt-0000004", "--steps", "1", "--lr", "5e-2", "--batch-size", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((new / "ckpt-0000001" / "opensora.json").read_text())["train_config"]["init_from"] == str(run / "ckpt-0000004")


def test_a_stopped_rank_stops_the_run_naming_it(tmp_path, encoded_dataset):
    """SIGSTOP (as a hung GPU or a stuck NFS read looks): the watchdog ends the run, not a hang."""
    run = tmp_path / "run"
    p = _popen([*TRAIN, "--data", encoded_dataset, "--run-dir", run, "--steps", "100000", "--ckpt-every", "100000",
                "--nproc", "2", "--hang-timeout", "6"])
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and victim is None:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 3:
            for child in psutil.Process(p.pid).children(recursive=True):
                try:
                    if child.environ().get("RANK") == "1":
                        victim = child
                except psutil.Error:
                    continue
        time.sleep(0.2)
    assert victim is not None
    victim.suspend()
    t0 = time.time()
    try:
        _, err = p.communicate(timeout=90)
    finally:
        if victim.is_running():
            victim.kill()
    assert time.time() - t0 < 60
    lines = [x for x in err.splitlines() if x.startswith("error")]
    assert p.returncode == 1 and len(lines) == 1, err[-2000:]
    assert "rank 1 stopped responding" in lines[0] and "last step" in lines[0] and "--resume auto" in lines[0]


def test_out_of_memory_at_run_time_is_one_line_naming_the_fixes(tmp_path, tiny_text_encoder):
    """Under a memory cap (as a container has), a run forced past the pre-flight fails in one line."""
    import resource

    from opensora.data.video import write_video
    from tests.conftest import moving_square_video

    vids = tmp_path / "v"
    vids.mkdir()
    write_video(vids / "a.mp4", moving_square_video(8, 128, 128), 8)
    (tmp_path / "c.json").write_text(json.dumps([{"file": "a.mp4", "captions": ["x"]}]))
    assert run_opensora("data", "encode", "-c", tmp_path / "c.json", "-v", vids, "-o", tmp_path / "d",
                        "--text-encoder", tiny_text_encoder, "--num-workers", "0").returncode == 0
    # 4 GiB: the step's activations do not fit; 3 GiB: the model, EMA and optimizer already do not (on this
    # machine; where the process's base size differs either message is right, so both are accepted)
    for gib in (4, 3):
        cap = gib * 2**30

        def limit(cap=cap):
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        r = run_opensora("train", "--data", tmp_path / "d", "--model", "DiT/S-4", "--batch-size", "1", "--steps", "1",
                         "--device", "cpu", "--num-workers", "0", "--run-dir", tmp_path / f"run{gib}", "--force",
                         preexec_fn=limit)
        lines = [x for x in r.stderr.splitlines() if x.startswith("error")]
        assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert ("out of memory at step 1" in lines[0] or "out of memory while building DiT/S-4" in lines[0])
        assert "train --plan" in lines[0]
