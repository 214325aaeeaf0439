"""The bad-input corpus: each row is a mistake a user makes, run through the CLI.

Every row asserts the contract: the exit code (2 for bad input, 1 for a runtime failure), one line
naming the file or option, no traceback, and no partial output. Add a row for every bug found.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from opensora.fsutil import DirectoryLock
from tests.conftest import SHARED


@dataclass
class Case:
    """One bad input: the command (with {placeholders}), what the error must name, the exit code."""

    args: list[str]
    names: str
    code: int = 2
    env: dict = field(default_factory=dict)
    no_output: str | None = None  # a path (with placeholders) that must not exist afterwards


@pytest.fixture()
def world(tmp_path, video_dir, tiny_text_encoder, trained_checkpoint) -> dict[str, str]:
    """Paths the cases refer to: good inputs beside bad ones."""
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps([{"file": "a.mp4", "captions": ["x"]}]))
    (tmp_path / "latin1.json").write_bytes('[{"file": "a.mp4", "captions": ["caf\xe9"]}]'.encode("latin-1"))
    (tmp_path / "latin1.txt").write_bytes("un caf\xe9\n".encode("latin-1"))
    (tmp_path / "latin1.toml").write_bytes('[sample]\nsampler = "caf\xe9"\n'.encode("latin-1"))
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "emptylist.json").write_text("[]")
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "config-dir").mkdir()
    damaged = tmp_path / "damaged-ckpt"
    shutil.copytree(trained_checkpoint, damaged)
    weights = next((damaged / "ema").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    return {"tmp": str(tmp_path), "caps": str(caps), "videos": str(video_dir), "te": str(tiny_text_encoder),
            "ckpt": str(trained_checkpoint), "damaged": str(damaged)}


SAMPLE = ["sample", "a red square", "--ckpt", "{ckpt}", "--height", "16", "--width", "16", "--frames", "2",
          "--steps", "2", "--device", "cpu"]
ENCODE = ["data", "encode", "-c", "{caps}", "-v", "{videos}", "--text-encoder", "{te}", "--num-workers", "0"]

CASES = {
    "non-utf8 captions": Case(["data", "encode", "-c", "{tmp}/latin1.json", "-v", "{videos}", "-o", "{tmp}/o"],
                              "latin1.json: not UTF-8", no_output="{tmp}/o"),
    "empty captions file": Case(["data", "encode", "-c", "{tmp}/empty.json", "-v", "{videos}", "-o", "{tmp}/o"],
                                "empty.json: no entries", no_output="{tmp}/o"),
    "empty captions list": Case(["data", "encode", "-c", "{tmp}/emptylist.json", "-v", "{videos}", "-o", "{tmp}/o"],
                                "emptylist.json: no entries", no_output="{tmp}/o"),
    "encode --fps nan": Case([*ENCODE, "-o", "{tmp}/o", "--fps", "nan"], "--fps nan", no_output="{tmp}/o"),
    "encode --fps 0": Case([*ENCODE, "-o", "{tmp}/o", "--fps", "0"], "--fps 0", no_output="{tmp}/o"),
    "encode --max-frames 0": Case([*ENCODE, "-o", "{tmp}/o", "--max-frames", "0"], "--max-frames 0",
                                  no_output="{tmp}/o"),
    "encode --resolution 999p": Case([*ENCODE, "-o", "{tmp}/o", "--resolution", "999p"], "--resolution '999p'",
                                     no_output="{tmp}/o"),
    "encode --out is a file": Case([*ENCODE, "-o", "{tmp}/a-file"], "--out {tmp}/a-file is a file"),
    "non-utf8 prompts file": Case(["sample", "--prompts", "{tmp}/latin1.txt", "--ckpt", "{ckpt}", "-o", "{tmp}/s.mp4"],
                                  "latin1.txt: not UTF-8", no_output="{tmp}/s.mp4"),
    "non-utf8 config file": Case(["train", "--data", "{tmp}"], "latin1.toml: not UTF-8 text",
                                 env={"OPENSORA_CONFIG": "{tmp}/latin1.toml"}),
    "config path is a directory": Case(["train", "--data", "{tmp}"], "config-dir: Is a directory",
                                       env={"OPENSORA_CONFIG": "{tmp}/config-dir"}),
    "config value nan": Case(["config", "set", "sample.cfg_scale", "nan"], "sample.cfg_scale = nan",
                             env={"OPENSORA_CONFIG": "{tmp}/new.toml"}, no_output="{tmp}/new.toml"),
    "config steps -5": Case(["config", "set", "train.steps", "-5"], "train.steps = -5",
                            env={"OPENSORA_CONFIG": "{tmp}/new.toml"}, no_output="{tmp}/new.toml"),
    "config num_workers -3": Case(["config", "set", "encode.num_workers", "-3"], "encode.num_workers = -3",
                                  env={"OPENSORA_CONFIG": "{tmp}/new.toml"}, no_output="{tmp}/new.toml"),
    "sample --cfg-scale nan": Case([*SAMPLE, "-o", "{tmp}/s.mp4", "--cfg-scale", "nan"], "--cfg-scale nan",
                                   no_output="{tmp}/s.mp4"),
    "sample --cfg-scale inf": Case([*SAMPLE, "-o", "{tmp}/s.mp4", "--cfg-scale", "inf"], "--cfg-scale inf",
                                   no_output="{tmp}/s.mp4"),
    "sample -n 0": Case([*SAMPLE, "-o", "{tmp}/s.mp4", "-n", "0"], "--num-samples 0", no_output="{tmp}/s.mp4"),
    "sample -n -1": Case([*SAMPLE, "-o", "{tmp}/s.mp4", "-n", "-1"], "--num-samples -1", no_output="{tmp}/s.mp4"),
    "sample --fps 0": Case([*SAMPLE, "-o", "{tmp}/s.mp4", "--fps", "0"], "--fps 0", no_output="{tmp}/s.mp4"),
    "sample --steps 0": Case([*SAMPLE[:-4], "--steps", "0", "-o", "{tmp}/s.mp4"], "--steps 0", no_output="{tmp}/s.mp4"),
    "sample -o under a file": Case([*SAMPLE, "-o", "{tmp}/a-file/s.mp4"], "-o {tmp}/a-file"),
    "sample bigger than the disk": Case([*SAMPLE[:-6], "--frames", "100000", "--height", "4096", "--width", "4096",
                                         "--device", "cpu", "-o", "{tmp}/s.mp4"], "MiB needed", no_output="{tmp}/s.mp4"),
    "sample odd size": Case([*SAMPLE, "-o", "{tmp}/s.mp4", "--height", "15"], "--height 15 is not a multiple of 2",
                            no_output="{tmp}/s.mp4"),
    "sample damaged checkpoint": Case(["sample", "x", "--ckpt", "{damaged}", "-o", "{tmp}/s.mp4", "--device", "cpu"],
                                      "ema/diffusion_pytorch_model.safetensors is truncated", no_output="{tmp}/s.mp4"),
    "train --steps -5": Case(["train", "--data", "{tmp}", "--steps", "-5", "--run-dir", "{tmp}/run"], "--steps -5",
                             no_output="{tmp}/run"),
    "train --max-tokens-per-batch 0": Case(["train", "--data", "{tmp}", "--max-tokens-per-batch", "0",
                                            "--run-dir", "{tmp}/run"], "--max-tokens-per-batch 0", no_output="{tmp}/run"),
    "train --lr nan": Case(["train", "--data", "{tmp}", "--lr", "nan", "--run-dir", "{tmp}/run"], "--lr nan",
                           no_output="{tmp}/run"),
    "train --nproc 0": Case(["train", "--data", "{tmp}", "--nproc", "0", "--run-dir", "{tmp}/run"], "--nproc 0",
                            no_output="{tmp}/run"),
    "demo --steps 0": Case(["demo", "--steps", "0", "--out", "{tmp}/demo"], "--steps 0", no_output="{tmp}/demo"),
    "download --videos-per-combo 0": Case(["data", "download", "shapes", "--dest", "{tmp}/d", "--videos-per-combo", "0"],
                                          "--videos-per-combo 0", no_output="{tmp}/d"),
    "train --seed -1": Case(["train", "--data", "{tmp}", "--seed", "-1", "--run-dir", "{tmp}/run"], "--seed -1",
                            no_output="{tmp}/run"),
    "sample --seed -1": Case([*SAMPLE, "-o", "{tmp}/s.mp4", "--seed", "-1"], "--seed -1", no_output="{tmp}/s.mp4"),
    "download --stall-timeout nan": Case(["data", "download", "--dest", "{tmp}/d", "--stall-timeout", "nan"],
                                         "--stall-timeout nan", no_output="{tmp}/d"),
}


def _fill(x: str, w: dict[str, str]) -> str:
    return x.format(**w)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_corpus(name, world, cli, monkeypatch):
    case = CASES[name]
    for k, v in case.env.items():
        monkeypatch.setenv(k, _fill(v, world))
    r = cli(*[_fill(a, world) for a in case.args])
    err_lines = [x for x in r.err.splitlines() if x.strip()]
    assert r.code == case.code, r.err
    assert "Traceback" not in r.err and "Traceback" not in r.out
    assert len(err_lines) == 1 and err_lines[0].startswith("error:"), r.err
    assert _fill(case.names, world) in err_lines[0], err_lines[0]
    if case.no_output:
        assert not Path(_fill(case.no_output, world)).exists()


def test_one_bad_entry_never_stops_the_rest(cli, tmp_path, video_dir, tiny_text_encoder):
    items = [{"file": "x" * 300 + ".mp4", "captions": ["a name too long for the file system"]},
             {"file": "a.mp4", "captions": []},
             {"file": "b.mp4", "captions": ["fine"]}]
    if SHARED.exists():
        items += [{"file": str(p.relative_to(SHARED / "videos")), "captions": ["trap"]}
                  for p in sorted((SHARED / "videos").rglob("*")) if p.is_file()]
    (tmp_path / "c.json").write_text(json.dumps(items))
    r = cli("data", "encode", "-c", tmp_path / "c.json", "-v", video_dir, "-o", tmp_path / "o",
            "--text-encoder", tiny_text_encoder, "--num-workers", "0", "--fps", "2", "--max-frames", "4",
            "--too-long", "first")
    assert r.code == 1 and "Traceback" not in r.err  # some pairs failed; the rest was encoded
    errors = {e["file"]: e for e in map(json.loads, (tmp_path / "o" / "errors.jsonl").read_text().splitlines())}
    assert errors["x" * 300 + ".mp4"]["reason"] == "unreadable" and "too long" in errors["x" * 300 + ".mp4"]["detail"]
    assert errors["a.mp4"]["reason"] == "no captions"
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["rows"] >= 1


def test_a_second_writer_is_refused_naming_the_other(cli, tmp_path, video_dir, tiny_text_encoder, encoded_dataset):
    (tmp_path / "c.json").write_text(json.dumps([{"file": "a.mp4", "captions": ["x"]}]))
    out = tmp_path / "o"
    with DirectoryLock(out, "--out"):
        r = cli("data", "encode", "-c", tmp_path / "c.json", "-v", video_dir, "-o", out,
                "--text-encoder", tiny_text_encoder, "--num-workers", "0")
    assert r.code == 2 and f"in use by process {os.getpid()}" in r.err
    assert not (out / "manifest.json").exists()
    run = tmp_path / "run"
    with DirectoryLock(run, "--run-dir"):
        r = cli("train", "--data", encoded_dataset, "--model", "DiT/T-2", "--steps", "1", "--run-dir", run,
                "--device", "cpu", "--num-workers", "0")
    assert r.code == 2 and f"--run-dir {run} is in use by process {os.getpid()}" in r.err
    assert {p.name for p in run.iterdir()} == {".lock"}  # the refused run wrote nothing


def test_a_disk_too_small_for_a_checkpoint_is_refused_before_training(cli, tmp_path, encoded_dataset, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    r = cli("train", "--data", encoded_dataset, "--model", "DiT/T-2", "--steps", "1", "--run-dir", tmp_path / "run",
            "--device", "cpu", "--num-workers", "0")
    assert r.code == 2 and "free on its disk" in r.err and "--force" in r.err
    assert not (tmp_path / "run").exists()
