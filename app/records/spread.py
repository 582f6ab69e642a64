"""Prepare's two heavy steps as shard tasks (`app.distributor`, on Ray): the YFCC100M scan by byte
spans, and the join bucket by bucket (`spread_hooks`, for `app.records.join.prepare_dataset`).

**Scan.** A plain YFCC100M file is cut into byte spans (`app.sources.textfiles.line_spans`; a line
belongs to the span where it starts; a compressed file is one span). A first round of tasks counts
each span's lines, so that every line keeps its number in the file (bad rows name `file:line` as in
process); a second scans each span as `partition_yfcc` scans the whole file, into bucket files of
its own, with the Open Images side (the Flickr ids and their buckets, 12 bytes a photo) sent once
to the cluster. The driver then appends the spans' bucket files to the run's in span order (each
bucket's rows are then in file order, as in process), merges the spans' found photos, and keeps the
`yfcc` split's selection among the spans' own (the bottom K of the union of every span's bottom K
is the file's bottom K). A wanted photo id on lines of two spans is counted as a `yfcc_duplicate`
bad row, as in process (its example may come in another order among that reason's examples).

**Join.** One task per bucket (or per run of small `yfcc` buckets) builds its photos' records and writes them into shards of its own,
in a folder of its own that a retry replaces whole; the driver renames them into the dataset as
each split's shards (at least `min_shards`, padded with empty shards), adds up the counts, the tag
languages and the train tag counts (for the vocabulary), and merges the bad rows and the image
folder's counts in bucket order (the same examples as in process). The dataset then holds the same
records as in process (as a multiset: shard boundaries differ), the same vocabulary, metadata and
stats.

The dataset's temporary folder (and its bucket files) must be on storage that every node reads and
writes, as `--out` must be.
"""

from __future__ import annotations

import collections
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from app.badrows import BadRows
from app.config import PrepareConfig
from app.distributor import Distributor, Shard, ShardJob
from app.errors import InputError
from app.records import schema
from app.records.dataset import DatasetWriter
from app.records.image_folder import ImageFolder
from app.records.join import SPLITS, JoinHooks, RecordContext, _Tally, bucket_records
from app.sources import oid
from app.sources.buckets import BucketFiles
from app.sources.oid_yfcc import Sources
from app.sources.partition import OID_STREAMS, YFCC_STREAMS, FlickrMap, Partitioned, partition_yfcc
from app.sources.textfiles import count_lines, line_spans
from app.sources.yfcc_split import SPLIT as YFCC_SPLIT
from app.sources.yfcc_split import BottomK

SPREAD = ".spread"  # the tasks' outputs, in the dataset's temporary folder
SPAN_BYTES = 256 << 20  # YFCC100M bytes per scan task at most (about 420k lines)


def spread_hooks(distributor: Distributor, progress: bool = True) -> JoinHooks:
    """The hooks that run prepare's YFCC100M scan and join as shard tasks of `distributor`."""
    spread = _Spread(distributor, progress)
    return JoinHooks(scan_yfcc=spread.scan_yfcc, write_splits=spread.write_splits)


@dataclass(frozen=True)
class SpanScan:
    """A scan task's payload: a byte span of the YFCC100M file, its first line's number, where its
    bucket files go, and the bucket counts and the `yfcc` split's cap of the run."""

    path: str
    span: tuple
    first_line: int
    root: str
    oid_buckets: int
    yfcc_buckets: int
    cap: int


def count_span(payload: tuple) -> dict:
    """A task: the number of lines that start in a span `(path, span)`."""
    path, span = payload
    return {"lines": count_lines(path, span)}


def scan_span(flickr: FlickrMap, scan: SpanScan) -> dict:
    """A task: `partition_yfcc` over one span, into bucket files of its own (replaced whole by a retry).

    Returns:
        The wanted photos found (positions in `flickr.wanted`, and their lines), the span's bottom K
        of the `yfcc` split's candidates and how many it saw, and its bad rows.
    """
    root = Path(scan.root)
    shutil.rmtree(root, ignore_errors=True)
    oid_files = BucketFiles(root / "oid", scan.oid_buckets, {"tags": OID_STREAMS["tags"]})
    yfcc_files = BucketFiles(root / "yfcc", scan.yfcc_buckets, {"tags": YFCC_STREAMS["tags"]})
    found, lines = np.zeros(len(flickr.wanted), dtype=bool), np.zeros(len(flickr.wanted), dtype=np.int64)
    selection, bad = BottomK(scan.cap), BadRows()
    partition_yfcc(Path(scan.path), flickr, found, selection, oid_files, yfcc_files, bad, False, tuple(scan.span),
                   scan.first_line, lines)
    oid_files.flush()
    yfcc_files.flush()
    positions = np.flatnonzero(found)
    return {"found": positions, "lines": lines[positions], "selected": selection.selected(),
            "offered": selection.offered, "bad": bad.to_dict()}


