"""Photo download throughput on loopback, the CPU share of resizing, and prepare's image check.

A server in another process (so that its CPU is not counted) serves photo-like JPEG "originals"
(default 3000x2000, quality 90: noise over a smooth random field, so they compress like photos)
over HTTP/1.1 keep-alive on 127.0.0.1. `app.downloader.download.download` fetches them with MD5
checks, shrinks them to --max-side and writes them, at each worker count. Per run it reports
photos/s, the downloader process's CPU seconds per photo (getrusage), and the share of that
CPU spent decoding, resizing and re-encoding (per-thread CPU clocks inside the workers). Then it
times prepare's per-photo check (`verify_image`) on the stored photos, against a full decode and
the MD5 alone, and prepare's threaded loading of the folder.

    python bench/download.py [--photos 240] [--workers 16 64] [--size 3000x2000] [--max-side 640]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.downloader.download import DownloadConfig, DownloadItem, download  # noqa: E402
from app.downloader.fetch import FetchConfig  # noqa: E402
from app.badrows import BadRows  # noqa: E402
from app.sources.image_folder import ImageFolder  # noqa: E402
from app.downloader.images import md5_base64, verify_image  # noqa: E402
from app.sources.oid import OidImage  # noqa: E402


def photo_like(width: int, height: int, seed: int) -> bytes:
    """A JPEG with a photo's entropy: a smooth random colour field plus fine noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 100 + 2, width // 100 + 2, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    pixels = np.clip(field + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def serve(photos: list, port_out) -> None:
    """Serves `/p/{i}.jpg` -> photos[i % len(photos)] until killed."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            body = photos[int(self.path.rsplit("/", 1)[-1].split(".")[0]) % len(photos)]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port_out.put(httpd.server_address[1])
    httpd.serve_forever()


def run(url: str, photos: list, count: int, workers: int, max_side: int, out: Path) -> dict:
    md5s = [md5_base64(p) for p in photos]
    items = [DownloadItem(f"{i:016x}", f"{url}/p/{i}.jpg", md5s[i % len(photos)]) for i in range(count)]
    config = DownloadConfig(max_side=max_side, workers=workers, fetch=FetchConfig(timeout=60, retries=0))
    before = resource.getrusage(resource.RUSAGE_SELF)
    summary = download(items, out, config, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert summary.ok == count, summary.report()
    resize = summary.cpu_seconds["decode_resize_encode"]
    return {"workers": workers, "photos_per_s": round(count / summary.seconds, 1),
            "cpu_ms_per_photo": round(1000 * cpu / count, 1),
            "resize_ms_per_photo": round(1000 * resize / count, 1),
            "resize_share_of_cpu": round(resize / cpu, 3),
            "stage_cpu_s": {k: round(v, 2) for k, v in summary.cpu_seconds.items()},
            "MB_per_s": round(summary.bytes / summary.seconds / 1e6, 1)}


def check_cost(folder: Path) -> dict:
    """Milliseconds per stored photo: prepare's check, a full decode, the MD5 alone, and prepare's
    threaded loading of the folder (`ImageFolder.iter_load`: manifest, read, check)."""
    datas = [p.read_bytes() for p in sorted(folder.rglob("*.jpg"))]
    photos = [OidImage(p.stem, "", 0, "", "", 0.0, 0) for p in sorted(folder.rglob("*.jpg"))]
    started = time.perf_counter()
    loaded = list(ImageFolder(folder, BadRows()).iter_load(photos, BadRows()))
    timings = {"ImageFolder.iter_load (threads)": round(1000 * (time.perf_counter() - started) / len(photos), 3)}
    assert all(loaded)
    for name, fn in (("verify_image (1/8-scale JPEG decode)", verify_image),
                     ("full decode", lambda d: Image.open(io.BytesIO(d)).load()),
                     ("md5 only", md5_base64)):
        started = time.perf_counter()
        for data in datas:
            fn(data)
        timings[name] = round(1000 * (time.perf_counter() - started) / len(datas), 3)
    return {"photos": len(datas), "mean_kB": round(sum(map(len, datas)) / len(datas) / 1e3, 1), "ms_per_photo": timings}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=240, help="downloads per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--size", default="3000x2000", help="originals' WIDTHxHEIGHT")
    parser.add_argument("--distinct", type=int, default=12, help="distinct originals served")
    parser.add_argument("--max-side", type=int, default=640)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    photos = [photo_like(width, height, seed) for seed in range(args.distinct)]
    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(photos, ports), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    results = {"originals": f"{width}x{height}, {sum(map(len, photos)) / len(photos) / 1e6:.2f} MB on average",
               "max_side": args.max_side, "cpus": multiprocessing.cpu_count(), "runs": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for workers in args.workers:
                out = Path(tmp) / f"w{workers}"
                results["runs"].append(run(url, photos, args.photos, workers, args.max_side, out))
            results["prepare_check"] = check_cost(Path(tmp) / f"w{args.workers[0]}")
    finally:
        server.kill()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
