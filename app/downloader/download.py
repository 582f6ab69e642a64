"""The photo download: a shard of `DownloadItem`s fetched, checked, converted, written and recorded.

The stages, one module each: reading what to fetch (`app.downloader.reader`), fetching with retries
(`app.downloader.fetch`), checking and resizing (`app.downloader.images`), writing the files and the
manifest (`app.downloader.manifest`); `app.distributor` decides where shards run. Each photo is, in
a worker thread:

1. fetched with retries; a redirect to Flickr's placeholder is `unavailable`;
2. checked against its expected MD5 (base64 of the digest, as `OriginalMD5`) **before** anything
   else touches the bytes;
3. decoded in full, after its header and its end marker are checked; turned upright, shrunk and
   re-encoded (a JPEG that needs neither is stored byte for byte: its MD5 still matches);
4. written atomically as `IMAGES_DIR/ab/ImageID.jpg`.

The main thread then appends the result to the manifest, so an `ok` row always names a complete
file. A re-run skips `ok` images whose file exists and permanent failures (404, 410, unavailable, no
URL), unless `retry_permanent`; it retries the rest.

In this process (the default) the whole stream is one shard with `manifest.csv`. On Ray
(`run_download` with a `RayDistributor`), the stream is cut into shards of `shard_photos` photos in
input order, each a task with its own `manifest-NNNNN.csv`; a shard whose photos are all `ok` or gone
gets a completion marker (`IMAGES_DIR/.shards/download/NNNNN.json`, with its counts), and a re-run
skips it without reading its manifest.
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

from tqdm import tqdm

from app.badrows import BadRows, Refused
from app.distributor import Distributor, Shard, ShardJob, ShardMarkers
from app.downloader import images
from app.downloader.fetch import FetchConfig, Fetcher
from app.downloader.images import JPEG_QUALITY
from app.downloader.manifest import (FAILED, OK, PERMANENT, ManifestRow, ManifestWriter, manifest_name,
                                     previous_results, relative_path, store_photo)
from app.downloader.reader import DownloadItem

log = logging.getLogger(__name__)
MARKERS = Path(".shards") / "download"
SHARD_PHOTOS = 2000  # photos per shard on Ray: about 2 minutes of a 16-thread task at 20 photos/s


@dataclass(frozen=True)
class DownloadConfig:
    """What to store and how.

    Args:
        max_side: longer side of stored photos in pixels; 0 keeps the original size.
        quality: JPEG quality of re-encoded photos.
        workers: concurrent downloads (per shard task).
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
    """What a run did; `failures` holds counts and `manifest:line` examples by reason.

    On Ray, `shards` counts the shards `done`, `skipped` (complete in an earlier run) and `failed`
    (every attempt); `failed_shards` names the last ones.
    """

    ok: int = 0
    failed: int = 0
    skipped_ok: int = 0
    skipped_permanent: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: BadRows = field(default_factory=BadRows)
    cpu_seconds: collections.Counter = field(default_factory=collections.Counter)
    shards: collections.Counter = field(default_factory=collections.Counter)
    failed_shards: list = field(default_factory=list)

    @property
    def retryable(self) -> int:
        """Failures that a re-run tries again."""
        return sum(n for reason, n in self.failures.counts.items() if reason not in PERMANENT)

    def to_dict(self) -> dict:
        """The counts as JSON (a shard's result and marker)."""
        return {"ok": self.ok, "failed": self.failed, "skipped_ok": self.skipped_ok,
                "skipped_permanent": self.skipped_permanent, "bytes": self.bytes, "seconds": self.seconds,
                "failures": {"counts": dict(self.failures.counts), "examples": self.failures.examples},
                "cpu_seconds": dict(self.cpu_seconds), "retryable": self.retryable}

    def merge(self, shard: dict, skipped: bool = False) -> None:
        """Adds a shard's `to_dict()`; a skipped shard's photos count as skipped (ok, or gone)."""
        if skipped:
            self.skipped_ok += shard["ok"] + shard["skipped_ok"]
            self.skipped_permanent += shard["failed"] + shard["skipped_permanent"]
            return
        for name in ("ok", "failed", "skipped_ok", "skipped_permanent", "bytes"):
            setattr(self, name, getattr(self, name) + shard[name])
        self.failures.merge_counts(shard["failures"]["counts"], shard["failures"]["examples"])
        self.cpu_seconds.update(shard["cpu_seconds"])

    def add_failed_shard(self, shard: Shard, error: str) -> None:
        """Counts a shard that failed every attempt: its photos fail as `shard_error`."""
        self.failed += shard.size
        self.failures.merge_counts({"shard_error": shard.size}, {"shard_error": [f"shard {shard.name}: {error}"]})
        self.failed_shards.append(shard.name)

    def report(self) -> str:
        """A multi-line summary: counts, failures by reason with examples, CPU time by stage, shards."""
        rate = (self.ok + self.failed) / self.seconds if self.seconds else 0.0
        lines = [f"{self.ok} ok, {self.failed} failed in {self.seconds:.1f}s ({rate:.1f} photos/s, "
                 f"{self.bytes / 1e6:.1f} MB downloaded); skipped: {self.skipped_ok} already ok, "
                 f"{self.skipped_permanent} permanent failures of earlier runs"]
        for reason, count in self.failures.counts.most_common():
            lines.append(f"  failed, {reason}: {count}")
            lines.extend(f"    e.g. {example}" for example in self.failures.examples.get(reason, [])[:3])
        if self.cpu_seconds:
            lines.append("  CPU seconds by stage: " + ", ".join(f"{k} {v:.1f}" for k, v in self.cpu_seconds.items()))
        if self.shards:
            lines.append("  shards: " + ", ".join(f"{n} {k}" for k, n in sorted(self.shards.items())))
        if self.failed_shards:
            lines.append(f"  shards that failed every attempt: {', '.join(self.failed_shards)}")
        return "\n".join(lines)


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
        turns = images.quarter_turns(item.rotation)
        if not url:
            raise images.DownloadFailure("no_url", "no URL for this photo")
        with _cpu(cpu, "fetch"):
            fetched = fetcher.get(url)
        url, size = fetched.url, len(fetched.body)
        with _cpu(cpu, "md5"):
            verified = images.check_md5(item.md5, fetched.body)
        with _cpu(cpu, "decode_resize_encode"):
            data, width, height = images.encode_photo(fetched.body, turns, config.max_side, config.quality)
        with _cpu(cpu, "write"):
            store_photo(out_dir, rel, data, tmp_dir)
        return ManifestRow(item.image_id, OK, "", rel, url, size, verified, width, height,
                           f"{fetched.attempts} attempt(s), {len(data)} bytes stored"), cpu
    except Refused as err:
        return ManifestRow(item.image_id, FAILED, err.reason, url=url, bytes=size, detail=err.detail), cpu
    except OSError as err:
        return ManifestRow(item.image_id, FAILED, "write_error", url=url, bytes=size, detail=str(err)), cpu
    except Exception as err:  # a bug must not stop 1.9M downloads; it is counted and shown
        log.exception("unexpected error on %s", item.image_id)
        return ManifestRow(item.image_id, FAILED, "error", url=url, bytes=size, detail=repr(err)), cpu


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


