"""One schema of settings: every flag of every command is a config key with a shown default, and the
environment and config file reach every one of them (they come from the library's config classes)."""

from __future__ import annotations

import json

import pytest


def _commands():
    import typer.main

    from opensora_cli.main import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    yield from walk(typer.main.get_command(app), [])


def test_every_flag_has_a_config_key_an_env_variable_and_a_shown_default():
    from opensora_cli.options import ACTIONS, COMMAND_SECTIONS, describe, setting_keys
    from opensora_cli.settings import schema

    seen = set()
    for path, cmd in _commands():
        options = [p for p in cmd.params if p.param_type_name == "option" and p.name not in ACTIONS]
        keys = setting_keys(cmd.name, [p.name for p in options])
        for p in options:
            assert p.name in keys, f"`opensora {path}` {p.opts[0]} is not a setting of a config class"
            key = keys[p.name]
            assert key.flag in p.opts, (path, key.flag, p.opts)
            text = describe(key)
            assert "default:" in text and key.key in text and key.help.split()[0] in text, text
            seen.add(key.key)
    # ... and every setting of a command's section is one of its flags (nothing settable only by file)
    sections = set(COMMAND_SECTIONS.values())
    assert {k for k in schema() if k.split(".")[0] in sections} == seen


def test_help_shows_the_default_and_where_it_comes_from(cli, isolated_user_dirs, monkeypatch):
    r = cli("train", "--help")
    assert r.code == 0 and "default:0;configtrain.warmup_steps" in "".join(r.out.replace("│", "").split())
    monkeypatch.setenv("OPENSORA_TRAIN_WARMUP_STEPS", "7")
    flat = "".join(cli("train", "--help").out.replace("│", "").split())
    assert "default:7fromtheenvironment;builtin:0" in flat


@pytest.mark.parametrize("key, raw, value", [("train.warmup_steps", "7", 7), ("train.seed", "3", 3),
                                             ("train.sp", "ulysses", "ulysses"), ("train.device", "cpu", "cpu"),
                                             ("train.weight_decay", "0.05", 0.05), ("encode.too_long", "first", "first"),
                                             ("sample.precision", "fp32", "fp32"), ("demo.seed", "2", 2)])
def test_flags_that_used_to_ignore_the_config_file_read_it(cli, isolated_user_dirs, key, raw, value):
    assert cli("config", "set", key, raw).code == 0
    shown = json.loads(cli("config", "show", "--json").out)["values"]
    assert shown[key] == value


def test_config_and_env_values_reach_the_library_config(isolated_user_dirs, monkeypatch):
    from opensora_cli.settings import Settings, build_config, set_value

    set_value("train.warmup_steps", "5")
    set_value("train.grad_checkpoint", "true")
    monkeypatch.setenv("OPENSORA_TRAIN_NUM_WORKERS", "0")
    cfg = build_config(Settings.load(), "train", {"lr": 3e-4, "grad_checkpoint": None})
    assert (cfg.warmup_steps, cfg.grad_checkpoint, cfg.num_workers, cfg.lr, cfg.steps) == (5, True, 0, 3e-4, 1000)
    cfg = build_config(Settings.load(), "train", {"grad_checkpoint": False})  # --no-grad-checkpoint wins
    assert cfg.grad_checkpoint is False


def test_a_bad_value_from_any_source_names_it(cli, isolated_user_dirs, monkeypatch):
    monkeypatch.setenv("OPENSORA_TRAIN_CONDITION", "cross-atn")
    r = cli("train", "--data", str(isolated_user_dirs), "--plan")
    assert r.code == 2 and "OPENSORA_TRAIN_CONDITION: train.condition = 'cross-atn'" in r.err
    assert "did you mean cross-attn?" in r.err
