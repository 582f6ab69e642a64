"""A scripted photo server on 127.0.0.1 for the download tests; it counts requests and stops by itself.

The first path segment picks the behaviour, the last one names the photo:
`/ok/…/NAME`, `/404/…`, `/410/…`, `/flaky/…` (500, then the photo), `/e503/…` (always 503),
`/slow/…` (answers after `slow_s`), `/cut/…` (half the declared body, then closes),
`/wrong/…` (another photo), `/removed/…` (redirect to Flickr's placeholder), `/html/…`,
`/drip/…` (the photo's full Content-Length, then one byte every `drip_s`).
It also works as an HTTP proxy (requests with absolute URLs), so real Flickr URLs can point at it.
"""

from __future__ import annotations

import collections
import csv
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

PLACEHOLDER = "https://s.yimg.com/pw/images/en-us/photo_unavailable.png"


class PhotoServer:
    """Serves `photos` (name -> bytes) with scripted failures.

    Args:
        photos: last path segment -> body.
        delay: seconds to wait before every answer.
        slow_s: how long `/slow/` waits.
        lifetime: the server shuts itself down after this many seconds, even if a test fails.
        drip_s: the pause between two bytes of `/drip/`.
    """

    def __init__(self, photos: dict, delay: float = 0.0, slow_s: float = 1.5, lifetime: float = 120.0,
                 drip_s: float = 0.02):
        self.photos = dict(photos)
        self.delay = delay
        self.slow_s = slow_s
        self.drip_s = drip_s
        self.counts = collections.Counter()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._watchdog = threading.Timer(lifetime, self.stop)
        self._watchdog.daemon = True

    def __enter__(self) -> "PhotoServer":
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, path: str) -> int:
        with self._lock:
            self.counts[path] += 1
            return self.counts[path]

    def requests_for(self, name: str) -> int:
        """Requests whose path ends with `name`."""
        with self._lock:
            return sum(n for path, n in self.counts.items() if path.endswith(name))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server: PhotoServer = self.server.owner
        path = urlsplit(self.path).path
        seen = server.count(path)
        behaviour, name = path.strip("/").split("/")[0], path.rsplit("/", 1)[-1]
        time.sleep(server.delay)
        body = server.photos.get(name, b"")
        try:
            self._answer(server, behaviour, body, seen)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _answer(self, server: PhotoServer, behaviour: str, body: bytes, seen: int) -> None:
        if behaviour in ("404", "410") or (behaviour == "flaky" and seen == 1) or behaviour == "e503":
            status = 500 if behaviour == "flaky" else int(behaviour.lstrip("e"))
            return self._send(status, b"error page", "text/plain")
        if behaviour == "removed":
            return self._send(302, b"", "text/plain", {"Location": PLACEHOLDER})
        if behaviour == "html":
            return self._send(200, b"<!DOCTYPE html><html><body>Rate limited</body></html>", "text/html")
        if behaviour == "wrong":
            body = next(b for b in server.photos.values() if b != body)
        if behaviour == "slow":
            time.sleep(server.slow_s)
        if behaviour == "drip":
            return self._drip(body, server.drip_s)
        if behaviour == "cut":
            self.close_connection = True
            return self._send(200, body, "image/jpeg", send=body[: len(body) // 2])
        return self._send(200 if body else 404, body, "image/jpeg")

    def _drip(self, body: bytes, pause: float) -> None:
        self.close_connection = True
        self._send(200, body, "image/jpeg", send=b"")
        for at in range(len(body)):  # until the client hangs up (a BrokenPipeError) or the body is sent
            time.sleep(pause)
            self.wfile.write(body[at:at + 1])
            self.wfile.flush()

    def _send(self, status: int, body: bytes, kind: str, headers: dict = None, send: bytes = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body if send is None else send)
        self.wfile.flush()


def serve_world(oid_dir: Path, images_dir: Path, behaviour=lambda image_id: "ok") -> dict:
    """Points a demo world's image CSVs at this server (`http://`, behaviour first in the path).

    Returns:
        The photos to serve: last URL segment -> the world's JPEG.
    """
    photos = {}
    for path in sorted(Path(oid_dir).glob("*-images-*rotation.csv")):
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        url_at = rows[0].index("OriginalURL")
        for row in rows[1:]:
            parts = urlsplit(row[url_at])
            row[url_at] = f"http://{parts.netloc}/{behaviour(row[0])}{parts.path}"
            photos[parts.path.rsplit("/", 1)[-1]] = (Path(images_dir) / f"{row[0]}.jpg").read_bytes()
        with open(path, "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)
    return photos
