"""A tiny MSR-VTT in the official layout, an archive of it, and an HTTP server with Range support."""

from __future__ import annotations

import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opensora.data.video import write_video
from tests.conftest import moving_square_video

# video_id -> split; video9 has no caption and the annotation names video8 which has no file.
SPLITS = {"video0": "train", "video1": "train", "video2": "train", "video3": "validate", "video4": "test", "video9": "train"}


def make_msrvtt(root: Path) -> Path:
    """Write MSRVTT/annotation/MSR_VTT.json and MSRVTT/videos/all/*.mp4 under `root`."""
    base = root / "MSRVTT"
    vids = base / "videos" / "all"
    vids.mkdir(parents=True)
    for i, vid in enumerate(SPLITS):
        write_video(vids / f"{vid}.mp4", moving_square_video(4, 16, 16, seed=i), 4)
    videos = [{"id": i, "video_id": v, "category": 1, "url": "", "start time": 0.0, "end time": 1.0, "split": s}
              for i, (v, s) in enumerate({**SPLITS, "video8": "test"}.items()) if v != "video9"]
    sentences = []
    for v in ["video0", "video1", "video2", "video3", "video4", "video8"]:
        for k in range(2):
            sentences.append({"caption": f"{v} caption {k}", "video_id": v, "sen_id": len(sentences)})
    ann = base / "annotation"
    ann.mkdir()
    (ann / "MSR_VTT.json").write_text(json.dumps({"info": {"year": "2016"}, "videos": videos, "sentences": sentences}))
    return base


def make_zip(src: Path, archive: Path) -> Path:
    """Zip the directory `src` (with its own name as the top folder)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src.parent))
    return archive


class ArchiveServer:
    """Serves files on 127.0.0.1 with HTTP Range; can cut the first response short."""

    def __init__(self, files: dict[str, bytes], cut_after: int | None = None, ignore_range: bool = False,
                 delay: float = 0.0, drip: float = 0.0):
        self.files, self.cut_after, self.ignore_range, self.delay = files, cut_after, ignore_range, delay
        self.drip = drip  # send one byte every `drip` seconds (a stalled server that never goes silent)
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                data = server.files.get(self.path.lstrip("/"))
                rng = self.headers.get("Range")
                server.requests.append(rng)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_after is not None:  # simulate a dropped connection once
                    body, server.cut_after = body[: server.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if server.drip:
                    for i in range(len(body)):
                        try:
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                        except OSError:  # the client gave up
                            return
                        time.sleep(server.drip)
                    return
                if server.delay:  # trickle the body out slowly (for interruption tests)
                    for i in range(0, len(body), 1024):
                        self.wfile.write(body[i : i + 1024])
                        self.wfile.flush()
                        time.sleep(server.delay)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
