"""Real third-party videos (../shared/data): rotation, frame timing, buckets, CSV, odd latents that still train."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from opensora.data.dataset import EncodedDataset
from opensora.data.video import DecodeSettings, probe_video, read_video, write_video
from tests.conftest import SHARED, moving_square_video

pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="shared test videos not present")
VIDEOS = SHARED / "videos"


def _coded(path: Path) -> tuple[np.ndarray, int]:
    """Frames as stored in the file (no rotation) and the display matrix rotation."""
    with av.open(str(path)) as c:
        frames = [f for f in c.decode(video=0)]
        return np.stack([f.to_ndarray(format="rgb24") for f in frames]), frames[0].rotation


@pytest.mark.parametrize("name,portrait", [("decord/video_0.mov", False), ("decord/video_90.mov", True),
                                           ("decord/video_180.mov", False), ("decord/video_270.mov", True),
                                           ("moviepy/fire2.mp4", False)])
def test_the_display_matrix_is_applied(name, portrait):
    frames, _ = read_video(VIDEOS / name)
    coded, rotation = _coded(VIDEOS / name)
    h, w = frames.shape[1:3]
    assert (h > w) == portrait  # portrait videos stay portrait
    # ffmpeg's rotation is counter-clockwise degrees: -90 turns the picture a quarter clockwise
    np.testing.assert_array_equal(frames, np.rot90(coded, round(rotation / 90) % 4, axes=(1, 2)))


def test_upright_by_content():
    # fire2 is a phone clip of a room stored upside down: upright, the lit walls and ceiling are on top
    frames, _ = read_video(VIDEOS / "moviepy/fire2.mp4")
    luma = frames.astype(np.float32).mean(axis=(0, 2, 3))
    assert luma[: len(luma) // 2].mean() > 1.2 * luma[len(luma) // 2 :].mean()


@pytest.mark.parametrize("name,fps,duration", [
    ("moviepy/transparent.webm", 30, 5.0),  # Matroska: times in ms (0.033 s for 1/30 s)
    ("decord/flipping_a_pancake.mkv", 30, 310 / 30),  # the video stream ends before the audio
    ("moviepy/big_buck_bunny_432_433.webm", 24, 1.0),
    ("torchcodec/var_fps_video.mp4", 30, 14.933333),  # variable rate, average 20 fps: frames repeated
    ("torchcodec/var_fps_video.mp4", 10, 14.933333),
    ("moviepy/fire2.mp4", 8, 2.379767),
])
def test_every_output_time_gets_a_frame(name, fps, duration):
    frames, rate = read_video(VIDEOS / name, fps=fps)
    assert rate == fps and len(frames) == round(duration * fps)  # the clip's duration is kept


def test_vfr_upsampling_repeats_the_frame_on_screen():
    frames, _ = read_video(VIDEOS / "torchcodec/var_fps_video.mp4", fps=60)
    same = [np.array_equal(a, b) for a, b in zip(frames[:-1], frames[1:])]
    assert len(frames) == round(14.933333 * 60) and sum(same) >= len(frames) // 2


def test_truncation_keeps_first_frames_or_a_centred_window():
    full, _ = read_video(VIDEOS / "mmaction2/part_0.mp4")  # 32 frames
    first, _ = read_video(VIDEOS / "mmaction2/part_0.mp4", max_frames=8, too_long="first")
    center, _ = read_video(VIDEOS / "mmaction2/part_0.mp4", max_frames=8, too_long="center")
    np.testing.assert_array_equal(first, full[:8])
    np.testing.assert_array_equal(center, full[12:20])


def test_resolution_buckets_keep_the_aspect_ratio():
    s = DecodeSettings(max_pixels=240 * 426)
    wide, _ = read_video(VIDEOS / "moviepy/big_buck_bunny_432_433.webm", s)
    tall, _ = read_video(VIDEOS / "decord/video_90.mov", s)
    square, _ = read_video(VIDEOS / "moviepy/example_mask.mp4", s)
    assert wide.shape[1:3] == (240, 432) and tall.shape[1:3] == (432, 240) and square.shape[1:3] == (320, 320)


def _write_captions(path: Path, items: list[dict]) -> Path:
    path.write_text(json.dumps(items))
    return path


def test_a_mixed_real_set_lands_in_a_few_buckets(cli, tmp_path, tiny_text_encoder):
    names = ["decord/flipping_a_pancake.mkv", "moviepy/chaplin.mp4", "mmaction2/demo.mp4", "mmaction2/test.avi",
             "moviepy/example.mp4", "moviepy/example_mask.mp4", "torchcodec/h264_10bits.mp4", "decord/video_90.mov",
             "torchcodec/av1_video.mkv", "moviepy/bitmap.mp4"]
    caps = _write_captions(tmp_path / "c.json", [{"file": n, "captions": [n]} for n in names])
    out = tmp_path / "o"
    r = cli("data", "encode", "-c", caps, "-v", VIDEOS, "-o", out, "--text-encoder", tiny_text_encoder,
            "--resolution", "144p", "--fps", "4", "--max-frames", "4", "--too-long", "first", "--num-workers", "0")
    assert r.code == 0, r.err
    ds = EncodedDataset(out)
    shapes = {ds.latent_shape(i)[1:3] for i in range(len(ds))}
    assert len(ds) == 9 and shapes == {(144, 256), (160, 224), (192, 192), (256, 144)}
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["file"], e["reason"]) for e in errors] == [("moviepy/bitmap.mp4", "too small")]


def test_untrainable_clips_are_skipped_at_encode(cli, tmp_path, tiny_text_encoder):
    caps = _write_captions(tmp_path / "c.json", [{"file": "moviepy/bitmap.mp4", "captions": ["1x1"]},
                                                 {"file": "decord/unordered.mov", "captions": ["ok"]}])
    r = cli("data", "encode", "-c", caps, "-v", VIDEOS, "-o", tmp_path / "o", "--text-encoder", tiny_text_encoder,
            "--num-workers", "0")
    assert r.code == 0, r.err  # filtered, not failed
    err = json.loads((tmp_path / "o" / "errors.jsonl").read_text())
    assert err["file"] == "moviepy/bitmap.mp4" and err["reason"] == "too small" and "patch" in err["detail"]
    assert len(EncodedDataset(tmp_path / "o")) == 1


def test_webvid_csv_captions(cli, tmp_path, tiny_text_encoder):
    import csv

    rows = list(csv.DictReader((SHARED / "captions/webvid/test_webvid.csv").open()))
    vids = tmp_path / "v"
    vids.mkdir()
    for i, row in enumerate(rows[:8]):
        write_video(vids / f"{row['videoid']}.mp4", moving_square_video(4, 32, 32, seed=i), 4)
    shutil.copy(SHARED / "captions/webvid/test_webvid.csv", tmp_path / "webvid.csv")
    lines = (tmp_path / "webvid.csv").read_text().splitlines()
    (tmp_path / "webvid.csv").write_text("\n".join(lines[:9]) + "\n")
    r = cli("data", "encode", "-c", tmp_path / "webvid.csv", "-v", vids, "-o", tmp_path / "o",
            "--text-encoder", tiny_text_encoder, "--num-workers", "0")
    assert r.code == 0, r.err
    ds = EncodedDataset(tmp_path / "o")
    assert [ds[i]["caption"] for i in range(len(ds))] == [row["name"] for row in rows[:8]]
    assert any("," in row["name"] for row in rows[:8])  # quoted commas survived
    bad = tmp_path / "bad.csv"
    bad.write_text("clip,text\na.mp4,fine\nb.mp4,not, quoted\n")
    r = cli("data", "encode", "-c", bad, "-v", vids, "-o", tmp_path / "o2", "--file-column", "clip",
            "--text-encoder", tiny_text_encoder)
    assert r.code == 2 and f"{bad}:3:" in r.err and "quote" in r.err


def test_a_stride_8_vae_on_640x360_trains_with_patch_2(cli, tmp_path, tiny_text_encoder):
    """640x360 gives a 45x80 latent at stride 8: cropped to 44x80 at train time, not a crash."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 4, 4, 4), layers_per_block=1,
                        latent_channels=4, norm_num_groups=2, sample_size=32)
    vae.save_pretrained(tmp_path / "vae")
    assert probe_video(VIDEOS / "moviepy/chaplin.mp4").height == 360
    caps = _write_captions(tmp_path / "c.json", [{"file": "moviepy/chaplin.mp4", "captions": ["a silent film", "chaplin"]}])
    r = cli("data", "encode", "-c", caps, "-v", VIDEOS, "-o", tmp_path / "d", "--text-encoder", tiny_text_encoder,
            "--compression", "sdvae", "--vae", tmp_path / "vae", "--fps", "2", "--max-frames", "2", "--too-long", "first",
            "--num-workers", "0")
    assert r.code == 0, r.err
    assert EncodedDataset(tmp_path / "d").latent_shape(0) == (4, 2, 45, 80)
    r = cli("train", "--data", tmp_path / "d", "--model", "DiT/T-2", "--steps", "2", "--batch-size", "2",
            "--run-dir", tmp_path / "run", "--device", "cpu", "--num-workers", "0", "--plugin", "ddp")
    assert r.code == 0, r.err
    assert "2x45x80 -> 2x44x80" in r.out.replace("\n", " ")
    assert (tmp_path / "run" / "ckpt-0000002").is_dir()


def test_twenty_captions_per_video_store_each_latent_once(cli, tmp_path, tiny_text_encoder):
    vids = tmp_path / "v"
    vids.mkdir()
    for i in range(3):
        write_video(vids / f"video{i}.mp4", moving_square_video(8, 32, 48, seed=i), 8)
    items = [{"file": f"video{i}.mp4", "captions": [f"caption {k} of video {i}" for k in range(20)]} for i in range(3)]
    r = cli("data", "encode", "-c", _write_captions(tmp_path / "c.json", items), "-v", vids, "-o", tmp_path / "o",
            "--text-encoder", tiny_text_encoder, "--num-workers", "0")
    assert r.code == 0, r.err
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    unique = 3 * 8 * 32 * 48 * 3  # uint8 frames of the three videos
    assert m["rows"] == 60 and m["videos"] == 3 and m["captions"] == 60
    assert m["video_bytes"] <= 1.05 * unique
