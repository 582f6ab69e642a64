"""The photo download core: fetch, verify, rotate/resize/re-encode, write atomically, record.

It takes any iterable of `DownloadItem`s (an Open Images CSV today; YFCC100M download URLs,
which have no MD5, later). Each photo is, in a worker thread:

1. fetched with retries (`app.downloader.fetch`); a redirect to Flickr's placeholder is `unavailable`;
2. checked against its expected MD5 (base64 of the digest, as `OriginalMD5`) **before** anything
   else touches the bytes;
3. decoded in full, after its header (format, declared size within `MAX_IMAGE_PIXELS`) and its
   end marker are checked (`app.downloader.images`);
4. turned upright by its Open Images `Rotation` (counter-clockwise degrees, applied to the pixel
   matrix as stored; EXIF orientation is not applied and is not written back), shrunk so that
   its longer side is at most `max_side` (never enlarged), and re-encoded as baseline JPEG at
   `quality` (90 by default, 4:2:0, no EXIF or ICC profile). A JPEG that needs neither rotation
   nor shrinking is stored byte for byte as downloaded (its MD5 still matches);
5. written atomically as `IMAGES_DIR/ab/ImageID.jpg` (`ab` = the first two characters of the id),
   through a temporary file in `IMAGES_DIR/.partial/`, emptied when the next run starts.

The main thread then appends the result to the manifest (`app.downloader.manifest`), so an `ok` row
always names a complete file. A re-run skips `ok` images whose file exists and permanent
failures (404, 410, unavailable, no URL), unless `retry_permanent`; it retries the rest.
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import contextlib
import dataclasses
import io
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

from PIL import Image
from tqdm import tqdm

from app.downloader import images
from app.badrows import BadRows, Refused
from app.downloader.fetch import FetchConfig, Fetcher
from app.downloader.manifest import FAILED, OK, ManifestRow, ManifestWriter, read_manifest
from app.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

PERMANENT = frozenset({"http_404", "http_410", "unavailable", "no_url", "bad_url", "bad_key"})
JPEG_QUALITY = 90
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


@dataclass(frozen=True)
class DownloadItem:
    """One photo to download.

    Args:
        image_id: the key and file name (Open Images ImageID).
        url: where to fetch it (empty: recorded as `no_url`).
        md5: base64 MD5 digest the body must have, or None to skip the check.
        rotation: counter-clockwise degrees (0, 90, 180, 270; NaN counts as 0).
    """

    image_id: str
    url: str
    md5: Optional[str] = None
    rotation: float = 0.0


@dataclass(frozen=True)
class DownloadConfig:
    """What to store and how.

    Args:
        max_side: longer side of stored photos in pixels; 0 keeps the original size.
        quality: JPEG quality of re-encoded photos.
        workers: concurrent downloads.
        manifest: manifest file name in the images folder (one per shard).
        retry_permanent: also retry 404, 410 and unavailable photos of earlier runs.
        fetch: HTTP settings.
    """

    max_side: int = 640
    quality: int = JPEG_QUALITY
    workers: int = 16
    manifest: str = "manifest.csv"
    retry_permanent: bool = False
    fetch: FetchConfig = FetchConfig()


@dataclass
class DownloadSummary:
    """What a run did; `failures` holds counts and `manifest:line` examples by reason."""

    ok: int = 0
    failed: int = 0
    skipped_ok: int = 0
    skipped_permanent: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: BadRows = field(default_factory=BadRows)
    cpu_seconds: collections.Counter = field(default_factory=collections.Counter)

    def report(self) -> str:
        """A multi-line summary: counts, failures by reason with examples, CPU time by stage."""
        rate = (self.ok + self.failed) / self.seconds if self.seconds else 0.0
        lines = [f"{self.ok} ok, {self.failed} failed in {self.seconds:.1f}s ({rate:.1f} photos/s, "
                 f"{self.bytes / 1e6:.1f} MB downloaded); skipped: {self.skipped_ok} already ok, "
                 f"{self.skipped_permanent} permanent failures of earlier runs"]
        for reason, count in self.failures.counts.most_common():
            lines.append(f"  failed, {reason}: {count}")
            lines.extend(f"    e.g. {example}" for example in self.failures.examples.get(reason, [])[:3])
        if self.cpu_seconds:
            lines.append("  CPU seconds by stage: " + ", ".join(f"{k} {v:.1f}" for k, v in self.cpu_seconds.items()))
        return "\n".join(lines)


class DownloadFailure(Refused):
    """A photo refused after download (MD5, rotation, key), with its manifest reason."""


def relative_path(image_id: str) -> str:
    """`ab/ImageID.jpg`: 256 sub-folders keep folders small at 1.9M photos; a YFCC100M photo outside
    Open Images goes to `yfcc-NN/yfcc-ID.jpg` (NN: the id's last two digits, 100 folders)."""
    if not KEY_RE.match(image_id):
        raise DownloadFailure("bad_key", f"image id {image_id!r} is not 1-64 letters, digits, '_' or '-'")
    if image_id.startswith("yfcc-"):
        return f"yfcc-{image_id[-2:]}/{image_id}.jpg"
    return f"{image_id[:2].lower()}/{image_id}.jpg"


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns for an Open Images `Rotation` (NaN, i.e. unknown, is 0)."""
    if math.isnan(rotation):
        return 0
    turns, rest = divmod(rotation, 90.0)
    if rest:
        raise DownloadFailure("bad_rotation", f"Rotation {rotation!r} is not a multiple of 90")
    return int(turns) % 4


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size with the longer side at most `max_side` (0: no limit), never larger than given."""
    longest = max(width, height)
    if max_side <= 0 or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_photo(data: bytes, turns: int, max_side: int, quality: int = JPEG_QUALITY) -> tuple[bytes, int, int]:
    """Decodes a downloaded photo in full, turns it, shrinks it and re-encodes it as JPEG.

    Args:
        data: the downloaded bytes (already MD5-checked).
        turns: counter-clockwise quarter turns.
        max_side: longer side limit (0: none).
        quality: JPEG quality.

    Returns:
        `(jpeg, width, height)`; a JPEG needing no change is returned as given.

    Raises:
        images.BadImage: the bytes are not a complete, decodable image within the pixel limit.
    """
    image = images.open_image(data)
    size = target_size(*image.size, max_side)
    if image.format == "JPEG" and turns == 0 and size == image.size:
        images.load_image(image, data, draft_size=(1, 1))  # reads every byte; pixels not needed
        return data, *size
    image = _flatten(images.load_image(image, data, draft_size=size))
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if turns:
        image = image.transpose(_TURNS[turns])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), *image.size