@dataclass(frozen=True)
class DownloadShard:
    """A download task's payload: its photos (a list on Ray; the whole stream in process), where
    they go, and how (`config.manifest` is the shard's)."""

    items: Iterable[DownloadItem]
    out_dir: str
    config: DownloadConfig
    progress: bool = False
    total: Optional[int] = None


def download_shard(shard: DownloadShard) -> dict:
    """A shard task: downloads the shard's photos; returns its summary as JSON (`to_dict`)."""
    return download(shard.items, shard.out_dir, shard.config, progress=shard.progress, total=shard.total).to_dict()


def item_shards(items: Iterable[DownloadItem], out_dir: Path, config: DownloadConfig,
                photos: int) -> Iterator[Shard]:
    """Cuts the items into shards of `photos` in input order, each keyed by a digest of its items and
    with its own manifest (`manifest-NNNNN.csv`)."""
    items = iter(items)
    for number in itertools.count():
        chunk = list(itertools.islice(items, photos))
        if not chunk:
            return
        name = f"{number:05d}"
        digest = hashlib.sha256()
        for item in chunk:
            digest.update(f"{item.image_id}\t{item.url}\t{item.md5}\t{item.rotation!r}\n".encode())
        shard_config = dataclasses.replace(config, manifest=manifest_name(name))
        yield Shard(name, len(chunk), DownloadShard(chunk, str(out_dir), shard_config), digest.hexdigest())


def run_download(items: Iterable[DownloadItem], out_dir: Path, config: DownloadConfig, distributor: Distributor,
                 total: Optional[int] = None, progress: bool = True,
                 shard_photos: Optional[int] = None) -> DownloadSummary:
    """Downloads the items with the distributor and gathers the shards' summaries.

    Args:
        items: the photos, streamed.
        out_dir: the images folder.
        config: sizes, workers, retries.
        distributor: where shards run.
        total: number of items, for the progress bar, if known.
        progress: show one progress bar.
        shard_photos: photos per shard (own manifest and marker); default: `SHARD_PHOTOS` on Ray,
            else the whole stream is one shard with `manifest.csv`.

    Returns:
        The run's summary; `failed_shards` names the shards that failed every attempt.
    """
    started = time.time()
    summary = DownloadSummary()
    shard_photos = shard_photos or (SHARD_PHOTOS if distributor.spreads else None)
    if shard_photos:
        markers = ShardMarkers(Path(out_dir) / MARKERS, accept=lambda result: (
            result["retryable"] == 0 and not (config.retry_permanent and result["failed"])))
        shards = item_shards(items, out_dir, config, shard_photos)
        bar = progress
    else:
        markers, bar = None, False  # download() shows the photos' bar
        shards = [Shard("all", total or 0, DownloadShard(items, str(out_dir), config, progress, total))]
    for outcome in distributor.run(ShardJob(download_shard), shards, markers, bar, "download", total):
        if outcome.error:
            summary.add_failed_shard(outcome.shard, outcome.error)
        else:
            summary.merge(outcome.result, outcome.skipped)
        if markers is not None:
            summary.shards["failed" if outcome.error else "skipped" if outcome.skipped else "done"] += 1
    summary.seconds = time.time() - started
    return summary
