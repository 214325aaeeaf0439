"""`data download` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from opensora.data.download import download_dataset
from opensora.errors import OpenSoraError
from tests.data.msrvtt_fixture import ArchiveServer, make_msrvtt, make_zip


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    return make_zip(make_msrvtt(root), root / "MSRVTT.zip").read_bytes()


def test_full_download_via_cli_then_noop(cli, tmp_path, archive):
    sha = hashlib.sha256(archive).hexdigest()
    with ArchiveServer({"MSRVTT.zip": archive}) as srv:
        r = cli("data", "download", "--url", srv.url("MSRVTT.zip"), "--dest", tmp_path, "--sha256", sha)
        assert r.code == 0, r.err
        assert (tmp_path / "MSRVTT" / "annotation" / "MSR_VTT.json").exists()
        assert len(list((tmp_path / "MSRVTT" / "videos" / "all").glob("*.mp4"))) == 6
        n = len(srv.requests)
        r = cli("data", "download", "--url", srv.url("MSRVTT.zip"), "--dest", tmp_path, "--sha256", sha)
        assert r.code == 0 and "already complete" in r.out
        assert len(srv.requests) == n  # nothing fetched the second time


def test_interrupted_download_resumes_with_range(tmp_path, archive):
    with ArchiveServer({"MSRVTT.zip": archive}, cut_after=len(archive) // 3) as srv:
        with pytest.raises(OpenSoraError, match="rerun the same command to resume"):
            download_dataset(tmp_path, url=srv.url("MSRVTT.zip"))
        part = tmp_path / "MSRVTT.zip.part"
        assert part.stat().st_size == len(archive) // 3
        r = download_dataset(tmp_path, url=srv.url("MSRVTT.zip"), sha256=hashlib.sha256(archive).hexdigest())
        assert r.resumed_from == len(archive) // 3
        assert srv.requests[-1] == f"bytes={len(archive) // 3}-"
        assert (tmp_path / "MSRVTT.zip").read_bytes() == archive


def test_server_without_range_restarts_cleanly(tmp_path, archive):
    (tmp_path / "MSRVTT.zip.part").write_bytes(b"garbage")
    with ArchiveServer({"MSRVTT.zip": archive}, ignore_range=True) as srv:
        r = download_dataset(tmp_path, url=srv.url("MSRVTT.zip"), sha256=hashlib.sha256(archive).hexdigest())
    assert r.resumed_from == 0 and (tmp_path / "MSRVTT.zip").read_bytes() == archive


def test_corrupted_download_detected(cli, tmp_path, archive):
    corrupt = bytearray(archive)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with ArchiveServer({"MSRVTT.zip": bytes(corrupt)}) as srv:
        r = cli("data", "download", "--url", srv.url("MSRVTT.zip"), "--dest", tmp_path,
                "--sha256", hashlib.sha256(archive).hexdigest())
    assert r.code == 1 and "checksum mismatch" in r.err
    assert not (tmp_path / "MSRVTT.zip").exists() and not (tmp_path / "MSRVTT").exists()


def test_malicious_archive_refused(cli, tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("MSRVTT/ok.txt", "fine")
        zf.writestr("../../escaped.txt", "pwned")
    dest = tmp_path / "dest"
    with ArchiveServer({"evil.zip": evil.read_bytes()}) as srv:
        r = cli("data", "download", "--url", srv.url("evil.zip"), "--dest", dest)
    assert r.code == 1 and "outside" in r.err
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "MSRVTT" / "ok.txt").exists()


def test_unreachable_url_is_one_line(cli, tmp_path):
    r = cli("data", "download", "--url", "http://127.0.0.1:9/none.zip", "--dest", tmp_path)
    assert r.code == 1 and "cannot reach" in r.err and "Traceback" not in r.err


def test_a_trickling_server_is_a_stall_not_a_hang(cli, tmp_path, archive):
    import time

    with ArchiveServer({"MSRVTT.zip": archive}, drip=0.2) as srv:
        t0 = time.time()
        r = cli("data", "download", "--url", srv.url("MSRVTT.zip"), "--dest", tmp_path, "--stall-timeout", "1")
        assert time.time() - t0 < 10
    assert r.code == 1 and "stalled" in r.err and "rerun" in r.err and "Traceback" not in r.err
    assert [x for x in r.err.splitlines() if not x.startswith("download ")] == [r.err.splitlines()[-1]]  # progress + 1 line
    with ArchiveServer({"MSRVTT.zip": archive}) as srv:  # the rerun resumes what arrived
        r = cli("data", "download", "--url", srv.url("MSRVTT.zip"), "--dest", tmp_path)
        assert r.code == 0, r.err
        assert srv.requests[0] is not None and srv.requests[0].startswith("bytes=")