def _flatten(image: Image.Image) -> Image.Image:
    """RGB or greyscale; transparency is composed over white."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def check_md5(item: DownloadItem, body: bytes) -> bool:
    """Whether the body was verified against the item's MD5 (False when it has none).

    Raises:
        DownloadFailure: `md5_mismatch`.
    """
    if not item.md5:
        return False
    digest = images.md5_base64(body)
    if digest != item.md5:
        raise DownloadFailure("md5_mismatch", f"MD5 {digest} != expected {item.md5} ({len(body)} bytes)")
    return True


@contextlib.contextmanager
def _cpu(counter: dict, stage: str) -> Iterator[None]:
    start = time.thread_time()
    try:
        yield
    finally:
        counter[stage] = counter.get(stage, 0.0) + time.thread_time() - start


def fetch_and_store(item: DownloadItem, fetcher: Fetcher, out_dir: Path, tmp_dir: Path,
                    config: DownloadConfig) -> tuple[ManifestRow, dict]:
    """Downloads, checks, converts and writes one photo; never raises.

    Returns:
        The manifest row and the CPU seconds spent by stage in this thread.
    """
    cpu: dict = {}
    url, size = item.url, 0
    try:
        rel = relative_path(item.image_id)
        turns = quarter_turns(item.rotation)
        if not url:
            raise DownloadFailure("no_url", "no URL for this photo")
        with _cpu(cpu, "fetch"):
            fetched = fetcher.get(url)
        url, size = fetched.url, len(fetched.body)
        with _cpu(cpu, "md5"):
            verified = check_md5(item, fetched.body)
        with _cpu(cpu, "decode_resize_encode"):
            data, width, height = encode_photo(fetched.body, turns, config.max_side, config.quality)
        with _cpu(cpu, "write"):
            atomic_write_bytes(out_dir / rel, data, tmp_dir=tmp_dir)
        return ManifestRow(item.image_id, OK, "", rel, url, size, verified, width, height,
                           f"{fetched.attempts} attempt(s), {len(data)} bytes stored"), cpu
    except Refused as err:
        return ManifestRow(item.image_id, FAILED, err.reason, url=url, bytes=size, detail=err.detail), cpu
    except OSError as err:
        return ManifestRow(item.image_id, FAILED, "write_error", url=url, bytes=size, detail=str(err)), cpu
    except Exception as err:  # a bug must not stop 1.9M downloads; it is counted and shown
        log.exception("unexpected error on %s", item.image_id)
        return ManifestRow(item.image_id, FAILED, "error", url=url, bytes=size, detail=repr(err)), cpu


def previous_results(path: Path, retry_permanent: bool) -> dict:
    """From a manifest: image id -> relative path of an `ok` photo, or None for a permanent failure."""
    if not path.exists():
        return {}
    bad_lines = []
    last: dict = {}
    for _, row in read_manifest(path, on_bad_line=lambda n, text: bad_lines.append(n)):
        if row.status == OK:
            last[row.image_id] = row.path
        elif row.reason in PERMANENT and not retry_permanent:
            last[row.image_id] = None
        else:
            last.pop(row.image_id, None)
    if bad_lines:
        log.warning("%s: %d unreadable lines ignored (e.g. line %d); their photos are tried again",
                    path, len(bad_lines), bad_lines[0])
    return last


def download(items: Iterable[DownloadItem], out_dir: str | Path, config: DownloadConfig = DownloadConfig(),
             progress: bool = True, total: Optional[int] = None) -> DownloadSummary:
    """Downloads every item into `out_dir`, appending to its manifest; failures never stop the run.

    Args:
        items: the photos, streamed.
        out_dir: the images folder.
        config: sizes, workers, retries.
        progress: show a progress bar.
        total: number of items, for the progress bar, if known.

    Returns:
        The run's summary.

    Raises:
        app.downloader.manifest.ManifestError: the manifest is in use by another process or not ours.
    """
    out_dir = Path(out_dir)
    started = time.time()
    with ManifestWriter(out_dir / config.manifest) as manifest:
        tmp_dir = out_dir / ".partial" / Path(config.manifest).stem
        shutil.rmtree(tmp_dir, ignore_errors=True)  # temporary files of a killed run
        tmp_dir.mkdir(parents=True)
        previous = previous_results(manifest.path, config.retry_permanent)
        if previous:
            gone = sum(1 for rel in previous.values() if rel is None)
            log.info("%s: %d photos ok and %d gone in earlier runs; they are not requested again",
                     manifest.path, len(previous) - gone, gone)
        run = _Run(manifest, out_dir, tmp_dir, config, previous)
        with tqdm(total=total, desc="download", unit="photo", disable=not progress, smoothing=0.05) as bar:
            run.bar = bar
            run.run(items)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            tmp_dir.parent.rmdir()  # unless another shard's download is using it
    run.summary.seconds = time.time() - started
    return run.summary


class _Run:
    """One download run: submits items to a bounded thread pool and records the results in order done."""

    def __init__(self, manifest: ManifestWriter, out_dir: Path, tmp_dir: Path, config: DownloadConfig, previous: dict):
        self.manifest, self.out_dir, self.tmp_dir, self.config = manifest, out_dir, tmp_dir, config
        self.previous = previous
        self.fetcher = Fetcher(dataclasses.replace(config.fetch, pool_size=config.workers))
        self.summary = DownloadSummary()
        self.bar = None
        self._shown = 0.0

    def run(self, items: Iterable[DownloadItem]) -> None:
        window = 2 * self.config.workers
        pending: set = set()
        with futures.ThreadPoolExecutor(self.config.workers, thread_name_prefix="download") as pool:
            try:
                for item in items:
                    if self._skip(item):
                        continue
                    pending.add(pool.submit(fetch_and_store, item, self.fetcher, self.out_dir, self.tmp_dir,
                                            self.config))
                    if len(pending) >= window:
                        done, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                        self._record_all(done)
                self._record_all(futures.as_completed(pending))
                self._show(force=True)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise

    def _skip(self, item: DownloadItem) -> bool:
        if item.image_id not in self.previous:
            return False
        rel = self.previous[item.image_id]
        if rel is None:
            self.summary.skipped_permanent += 1
        elif (self.out_dir / rel).is_file():
            self.summary.skipped_ok += 1
        else:
            return False
        self.bar.update(1)
        return True

    def _record_all(self, done: Iterable[futures.Future]) -> None:
        for future in done:
            row, cpu = future.result()
            line = self.manifest.write(row)
            self.summary.cpu_seconds.update(cpu)
            self.summary.bytes += row.bytes
            if row.status == OK:
                self.summary.ok += 1
            else:
                self.summary.failed += 1
                self.summary.failures.add(row.reason, self.manifest.path.name, line,
                                          f"{row.image_id} {row.url} {row.detail}")
            self.bar.update(1)
            self._show()

    def _show(self, force: bool = False) -> None:
        if force or time.monotonic() - self._shown > 1.0:
            self._shown = time.monotonic()
            self.bar.set_postfix(ok=self.summary.ok, failed=self.summary.failed, refresh=force)
