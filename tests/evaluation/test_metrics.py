"""FVD's maths and protocol, and the CLIP score, on tiny locally built models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opensora.evaluation.fvd import (
    FVD_FRAMES,
    FVD_SIZE,
    frechet_distance,
    fvd,
    fvd_input,
    i3d_features,
    load_i3d,
)


def test_frechet_distance_matches_the_closed_form_of_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.2, 3, 6), rng.uniform(0.2, 3, 6)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    # rotating both Gaussians by the same orthogonal matrix changes nothing (S1 and S2 no longer commute-free)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = q @ np.diag(s1) @ q.T, q @ np.diag(s2) @ q.T
    assert frechet_distance(q @ mu1, a, q @ mu2, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, a, mu1, a) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_of_non_commuting_covariances_matches_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 5)), rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    mu1, mu2 = x.mean(0), y.mean(0)
    root = scipy_linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert fvd(x, y) == pytest.approx(expected, rel=1e-8)


def test_fvd_input_follows_the_pinned_protocol():
    frames = np.zeros((5, 20, 40, 3), np.uint8)
    for t in range(5):
        frames[t] = t * 60
    x = fvd_input(frames)
    assert x.shape == (3, FVD_FRAMES, FVD_SIZE, FVD_SIZE)
    assert x.min() >= -1 and x.max() <= 1
    # 5 frames stretched to 16 evenly spaced ones: the first and last are the clip's own
    assert x[0, 0].mean().item() == pytest.approx(-1)
    assert x[0, -1].mean().item() == pytest.approx(240 / 255 * 2 - 1, abs=1e-5)
    assert torch.equal(x[:, 1], x[:, 0])  # a short clip repeats frames


def test_i3d_features_and_identical_sets(tiny_i3d):
    detector = load_i3d(str(tiny_i3d), torch.device("cpu"))
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 255, (8, 16, 24, 3), dtype=np.uint8) for _ in range(6)]
    feats = i3d_features(detector, videos, torch.device("cpu"), batch_size=4)
    assert feats.shape == (6, 12)
    assert fvd(feats, feats) == pytest.approx(0, abs=1e-8)
    other = i3d_features(detector, [np.full_like(v, 200) for v in videos], torch.device("cpu"))
    assert fvd(feats, other) > 0.01


def test_clip_score_is_higher_for_frames_matching_their_caption(tiny_clip_model):
    from opensora.evaluation.clipscore import CLIPScorer

    scorer = CLIPScorer(str(tiny_clip_model), torch.device("cpu"))
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (4, 24, 32, 3), dtype=np.uint8)
    s = scorer.score(video, "a red circle")
    assert 0 <= s <= 100
    assert scorer.score(video, "a red circle") == s  # deterministic
    # by the rule: the mean over frames of 100 x max(0, cos)
    per_frame = [scorer.score(video[i : i + 1], "a red circle") for i in range(4)]
    assert s == pytest.approx(np.mean(per_frame), rel=1e-5)