@dataclass(frozen=True)
class JoinShared:
    """What every join task reads: the partitioned sources and the run's context."""

    parts: Partitioned
    sources: Sources
    context: RecordContext
    config: PrepareConfig
    root: str


def join_buckets(shared: JoinShared, task: tuple) -> dict:
    """A task: the records of a few buckets (`("oid" | "yfcc", [numbers])`), written into shards of
    its own.

    Returns:
        Its shards by split (`{name: {"records", "bytes", "sha256"}}`), counts, tag languages, train
        tag counts, bad rows and the image folder's counts.
    """
    kind, numbers = task
    out = Path(shared.root) / _task_folder(task)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    parts, bad = shared.parts, BadRows()
    files = parts.oid if kind == "oid" else parts.yfcc
    folder = ImageFolder(shared.sources.images, bad, index=False) if shared.sources.images else None
    sizes = collections.Counter()
    for number in numbers:
        sizes.update(_bucket_sizes(parts, kind, number))
    writers = {split: schema.ShardWriter(out, split, schema.shard_count(size, shared.config.records_per_shard), size)
               for split, size in sizes.items() if size}
    tally = _Tally(shared.config.tag_limit)
    try:
        for number in numbers:
            for record, split in bucket_records(parts, files, number, shared.sources, shared.context, folder, bad):
                writers[split].write(record)
                tally.add(split, record)
        shards = {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return {"shards": shards, "counts": {split: dict(counts) for split, counts in tally.counts.items()},
            "languages": dict(tally.languages), "tag_counts": dict(tally.tag_counts), "bad": bad.to_dict(),
            "without": folder.without.to_dict() if folder else None, "unverified": folder.unverified if folder else 0}


def _task_folder(task: tuple) -> str:
    return f"{task[0]}-{task[1][0]:06d}"


def join_tasks(parts: Partitioned, photos: int) -> list:
    """The join's tasks: each Open Images bucket alone (about `photos` photos each), and runs of
    consecutive `yfcc` buckets of at least `photos` photos (their count follows the split's cap, not
    its size), without the empty ones."""
    tasks = [("oid", [b]) for b in range(parts.oid.count)]
    run, size = [], 0
    for bucket in range(parts.yfcc.count):
        count = len(parts.yfcc_bucket(bucket))
        run, size = (run + [bucket], size + count) if count else (run, size)
        if run and (size >= photos or bucket == parts.yfcc.count - 1):
            tasks.append(("yfcc", run))
            run, size = [], 0
    return tasks


def _bucket_sizes(parts: Partitioned, kind: str, number: int) -> dict:
    """Photos per split in a bucket (an ImageID once per split, as `oid_photos` yields them)."""
    if kind != "oid":
        return {YFCC_SPLIT: len(parts.yfcc_bucket(number))}
    images = parts.oid.read("images", number)
    return {split: len(np.unique(images["key"][images["split"] == code])) for code, split in enumerate(oid.SPLITS)}


class _Spread:
    """The driver's side of the two steps (see the module docstring)."""

    def __init__(self, distributor: Distributor, progress: bool):
        self.distributor, self.progress = distributor, progress

    def scan_yfcc(self, path: Path, flickr: FlickrMap, found: np.ndarray, selection: BottomK, oid_files: BucketFiles,
                  yfcc_files: BucketFiles, bad: BadRows, progress: bool) -> None:
        """`partition_yfcc`, span by span as tasks; merged in span order."""
        spans = line_spans(path, max(2 * self.distributor.slots, -(-os.path.getsize(path) // SPAN_BYTES)))
        lines = [0] * len(spans)
        for i, result in self._results(ShardJob(count_span), [(str(path), span) for span in spans], "count lines"):
            lines[i] = result["lines"]
        firsts = np.cumsum([0] + lines).tolist()
        root = oid_files.root.parent / "yfcc-spans"
        scans = [SpanScan(str(path), span, firsts[i], str(root / f"{i:05d}"), oid_files.count, yfcc_files.count,
                          selection.size) for i, span in enumerate(spans)]
        kept = {}
        for i, result in self._results(ShardJob(scan_span, shared=flickr), scans, "scan YFCC100M"):
            selection.merge(result["selected"], result["offered"])
            kept[i] = (result["bad"], result["found"], result["lines"])
        seen = np.zeros(len(found), dtype=bool)
        for i, scan in enumerate(scans):  # in file order: bucket rows, bad rows, and which line of an id is first
            for files, name in ((oid_files, "oid"), (yfcc_files, "yfcc")):
                files.append_files(Path(scan.root) / name / "tags", "tags")
            span_bad, positions, span_lines = kept.pop(i)
            bad.merge(span_bad)
            again = seen[positions]
            bad.add_many("yfcc_duplicate", str(path), span_lines[again], flickr.wanted[positions[again]])
            seen[positions] = True
        found |= seen
        shutil.rmtree(root, ignore_errors=True)

    def write_splits(self, parts: Partitioned, sources: Sources, context: RecordContext, folder: Optional[ImageFolder],
                     writer: DatasetWriter, config: PrepareConfig, bad: BadRows, progress: bool) -> _Tally:
        """`_write_splits` as one task per bucket; the tasks' shards renamed into the dataset."""
        root = writer.path / SPREAD
        tasks = join_tasks(parts, config.bucket_photos)
        tally, kept = _Tally(config.tag_limit), {}
        job = ShardJob(join_buckets, shared=JoinShared(parts, sources, context, config, str(root)))
        for i, result in self._results(job, tasks, "join", unit="task"):
            for split, counts in result["counts"].items():
                tally.counts[split].update(counts)
            tally.languages.update(result["languages"])
            tally.tag_counts.update(result["tag_counts"])
            kept[i] = (result["bad"], result["without"], result["unverified"], result["shards"])
        ordered = []
        for i, task in enumerate(tasks):  # in bucket order: the same bad-row examples as in process
            bucket_bad, without, unverified, shards = kept.pop(i)
            bad.merge(bucket_bad)
            if folder is not None:
                folder.without.merge(without)
                folder.unverified += unverified
            ordered.append((root / _task_folder(task), shards))
        for split in SPLITS:
            _rename_shards(writer, split, [(where, name, meta) for where, shards in ordered
                                           for name, meta in sorted(shards.get(split, {}).items())],
                           config.min_shards)
        shutil.rmtree(root, ignore_errors=True)
        return tally

    def _results(self, job: ShardJob, payloads: list, desc: str, unit: str = "span") -> Iterator[tuple[int, dict]]:
        """`(index, result)` of every payload, as they complete.

        Raises:
            InputError: a task failed every attempt (a dataset cannot be partial).
        """
        shards = [Shard(f"{i:06d}", 1, payload) for i, payload in enumerate(payloads)]
        for outcome in self.distributor.run(job, shards, progress=self.progress, desc=desc, total=len(shards),
                                            unit=unit):
            if outcome.error:
                raise InputError(f"prepare: {desc}: the task of {outcome.shard.payload!r} failed every attempt: "
                                 f"{outcome.error}")
            yield int(outcome.shard.name), outcome.result


def _rename_shards(writer: DatasetWriter, split: str, shards: list, min_shards: int) -> None:
    """Puts the tasks' shards of a split into the dataset as its shards (padded with empty ones to
    `min_shards`), in the order given."""
    pad = max(0, min_shards - len(shards))
    if pad:
        empty = writer.path / SPREAD / f"empty-{split}"
        empty.mkdir(parents=True, exist_ok=True)
        shards += [(empty, name, meta) for name, meta in
                   sorted(schema.ShardWriter(empty, split, pad, total=0).close().items())]
    total = len(shards)
    renamed = collections.OrderedDict()
    for index, (where, name, meta) in enumerate(shards):
        final = schema.shard_name(split, index, total)
        os.replace(where / name, writer.path / final)
        renamed[final] = meta
    writer.add_shards(dict(renamed))
