"""`data collate` on a fixture in MSR-VTT's official format."""

from __future__ import annotations

import json

from tests.data.msrvtt_fixture import make_msrvtt


def test_collate_splits_links_and_reports(cli, tmp_path):
    make_msrvtt(tmp_path / "raw")
    out = tmp_path / "out"
    r = cli("data", "collate", "-d", tmp_path / "raw", "-o", out)
    assert r.code == 0, r.err
    train = json.loads((out / "train" / "annotations.json").read_text())
    assert [x["file"] for x in train] == ["video0.mp4", "video1.mp4", "video2.mp4"]
    assert train[0]["captions"] == ["video0 caption 0", "video0 caption 1"]
    assert [x["file"] for x in json.loads((out / "val" / "annotations.json").read_text())] == ["video3.mp4"]
    assert [x["file"] for x in json.loads((out / "test" / "annotations.json").read_text())] == ["video4.mp4"]
    link = out / "train" / "videos" / "video0.mp4"
    assert link.is_symlink() and link.resolve() == (tmp_path / "raw" / "MSRVTT" / "videos" / "all" / "video0.mp4")
    assert "video9" in r.out and "without captions" in r.out  # a video with no caption is reported
    assert "video8" in r.out and "without video" in r.out  # a caption with no video is reported
    # the next step encodes the train split ("test" sorts first), on one line however long the path
    nxt = [line for line in r.out.splitlines() if line.startswith("next:")]
    assert nxt == [f"next: opensora data encode -c {out / 'train' / 'annotations.json'} -v {out / 'train' / 'videos'}"]


def test_collate_rerun_is_idempotent(cli, tmp_path):
    make_msrvtt(tmp_path / "raw")
    for _ in range(2):
        assert cli("data", "collate", "-d", tmp_path / "raw", "-o", tmp_path / "out").code == 0
    assert len(json.loads((tmp_path / "out" / "train" / "annotations.json").read_text())) == 3


def test_collate_without_annotations(cli, tmp_path):
    (tmp_path / "raw").mkdir()
    r = cli("data", "collate", "-d", tmp_path / "raw", "-o", tmp_path / "out")
    assert r.code == 2 and "annotation" in r.err
