"""`opensora sample` end to end: real checkpoint, real mp4s decoded back with PyAV."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from opensora.data.video import probe_video, read_video

ARGS = ["--height", "16", "--width", "24", "--fps", "4", "--sec", "1", "--steps", "3"]


@pytest.mark.parametrize("cfg_flags", [["--cfg-scale", "3"], ["--disable-cfg"]], ids=["cfg", "no-cfg"])
def test_sample_writes_playable_mp4_with_sidecar_and_preview(cli, tmp_path, trained_checkpoint, cfg_flags):
    out = tmp_path / "v.mp4"
    r = cli("sample", "a red square", "--ckpt", trained_checkpoint, *ARGS, *cfg_flags, "-o", out, "--preview")
    assert r.code == 0, r.err
    info = probe_video(out)
    assert (info.codec, info.pix_fmt, info.width, info.height, info.fps, info.frames) == ("h264", "yuv420p", 24, 16, 4.0, 4)
    frames, _ = read_video(out)
    assert frames.shape == (4, 16, 24, 3)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["prompt"] == "a red square" and side["seed"] == 0 and side["steps"] == 3
    assert side["cfg_scale"] == (None if "--disable-cfg" in cfg_flags else 3.0)
    assert side["checkpoint"] == str(trained_checkpoint.resolve()) and side["weights"] == "ema"
    from PIL import Image

    assert min(Image.open(out.with_suffix(".png")).size) >= 128  # 16x24 frames, enlarged to be seen
    assert side["precision"] == "fp32" and "sec" in side["command"]  # auto on the CPU
    umask = os.umask(0)
    os.umask(umask)
    assert out.with_suffix(".json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_same_seed_same_video_other_seed_differs(cli, tmp_path, trained_checkpoint):
    vids = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert cli("sample", "a square", "--ckpt", trained_checkpoint, *ARGS, "--seed", seed,
                   "-o", tmp_path / f"{name}.mp4").code == 0
        vids[name] = read_video(tmp_path / f"{name}.mp4")[0]
    np.testing.assert_array_equal(vids["a"], vids["b"])
    assert not np.array_equal(vids["a"], vids["c"])


def test_several_prompts_numbered_outputs_and_prompts_file(cli, tmp_path, trained_checkpoint):
    pf = tmp_path / "prompts.txt"
    pf.write_text("one\n\ntwo\n")
    r = cli("sample", "zero", "--prompts", pf, "--ckpt", trained_checkpoint, *ARGS, "-n", "2", "-o", tmp_path / "s.mp4")
    assert r.code == 0, r.err
    files = sorted(p.name for p in tmp_path.glob("s-*.mp4"))
    assert files == [f"s-{i:03d}.mp4" for i in range(6)]
    seeds = [json.loads((tmp_path / f"s-{i:03d}.json").read_text())["seed"] for i in range(6)]
    assert seeds == list(range(6))


def test_bad_height_is_one_line_with_nearest_values(cli, trained_checkpoint):
    r = cli("sample", "x", "--ckpt", trained_checkpoint, "--height", "15", "--steps", "1")
    assert r.code == 2
    lines = [x for x in r.err.splitlines() if x.strip()]
    assert len(lines) == 1 and "--height 15" in lines[0] and "14 or 16" in lines[0]


def test_default_checkpoint_is_newest_run(cli, tmp_path, trained_checkpoint, isolated_user_dirs, monkeypatch):
    r = cli("sample", "x", *ARGS, "-o", tmp_path / "x.mp4")
    assert r.code == 2 and "no checkpoint" in r.err
    import shutil

    home = isolated_user_dirs / "home"
    shutil.copytree(trained_checkpoint.parent, home / "demo" / "run")  # what `opensora demo` leaves
    r = cli("sample", "x", *ARGS, "-o", tmp_path / "x.mp4")
    assert r.code == 0, r.err
    assert str(home / "demo" / "run" / "ckpt-0000004") in r.out.replace("\n", "")
    shutil.copytree(trained_checkpoint.parent, home / "runs" / "r1")  # a newer run wins
    later = (home / "demo" / "run").stat().st_mtime + 60
    os.utime(home / "runs" / "r1", (later, later))  # copytree keeps the source's time
    r = cli("sample", "x", *ARGS, "-o", tmp_path / "y.mp4")
    assert r.code == 0, r.err
    assert str(home / "runs" / "r1" / "ckpt-0000004") in r.out.replace("\n", "") and (tmp_path / "y.mp4").exists()


def test_model_check_and_missing_ckpt(cli, tmp_path, trained_checkpoint):
    r = cli("sample", "x", "--ckpt", trained_checkpoint, "--model", "DiT/XL-2", *ARGS)
    assert r.code == 2 and "DiT/T-2" in r.err
    r = cli("sample", "x", "--ckpt", tmp_path, *ARGS)
    assert r.code == 2 and "not a checkpoint" in r.err


def test_run_directory_means_its_newest_checkpoint_and_prompt_comes_first(cli, tmp_path, trained_checkpoint):
    out = tmp_path / "x.mp4"
    r = cli("sample", "x", "--ckpt", trained_checkpoint.parent, *ARGS, "-o", out, "--preview")
    assert r.code == 0, r.err
    assert json.loads(out.with_suffix(".json").read_text())["checkpoint"] == str(trained_checkpoint.resolve())
    assert out.with_suffix(".png").exists()
    r = cli("sample", "y", "--ckpt", trained_checkpoint.parent, *ARGS, "-o", out)
    assert r.code == 2 and "x.mp4 exists; pass --overwrite" in r.err  # never replaced without asking
    r = cli("sample", "y", "--ckpt", trained_checkpoint.parent, *ARGS, "-o", out, "--overwrite")  # without --preview
    assert r.code == 0, r.err
    assert not out.with_suffix(".png").exists()  # no stale sheet of the previous prompt beside the new video
    r = cli("sample", "--ckpt", tmp_path / "nowhere")
    assert r.code == 2 and "no prompt given" in r.err  # the missing prompt is named before the checkpoint


@pytest.mark.parametrize("fast", [False, True], ids=["emulated-bf16", "fast-bf16"])
def test_bf16_on_a_cpu_without_fast_bf16_is_one_warning_line(cli, tmp_path, trained_checkpoint, monkeypatch, fast):
    import opensora.devices

    monkeypatch.setattr(opensora.devices, "cpu_bf16_is_fast", lambda: fast)
    out = tmp_path / "x.mp4"
    r = cli("sample", "x", "--ckpt", trained_checkpoint, *ARGS, "--precision", "bf16", "-o", out, "--device", "cpu")
    assert r.code == 0, r.err
    assert probe_video(out).frames == 4
    warned = [line for line in r.err.splitlines() if "warning:" in line]
    if fast:
        assert warned == []
    else:
        assert len(warned) == 1 and warned[0].startswith("warning: --precision bf16") and "--precision fp32" in warned[0]
        assert "Traceback" not in r.err and "UserWarning" not in r.err


def test_sample_says_what_it_will_do_and_ctrl_c_acts_at_once(tmp_path, trained_checkpoint):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "big.mp4"
    cmd = [sys.executable, "-c", "from opensora_cli.main import run; run()", "sample", "a red square", "--ckpt",
           str(trained_checkpoint), "--height", "256", "--width", "256", "--frames", "40", "--steps", "50",
           "--device", "cpu", "-o", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:  # the plan line and the progress at step 0 come before any step
        line = p.stderr.readline()
        lines.append(line)
        if line.startswith("denoise 0/50"):
            break
    time.sleep(1.0)  # inside the first (long) denoising step
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=30)
    assert time.time() - t0 < 5  # not when the step returns
    assert p.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert "40x256x256 (TxHxW; 655,360 tokens), 50 steps x 2 forwards, about" in stdout.replace("\n", " ")
    assert any("takes about" in x and "on the CPU" in x for x in lines)  # a long CPU run says so
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))
