"""`data encode` end to end: real PyAV videos, tiny real models, real Arrow shards, crash + resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from opensora.data.dataset import EncodedDataset
from opensora.data.video import write_video
from tests.conftest import SHARED, moving_square_video, run_opensora


def _captions(path: Path, items: list[dict], jsonl: bool = False) -> Path:
    if jsonl:
        path.write_text("".join(json.dumps(x) + "\n" for x in items))
    else:
        path.write_text(json.dumps(items))
    return path


def test_encode_raw_rows_shapes_and_inspect(cli, tmp_path, video_dir, tiny_text_encoder):
    caps = _captions(tmp_path / "c.jsonl", [
        {"file": "a.mp4", "captions": ["a red square", "a square moving right"]},
        {"file": "b.mp4", "captions": ["a tall video"]},
        {"file": "c.mp4", "captions": ["a big one"]},
    ], jsonl=True)
    out = tmp_path / "out"
    r = cli("data", "encode", "-c", caps, "-v", video_dir, "-o", out, "--text-encoder", tiny_text_encoder,
            "--num-workers", "0")
    assert r.code == 0, r.err
    ds = EncodedDataset(out)
    assert len(ds) == 4
    assert [ds[i]["caption"] for i in range(4)] == ["a red square", "a square moving right", "a tall video", "a big one"]
    assert ds[0]["video"].shape == (8, 32, 48, 3) and ds[0]["video"].dtype == np.uint8
    assert ds[2]["video"].shape == (12, 48, 32, 3)  # dynamic resolution: kept as it is
    assert ds[0]["text"].shape == (16, 32)
    np.testing.assert_array_equal(ds[0]["video"], ds[1]["video"])  # two captions, same video ...
    assert np.shares_memory(ds[0]["video"], ds[1]["video"])  # ... stored once
    r = cli("inspect", out, "--json")
    info = json.loads(r.out)
    assert info["kind"] == "dataset" and info["rows"] == 4 and info["videos"] == 3 and info["captions"] == 4
    assert info["shapes"] == {"8x32x48x3": 2, "12x48x32x3": 1, "16x64x64x3": 1}
    assert info["video_bytes"] < 1.1 * (8 * 32 * 48 + 12 * 48 * 32 + 16 * 64 * 64) * 3
    assert "a red square" in info["sample_captions"]
    assert "latent shapes" in cli("inspect", out).out


def test_encode_fps_and_max_seconds_filter(cli, tmp_path, video_dir, tiny_text_encoder):
    caps = _captions(tmp_path / "c.json", [{"file": n, "captions": [n]} for n in ("a.mp4", "c.mp4")])
    out = tmp_path / "out"
    # c.mp4 is 16 frames at 16 fps = 1 s; a.mp4 is 8 frames at 8 fps = 1 s
    r = cli("data", "encode", "-c", caps, "-v", video_dir, "-o", out, "--text-encoder", tiny_text_encoder,
            "--fps", "4", "--max-frames", "4", "--num-workers", "0")
    assert r.code == 0, r.err
    ds = EncodedDataset(out)
    assert [ds.latent_shape(i) for i in range(len(ds))] == [(4, 32, 48, 3), (4, 64, 64, 3)]
    r = cli("data", "encode", "-c", caps, "-v", video_dir, "-o", tmp_path / "o2", "--text-encoder", tiny_text_encoder,
            "--max-seconds", "0.5", "--num-workers", "0")
    assert r.code == 0 and "filtered" in r.out  # filtered only: still exit 0
    manifest = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert manifest["filtered"] == 2 and manifest["rows"] == 0


@pytest.mark.skipif(not SHARED.exists(), reason="shared test videos not present")
def test_bad_inputs_are_skipped_and_listed(cli, tmp_path, video_dir, tiny_text_encoder):
    vids = tmp_path / "videos"
    shutil.copytree(video_dir, vids)
    for name in ("decord/corrupted.mp4", "moviepy/result.webm", "moviepy/crunching.mp3", "decord/unordered.mov",
                 "torchcodec/var_fps_video.mp4"):
        shutil.copy(SHARED / "videos" / name, vids / Path(name).name)
    (vids / "truncated.mp4").write_bytes((video_dir / "c.mp4").read_bytes()[:2000])
    items = [
        {"file": "a.mp4", "captions": ["good", ""]},
        {"file": "corrupted.mp4", "captions": ["x"]},
        {"file": "result.webm", "captions": ["zero bytes"]},
        {"file": "crunching.mp3", "captions": ["audio only"]},
        {"file": "truncated.mp4", "captions": ["cut"]},
        {"file": "missing.mp4", "captions": ["gone"]},
        {"file": "../a.mp4", "captions": ["escape"]},
        {"file": str(vids / "a.mp4"), "captions": ["absolute"]},
        {"file": "unordered.mov", "captions": ["real file, pts out of order"]},
        {"file": "var_fps_video.mp4", "captions": ["variable frame rate"]},
    ]
    out = tmp_path / "out"
    r = cli("data", "encode", "-c", _captions(tmp_path / "c.json", items), "-v", vids, "-o", out,
            "--text-encoder", tiny_text_encoder, "--fps", "8", "--num-workers", "0")
    assert r.code == 1  # some pairs failed
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    reasons = {e["file"]: e["reason"] for e in errors}
    assert reasons["a.mp4"] == "empty caption"
    assert reasons["corrupted.mp4"] == "corrupt"
    assert reasons["result.webm"] == "empty file"
    assert reasons["crunching.mp3"] == "no video stream"
    assert reasons["truncated.mp4"] in ("corrupt", "unreadable", "no frames")
    assert reasons["missing.mp4"] == "missing"
    assert reasons["../a.mp4"] == "outside video dir"
    assert reasons[str(vids / "a.mp4")] == "outside video dir"
    ds = EncodedDataset(out)
    assert sorted(ds[i]["caption"] for i in range(len(ds))) == ["good", "real file, pts out of order", "variable frame rate"]
    assert "corrupted.mp4" in r.out and "errors.jsonl" in r.out


def test_malformed_captions_name_line_and_column(cli, tmp_path, video_dir):
    p = tmp_path / "c.jsonl"
    p.write_text('{"file": "a.mp4", "captions": ["x"]}\n{"file": "b.mp4", "captions": [}\n')
    r = cli("data", "encode", "-c", p, "-v", video_dir, "-o", tmp_path / "o")
    assert r.code == 2 and f"{p}:2:" in r.err and "Traceback" not in r.err
    p2 = tmp_path / "c.json"
    p2.write_text('[{"file": "a.mp4",\n "captions": ["x"]},\n  oops]')
    r = cli("data", "encode", "-c", p2, "-v", video_dir, "-o", tmp_path / "o")
    assert r.code == 2 and f"{p2}:3:" in r.err


def _cache(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["cache"]


def test_reruns_encode_only_what_changed(cli, tmp_path, video_dir, tiny_text_encoder):
    from opensora.text.clip import build_tiny_clip_text_encoder

    caps = _captions(tmp_path / "c.json", [{"file": "a.mp4", "captions": ["x", "y"]}, {"file": "b.mp4", "captions": ["x"]}])
    out = tmp_path / "o"
    args = ["data", "encode", "-c", caps, "-v", video_dir, "-o", out, "--num-workers", "0"]
    assert cli(*args, "--text-encoder", tiny_text_encoder).code == 0
    assert _cache(out) == {"videos_encoded": 2, "videos_reused": 0, "texts_encoded": 2, "texts_reused": 0}
    first = sorted(p.stat().st_mtime_ns for p in out.rglob("part-*.arrow"))
    assert cli(*args, "--text-encoder", tiny_text_encoder).code == 0  # nothing changed: nothing to do
    assert _cache(out) == {"videos_encoded": 0, "videos_reused": 2, "texts_encoded": 0, "texts_reused": 2}
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("part-*.arrow")) == first
    other = build_tiny_clip_text_encoder(tmp_path / "clip2", hidden=32, layers=1, heads=2, max_length=16, seed=1)
    assert cli(*args, "--text-encoder", other).code == 0  # a new text encoder reuses every video latent
    assert _cache(out) == {"videos_encoded": 0, "videos_reused": 2, "texts_encoded": 2, "texts_reused": 0}
    r = cli(*args, "--text-encoder", other, "--fps", "4")  # new decode settings reuse every text feature
    assert r.code == 0, r.err
    assert _cache(out) == {"videos_encoded": 2, "videos_reused": 0, "texts_encoded": 0, "texts_reused": 2}
    ds = EncodedDataset(out)
    assert ds.latent_shape(0) == (4, 32, 48, 3) and len(ds) == 3
    # replaced work is pruned: one part per store left
    assert len(list((out / "videos").glob("part-*.arrow"))) == 1 and len(list((out / "texts").glob("part-*.arrow"))) == 1
    # another dataset can copy what this one stored
    r = cli(*args[:6], "-o", tmp_path / "o2", "--num-workers", "0", "--text-encoder", other, "--fps", "4", "--reuse", out)
    assert r.code == 0, r.err
    assert _cache(tmp_path / "o2") == {"videos_encoded": 0, "videos_reused": 2, "texts_encoded": 0, "texts_reused": 2}


def test_a_failed_encode_does_not_block_the_corrected_rerun(cli, tmp_path, video_dir, tiny_text_encoder):
    caps = _captions(tmp_path / "c.json", [{"file": "a.mp4", "captions": ["x"]}])
    args = ["data", "encode", "-c", caps, "-v", video_dir, "-o", tmp_path / "o", "--num-workers", "0"]
    r = cli(*args, "--text-encoder", tmp_path / "no-such-encoder")  # fails before writing anything
    assert r.code == 2 and not (tmp_path / "o").exists()
    r = cli(*args, "--text-encoder", tiny_text_encoder)
    assert r.code == 0, r.err
    assert EncodedDataset(tmp_path / "o").latent_shape(0) == (8, 32, 48, 3)


def test_default_output_under_home(cli, tmp_path, video_dir, tiny_text_encoder, isolated_user_dirs):
    caps = _captions(tmp_path / "c.json", [{"file": "a.mp4", "captions": ["x"]}])
    r = cli("data", "encode", "-c", caps, "-v", video_dir, "--text-encoder", tiny_text_encoder, "--num-workers", "0")
    assert r.code == 0, r.err
    expected = isolated_user_dirs / "home" / "datasets" / f"{tmp_path.name}-raw"
    assert (expected / "manifest.json").exists() and str(expected) in r.out.replace("\n", "")


@pytest.mark.parametrize("compression,fixture,shape", [
    ("sdvae", "tiny_sdvae", (4, 8, 16, 24)),  # (C, T, H/2, W/2)
    ("vqvae", "tiny_vqvae", (4, 8, 12)),  # (T/2, H/4, W/4) codes
])
def test_encode_with_model_compressions(cli, tmp_path, video_dir, tiny_text_encoder, compression, fixture, shape, request):
    path = request.getfixturevalue(fixture)
    caps = _captions(tmp_path / "c.json", [{"file": "a.mp4", "captions": ["x", "y"]}])
    r = cli("data", "encode", "-c", caps, "-v", video_dir, "-o", tmp_path / "o", "--text-encoder", tiny_text_encoder,
            "--compression", compression, "--vae", path, "--num-workers", "0")
    assert r.code == 0, r.err
    ds = EncodedDataset(tmp_path / "o")
    assert len(ds) == 2 and ds[0]["video"].shape == shape
    assert ds.manifest["compression"] == {"name": compression, "path": str(path)}


def _encode_cmd(caps, vids, out, te):
    return [sys.executable, "-c", "from opensora_cli.main import run; run()", "data", "encode", "-c", str(caps),
            "-v", str(vids), "-o", str(out), "--text-encoder", str(te), "--shard-size", "1", "--num-workers", "0"]


def test_kill_9_then_resume_gives_every_row_once(tmp_path, tiny_text_encoder):
    vids = tmp_path / "v"
    vids.mkdir()
    n = 24
    for i in range(n):
        write_video(vids / f"v{i:02d}.mp4", moving_square_video(24, 96, 96, seed=i), 12)
    items = [{"file": f"v{i:02d}.mp4", "captions": [f"video {i}", f"clip {i}"]} for i in range(n)]
    caps = _captions(tmp_path / "c.json", items)
    out = tmp_path / "out"
    proc = subprocess.Popen(_encode_cmd(caps, vids, out, tiny_text_encoder), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "videos").glob("part-*.arrow"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "videos").glob("part-*.arrow")))
    assert 3 <= done_before < n, "the encode finished before it could be killed; make it slower"
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    # The captions file is edited between the kill and the rerun: one entry prepended, one caption changed.
    write_video(vids / "new.mp4", moving_square_video(24, 96, 96, seed=99), 12)
    items = [{"file": "new.mp4", "captions": ["a new one"]}] + items
    items[1]["captions"][0] = "video 0, reworded"
    caps = _captions(tmp_path / "c.json", items)
    r = run_opensora(*_encode_cmd(caps, vids, out, tiny_text_encoder)[3:])
    assert r.returncode == 0, r.stderr
    cache = _cache(out)
    assert cache["videos_reused"] >= done_before and cache["videos_reused"] + cache["videos_encoded"] == n + 1
    ds = EncodedDataset(out)
    pairs = [(ds.files[i], ds[i]["caption"]) for i in range(len(ds))]
    expected = [(x["file"], c) for x in items for c in x["captions"]]
    assert pairs == expected  # 0 lost, 0 duplicated
    assert ds[1]["caption"] == "video 0, reworded" and ds[0]["video"].shape == (24, 96, 96, 3)
    assert not list(out.rglob(".*tmp"))


def test_a_damaged_part_is_redone_not_trusted(cli, tmp_path, video_dir, tiny_text_encoder):
    caps = _captions(tmp_path / "c.json", [{"file": n, "captions": [n]} for n in ("a.mp4", "b.mp4", "c.mp4")])
    out = tmp_path / "o"
    args = ["data", "encode", "-c", caps, "-v", video_dir, "-o", out, "--num-workers", "0", "--shard-size", "1",
            "--text-encoder", tiny_text_encoder]
    assert cli(*args).code == 0
    part = sorted((out / "videos").glob("part-*.arrow"))[1]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # truncated on disk
    r = cli(*args)
    assert r.code == 0, r.err
    assert "redone a damaged part" in r.out and _cache(out)["videos_encoded"] == 1
    ds = EncodedDataset(out)
    assert [ds[i]["video"].shape[0] for i in range(3)] == [8, 12, 16]


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline-set", "hub-unreachable"])
def test_an_unreachable_hub_id_fails_in_seconds_naming_the_fix(tmp_path, video_dir, env):
    import time

    caps = _captions(tmp_path / "c.json", [{"file": "a.mp4", "captions": ["x"]}])
    t0 = time.time()
    r = run_opensora("data", "encode", "-c", caps, "-v", video_dir, "-o", tmp_path / "o", "--num-workers", "0",
                     "--text-encoder", "nobody/no-such-clip", env={"HF_HUB_OFFLINE": "", **env})
    assert time.time() - t0 < 60  # (huggingface_hub's own retries took ~5 minutes)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "--text-encoder nobody/no-such-clip" in lines[0] and "--local-dir DIR" in lines[0]
    assert ("HF_HUB_OFFLINE is set" in lines[0]) == ("HF_HUB_OFFLINE" in env)


CRASHING_DECODER = """
import os, signal, sys
import opensora.data.encode as encode
original = encode.read_video
def read_video(path, *args, **kwargs):
    if os.path.basename(str(path)) == "crash.mp4":
        os.kill(os.getpid(), signal.SIGSEGV)  # as a decoder bug on one file does
    return original(path, *args, **kwargs)
