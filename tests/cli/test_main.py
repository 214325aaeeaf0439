"""CLI conventions: --version, --help with examples, one-line errors, exit codes, config."""

from __future__ import annotations

import re

import pytest

from opensora import __version__
from opensora_cli.main import app

COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]
GROUPS = {g.name: g.typer_instance for g in app.registered_groups}


def _all_command_paths():
    paths = [[c] for c in COMMANDS]
    for name, sub in GROUPS.items():
        paths += [[name, c.name or c.callback.__name__.rstrip("_")] for c in sub.registered_commands]
    return paths


def test_version(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"opensora {__version__}"


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(cli, path):
    r = cli(*path, "--help")
    assert r.code == 0, r.err
    assert re.search(r"Examples?", r.out), f"`opensora {' '.join(path)} --help` shows no example"


def test_unknown_option_is_one_line_exit_2(cli):
    r = cli("data", "collate", "--bogus")
    assert r.code == 2
    lines = [x for x in r.err.splitlines() if x.strip()]
    assert len(lines) == 1 and "--bogus" in lines[0] and "Traceback" not in r.err


def test_missing_directory_names_option_and_fix(cli, tmp_path):
    r = cli("data", "collate", "-d", tmp_path / "nope")
    assert r.code == 2
    assert "--dataset-dir" in r.err and "opensora data download" in r.err and "Traceback" not in r.err


def test_debug_shows_traceback(cli, tmp_path):
    from opensora.errors import UserError

    with pytest.raises(UserError):
        cli("--debug", "data", "collate", "-d", tmp_path / "nope")


def test_config_set_show_and_precedence(cli, monkeypatch, isolated_user_dirs):
    assert cli("config", "set", "train.model", "DiT/B-2").code == 0
    r = cli("config", "show", "--json")
    assert '"train.model": "DiT/B-2"' in r.out
    monkeypatch.setenv("OPENSORA_TRAIN_MODEL", "DiT/L-2")
    assert '"train.model": "DiT/L-2"' in cli("config", "show", "--json").out
    assert cli("config", "path").out.strip() == str(isolated_user_dirs / "config.toml")
    assert cli("config", "unset", "train.model").code == 0


def test_config_errors_name_file_and_key(cli, isolated_user_dirs):
    r = cli("config", "set", "train.modle", "x")
    assert r.code == 2 and "train.modle" in r.err and "train.model" in r.err
    r = cli("config", "set", "train.steps", "many")
    assert r.code == 2 and "train.steps must be int" in r.err
    (isolated_user_dirs / "config.toml").write_text('[train]\nsteps = "x"\nbogus = 1\n')
    r = cli("config", "show")
    assert r.code == 2
    assert "config.toml" in r.err and "train.bogus" in r.err and "train.steps" in r.err
    (isolated_user_dirs / "config.toml").write_text("[train\n")
    r = cli("config", "show")
    assert r.code == 2 and "config.toml" in r.err and "delete" in r.err


def test_a_broken_config_file_does_not_lock_out_what_needs_no_defaults(cli, isolated_user_dirs, video_dir):
    cfg = isolated_user_dirs / "config.toml"
    cfg.write_text("[train\n")
    r = cli("config", "path")
    assert r.code == 0 and r.out.strip() == str(cfg)  # the file the error names can be found
    assert cli("inspect", video_dir / "a.mp4").code == 0  # unrelated commands still work
    assert cli("config", "keys").code == 0
    r = cli("config", "set", "train.steps", "10")
    assert r.code == 2 and str(cfg) in r.err and "line 1" in r.err  # never rewrites a file it cannot read
    cfg.write_bytes(b"[train]\nmodel = '\xff'\n")
    r = cli("config", "show")
    assert r.code == 2 and "not UTF-8" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize(("key", "value", "message"), [
    ("train.model", "DiT/Q-9", "train.model = 'DiT/Q-9' is not one of"),
    ("encode.compression", "foo", "encode.compression = 'foo' is not one of raw, vqvae, sdvae"),
    ("train.lr", "-1", "train.lr = -1.0 must be a finite number > 0"),
    ("sample.cfg_scale", "nan", "sample.cfg_scale = nan must be a finite number"),
    ("train.plugin", "zero3", "train.plugin = 'zero3' is not one of"),
])
def test_config_set_checks_the_value(cli, isolated_user_dirs, key, value, message):
    r = cli("config", "set", key, value)
    assert r.code == 2 and message in r.err, r.err
    assert not (isolated_user_dirs / "config.toml").exists()  # nothing written


def test_config_unset_and_environment_are_checked(cli, monkeypatch):
    r = cli("config", "unset", "train.nothing")
    assert r.code == 2 and "unknown config key 'train.nothing'" in r.err
    r = cli("config", "unset", "train.model")
    assert r.code == 0 and "was not set" in r.out
    monkeypatch.setenv("OPENSORA_TRAIN_STEPZ", "3")
    r = cli("config", "show")
    assert r.code == 2 and "OPENSORA_TRAIN_STEPZ is not a setting (did you mean OPENSORA_TRAIN_STEPS?)" in r.err
    monkeypatch.delenv("OPENSORA_TRAIN_STEPZ")
    monkeypatch.setenv("OPENSORA_TRAIN_MODEL", "DiT/Q-9")
    r = cli("config", "show")
    assert r.code == 2 and "environment variable OPENSORA_TRAIN_MODEL" in r.err


def test_inspect_video_table_and_json(cli, video_dir):
    r = cli("inspect", video_dir / "a.mp4", "--json")
    assert r.code == 0
    import json

    info = json.loads(r.out)
    assert info["kind"] == "video" and info["width"] == 48 and info["height"] == 32
    assert info["frames"] == 8 and info["fps"] == 8.0 and abs(info["duration"] - 1.0) < 1e-6
    assert info["codec"] == "h264"
    r = cli("inspect", video_dir / "a.mp4")
    assert r.code == 0 and "h264" in r.out


def test_inspect_missing_path(cli, tmp_path):
    r = cli("inspect", tmp_path / "nothing.mp4")
    assert r.code == 2 and "nothing.mp4" in r.err


def test_ctrl_c_exits_130_cleanly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.data.msrvtt_fixture import ArchiveServer

    with ArchiveServer({"big.zip": b"x" * 10_000_000}, delay=0.05) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from opensora_cli.main import run; run()", "data", "download",
             "--url", srv.url("big.zip"), "--dest", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        part = tmp_path / "big.zip.part"
        while time.time() < deadline and not (part.exists() and part.stat().st_size > 0):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err


def test_doctor_reports_and_fails_on_a_broken_config(cli, isolated_user_dirs):
    r = cli("doctor")
    assert r.code == 0, r.out
    for name in ("python", "torch", "colossalai", "diffusers", "transformers", "datasets", "av", "hub", "config", "home"):
        assert any(line.startswith(f"│ {name} ") for line in r.out.splitlines()), name
    (isolated_user_dirs / "config.toml").write_text("[train\n")
    r = cli("doctor")
    assert r.code == 1 and "PROBLEM" in r.out
    assert any(line.startswith("fix (config): config file") and "delete" in line for line in r.out.splitlines())


def test_short_flags_mean_one_thing(cli):
    """-d is always an input (dataset), -o always the output, in every command that has them."""
    import re

    helps = {c: cli(*c.split(), "--help").out for c in ("data download", "data collate", "data encode", "train",
                                                         "sample", "demo")}
    for command, text in helps.items():
        for line in (x for x in text.splitlines() if x.startswith("│ --")):  # the option rows
            if re.search(r"\s-d\s", line):
                assert "--data" in line or "--dataset-dir" in line, (command, line)
            if re.search(r"\s-o\s", line):
                assert "--out" in line or "--dest" in line, (command, line)
    assert re.search(r"--dest,--out\s+-o\s", helps["data download"])
