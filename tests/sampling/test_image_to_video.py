"""Image-to-video and extension end to end: an STDiT demo trained with frames given, then `sample --image/--extend`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from opensora.data.video import read_video, write_video
from opensora.sampling.given import fit_frames
from tests.conftest import moving_square_video


def _close(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.mark.timeout(900)
def test_stdit_demo_with_frames_given_and_sample_image_and_extend(cli, tmp_path, trained_checkpoint):
    demo = tmp_path / "demo"
    r = cli("demo", "--quick", "--model", "STDiT/T-4", "--frame-condition", "0.5", "--out", demo)
    assert r.code == 0, r.err
    assert "image-to-video from held-out clips' first frames" in r.out
    continued = sorted((demo / "continued").glob("*.mp4"))
    assert len(continued) == 8
    for video in continued:  # the given first frame, fitted to 16x16, opens the video (raw latents; mp4 rounding)
        first = fit_frames(np.asarray(Image.open(video.with_name(video.stem + "-first.png")))[None], 16, 16)[0]
        assert _close(read_video(video)[0][0], first) < 6
    png = demo / "continued" / continued[0].name.replace(".mp4", "-first.png")
    out = tmp_path / "i2v.mp4"
    args = ["--ckpt", demo / "run", "--height", "16", "--width", "16", "--frames", "8", "--steps", "3"]
    r = cli("sample", "a red circle moving left", "--image", png, *args, "-o", out)
    assert r.code == 0, r.err
    frames = read_video(out)[0]
    assert frames.shape[0] == 8 and _close(frames[0], fit_frames(np.asarray(Image.open(png))[None], 16, 16)[0]) < 6
    # extension: the clip's last 4 frames (half of the 4 frame groups of 2) open the new video
    clip = moving_square_video(10, 32, 32, seed=3)
    write_video(tmp_path / "clip.mp4", clip, 8)
    r = cli("sample", "a green square moving right", "--extend", tmp_path / "clip.mp4", *args, "-o", tmp_path / "ext.mp4")
    assert r.code == 0, r.err
    ext, src = read_video(tmp_path / "ext.mp4")[0], read_video(tmp_path / "clip.mp4")[0]
    small = fit_frames(src[6:], 16, 16)
    for i in range(4):
        assert _close(ext[i], small[i]) < 6
    # bad input: one line each
    for bad, words in [
        (("--image", png, "--extend", tmp_path / "clip.mp4"), "exclude each other"),
        (("--image", tmp_path / "none.png"), "no such file"),
        (("--image", tmp_path / "clip.mp4"), "not an image"),
        (("--extend", tmp_path / "clip.mp4", "--frames", "2"), "something to generate"),
    ]:
        r = cli("sample", "a prompt", *args, *bad, "-o", tmp_path / "bad.mp4", "--overwrite")
        assert r.code == 2 and words in r.err and "Traceback" not in r.err, r.err
    r = cli("sample", "a prompt", "--ckpt", trained_checkpoint, "--image", png, "--height", "16", "--width", "16",
            "--frames", "4", "-o", tmp_path / "dit.mp4")
    assert r.code == 2 and "was not trained with frames given" in r.err
    r = cli("train", "--data", tmp_path, "--model", "DiT/T-2", "--frame-condition", "0.5", "--run-dir", tmp_path / "x")
    assert r.code == 2 and "needs one timestep per frame" in r.err and "STDiT/T-2" in r.err