encode.read_video = read_video
from opensora_cli.main import run
sys.argv = ["opensora", *sys.argv[1:]]
run()
"""


def test_a_decoder_crash_on_one_video_does_not_stop_the_rest(tmp_path, video_dir, tiny_text_encoder):
    vids = tmp_path / "v"
    shutil.copytree(video_dir, vids)
    write_video(vids / "crash.mp4", moving_square_video(8, 32, 32, seed=42), 8)  # its own content: its own decode
    items = [{"file": n, "captions": [n]} for n in ("a.mp4", "crash.mp4", "b.mp4", "c.mp4", "d.mp4")]
    caps = _captions(tmp_path / "c.json", items)
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-c", CRASHING_DECODER, "data", "encode", "-c", str(caps), "-v", str(vids),
                        "-o", str(out), "--text-encoder", str(tiny_text_encoder), "--num-workers", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["file"], e["reason"]) for e in errors] == [("crash.mp4", "decoder crashed")]
    ds = EncodedDataset(out)
    assert sorted(ds[i]["caption"] for i in range(len(ds))) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]


def test_a_format_1_dataset_names_the_command_that_re_encodes_it(cli, tmp_path):
    old = tmp_path / "old"
    (old / "shards").mkdir(parents=True)
    (old / "manifest.json").write_text(json.dumps({
        "format": "opensora-encoded", "complete": True,
        "settings": {"captions": "/data/c.json", "videos": "/data/videos", "compression": "sdvae", "features_version": 1}}))
    r = cli("train", "--data", old, "--run-dir", tmp_path / "run", "--device", "cpu")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert f"opensora data encode -c /data/c.json -v /data/videos -o {old} --compression sdvae --overwrite" in r.err
    info = json.loads(cli("inspect", old, "--json").out)
    assert info["format"] == 1 and "re-encode" in info["problem"]
