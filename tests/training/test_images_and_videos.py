"""Images beside videos: encoded as one-frame latents, bucketed apart, mixed by --image-ratio, trained in one run."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from opensora.data.video import read_video, write_video
from opensora.training.data import epoch_batches
from tests.conftest import SHARED, moving_square_video, run_opensora


def test_image_ratio_sets_the_share_of_image_batches_deterministically():
    shapes = [(1, 16, 16, 3)] * 40 + [(4, 16, 16, 3)] * 20  # 40 images, 20 videos
    g = {(1, 16, 16, 3): 4, (4, 16, 16, 3): 4}
    natural = epoch_batches(shapes, g, 0, 0)
    assert len(natural) == 15 and sorted(r for b in natural for r in b) == list(range(60))  # every row once
    images = frozenset({(1, 16, 16, 3)})
    for ratio, n_images in ((0.5, 5), (0.25, 2), (0.0, 0)):
        batches = epoch_batches(shapes, g, 0, 0, ratio, images)
        kinds = Counter("image" if shapes[b[0]] in images else "video" for b in batches)
        assert kinds == Counter({"video": 5, **({"image": n_images} if n_images else {})}), (ratio, kinds)
        assert batches == epoch_batches(shapes, g, 0, 0, ratio, images)  # resumable: a function of seed and epoch
    only = epoch_batches(shapes, g, 0, 1, 1.0, images)
    assert len(only) == 10 and all(shapes[b[0]] in images for b in only)
    many = epoch_batches(shapes, g, 0, 0, 0.8, images)  # 20 image batches from 10: each at most twice
    assert Counter(tuple(b) for b in many if shapes[b[0]] in images).most_common(1)[0][1] <= 2
    # the plan counts the same steps, and refuses a mix that leaves nothing to train on
    from opensora.errors import UserError
    from opensora.training.data import Bucket, BucketPlan

    plan = BucketPlan([Bucket((1, 16, 16, 3), (1, 16, 16), (1, 16, 16), 40, 64, 4, 4),
                       Bucket((4, 16, 16, 3), (4, 16, 16), (4, 16, 16), 20, 256, 4, 4)])
    plan.mix_images(0.25)
    assert plan.steps_per_epoch == 5 + 2
    only_images = BucketPlan([Bucket((1, 16, 16, 3), (1, 16, 16), (1, 16, 16), 40, 64, 4, 4)])
    with pytest.raises(UserError, match="--image-ratio 0 leaves no batch"):
        only_images.mix_images(0.0)


@pytest.mark.timeout(900)
def test_images_and_videos_encode_and_train_together(cli, tmp_path, tiny_text_encoder):
    media = tmp_path / "media"
    media.mkdir()
    items = []
    for i in range(4):  # videos
        write_video(media / f"v{i}.mp4", moving_square_video(4, 16, 16, seed=i), 4)
        items.append({"file": f"v{i}.mp4", "captions": [f"a square video {i}"]})
    rng = np.random.default_rng(0)
    for i, ext in enumerate(("png", "jpg", "webp")):  # images made here
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(media / f"i{i}.{ext}")
        items.append({"file": f"i{i}.{ext}", "captions": [f"a still image {i}"]})
    portrait = Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8))  # stored 32 wide, 16 high
    exif = portrait.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees to display (a phone photo)
    portrait.save(media / "phone.jpg", exif=exif)
    items.append({"file": "phone.jpg", "captions": ["a phone photo"]})
    real = sorted(SHARED.glob("videos/decord/video_*.mov")) if SHARED.exists() else []
    for k, src in enumerate(real[:2]):  # frames of the shared real videos, saved as images
        Image.fromarray(read_video(src)[0][0]).save(media / f"real{k}.png")
        items.append({"file": f"real{k}.png", "captions": [f"a frame of a real clip {k}"]})
    (tmp_path / "captions.json").write_text(json.dumps(items))
    assert read_video(media / "phone.jpg")[0].shape == (1, 32, 16, 3)  # upright by its EXIF orientation
    ds = tmp_path / "ds"
    r = cli("data", "encode", "-c", tmp_path / "captions.json", "-v", media, "-o", ds, "--text-encoder",
            tiny_text_encoder, "--size", "16x16", "--num-workers", "0")
    assert r.code == 0, r.err
    info = json.loads(cli("inspect", ds, "--json").out)
    assert info["shapes"] == {"1x16x16x3": 3 + 1 + len(real[:2]), "4x16x16x3": 4}, info["shapes"]
    run = tmp_path / "run"
    r = run_opensora("train", "--data", ds, "--model", "STDiT/T-2", "--steps", "6", "--ckpt-every", "6", "--batch-size",
                     "2", "--num-workers", "0", "--device", "cpu", "--image-ratio", "0.5", "--run-dir", run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1x16x16" in r.stdout and "4x16x16" in r.stdout  # both buckets listed before step 1
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and all(np.isfinite(losses))
    r = cli("sample", "a still image 1", "--ckpt", run, "--frames", "1", "--height", "16", "--width", "16",
            "--steps", "2", "-o", tmp_path / "still.mp4")
    assert r.code == 0, r.err
    assert read_video(tmp_path / "still.mp4")[0].shape[0] == 1


def test_an_image_under_a_temporally_downsampling_vae_is_skipped_with_the_reason(cli, tmp_path, tiny_text_encoder,
                                                                                  tiny_vqvae):
    media = tmp_path / "media"
    media.mkdir()
    write_video(media / "v.mp4", moving_square_video(4, 16, 16), 4)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(media / "i.png")
    (tmp_path / "c.json").write_text(json.dumps([{"file": "v.mp4", "captions": ["v"]}, {"file": "i.png", "captions": ["i"]}]))
    r = cli("data", "encode", "-c", tmp_path / "c.json", "-v", media, "-o", tmp_path / "ds", "--compression", "vqvae",
            "--vae", tiny_vqvae, "--text-encoder", tiny_text_encoder, "--num-workers", "0")
    assert r.code == 0, r.err
    errors = (tmp_path / "ds" / "errors.jsonl").read_text()
    assert "i.png" in errors and "encode images with raw, sdvae or video-vae" in errors
