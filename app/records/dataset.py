"""The dataset folder (`tfrecords/NAME/`): the one module that knows its files.

    NAME/{split}-00000-of-0000N.tfrecord   shards (schema: app/records/schema.py); splits train,
                                           validation, test (Open Images) and yfcc (YFCC100M photos
                                           outside Open Images, weakly labelled by their autotags)
    NAME/classes.csv                       class order of the model outputs (MID,DisplayName)
    NAME/hierarchy.json                    the Open Images class hierarchy used for the labels
    NAME/vocab.tsv                         the vocabulary of the prepare run's tag limit/threshold
    NAME/stats.json                        counts, bad rows, warnings, the prepare config
    NAME/dataset.json                      completion marker: every file's size and hash, records per
                                           split, the fingerprint

`DatasetWriter` builds a dataset in a temporary sibling folder and swaps it in whole, only once the
marker is written, so a killed or failed prepare never leaves a mixed folder. `DatasetInfo.load`
refuses a folder without the marker, with a missing, resized or unexpected shard. A shard whose
bytes changed (a flipped byte) is found when TensorFlow reports lost data while reading it: the
command's error then names that shard (`corrupt_shard_message`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.sources.oid import read_classes
from app.text.tags import Vocabulary
from app.cli import on_data_loss
from app.errors import InputError
from app.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, read_folder_marker, swap_in_folder

MARKER = "dataset.json"
STATS = "stats.json"
CLASSES = "classes.csv"
HIERARCHY = "hierarchy.json"
VOCAB = "vocab.tsv"
FORMAT = 2
SPLITS = ("train", "validation", "test", "yfcc")
SHARD_GLOB = "{split}-*-of-*.tfrecord"
_LOADED: dict = {}  # {folder: its shards} of the datasets this process loaded, to name a corrupt shard


class DatasetError(InputError):
    """A dataset folder that is missing, incomplete or mixed."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class DatasetInfo:
    """A complete dataset folder, checked against its marker.

    Args:
        data_dir: the folder.
        classes: `(mid, name)` in output order.
        vocab: the saved vocabulary.
        split_sizes: photos per split.
        fingerprint: hash of every file's content (recorded by the prepare run).
        stats: the prepare run's `stats.json`.
        shards: `{split: [shard paths]}` in order.
        records: `{shard name: record count}`.
    """

    data_dir: Path
    classes: list
    vocab: Vocabulary
    split_sizes: dict
    fingerprint: str
    stats: dict
    shards: dict
    records: dict

    @classmethod
    def load(cls, data_dir: str | Path) -> "DatasetInfo":
        """Loads and checks a dataset folder.

        Raises:
            DatasetError: naming the folder and what is wrong, and saying to re-run prepare.
        """
        data_dir = Path(data_dir)
        marker = _read_marker(data_dir)
        _check_files(data_dir, marker["files"])
        stats = json.loads((data_dir / STATS).read_text(encoding="utf-8"))
        shards = {split: sorted(str(data_dir / n) for n in marker["files"] if n.startswith(f"{split}-"))
                  for split in SPLITS}
        counts = {name: meta["records"] for name, meta in marker["files"].items() if "records" in meta}
        _LOADED[data_dir] = [shard for split in SPLITS for shard in shards[split]]
        return cls(data_dir, read_classes(data_dir / CLASSES, any_id=True), Vocabulary.load(data_dir / VOCAB),
                   {split: c["images"] for split, c in stats["splits"].items()}, marker["fingerprint"], stats, shards,
                   counts)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_machine_labels(self) -> bool:
        """Whether the records carry machine labels: Open Images does, a collection (manifest,
        NUS-WIDE, COCO; `collection` in stats.json) does not."""
        return "collection" not in self.stats

    @property
    def is_demo_world(self) -> bool:
        """The dataset is the generated demo world (its sources lie in it), not real photos."""
        return (self.data_dir / DEMO_SOURCES).is_dir()

    @property
    def hierarchy_path(self) -> Path:
        return self.data_dir / HIERARCHY

    @property
    def classes_path(self) -> Path:
        return self.data_dir / CLASSES

    def shard_files(self, split: str) -> list:
        """A split's shards in order."""
        if not self.shards.get(split):
            raise DatasetError(f"{self.data_dir}: the dataset has no '{split}' shards")
        return self.shards[split]

    def split_digest(self, split: str) -> str:
        """A hash of a split's records (its shards' hashes, in order): equal for two folders that
        hold the same photos in that split."""
        files = _read_marker(self.data_dir)["files"]
        digests = [files[Path(shard).name]["sha256"] for shard in self.shards.get(split, [])]
        return hashlib.sha256(" ".join(digests).encode()).hexdigest()

    def shard_records(self, shard: str | Path) -> int:
        """Records in a shard, as the prepare run wrote them."""
        return self.records[Path(shard).name]

    def vocabulary(self, limit: int, threshold: int, normalization: str = "none") -> Vocabulary:
        """The saved vocabulary if it matches, else one rebuilt by streaming the train split's tags
        (and languages, for a normalisation: `app.text.stemming`)."""
        if (limit, threshold, normalization) == (self.vocab.limit, self.vocab.threshold, self.vocab.normalization):
            return self.vocab
        from app.records.schema import iter_language_tags
        from app.text.stemming import build_normalized_vocabulary

        return build_normalized_vocabulary(iter_language_tags(self.shard_files("train")), limit, threshold,
                                           self.vocab.lowercase, normalization)


def corrupt_shard_message() -> str | None:
    """Names the first shard of a dataset this process loaded that TensorFlow cannot read through
    (read again only now, when a read has failed), or None."""
    import tensorflow as tf

    for shards in reversed(list(_LOADED.values())):
        for shard in shards:
            try:
                for _ in tf.data.TFRecordDataset(shard).batch(4096):
                    pass
            except tf.errors.DataLossError as err:
                what = re.sub(r"\{\{.*?\}\}", "", err.message).split(" [")[0].strip()
                return (f"{shard}: corrupt shard ({what}: a changed byte, or a damaged disk); re-run "
                        f"`python app/prepare.py`")
    return None


on_data_loss(corrupt_shard_message)


def is_complete_dataset(data_dir: str | Path) -> bool:
    """True when a prepare run finished writing the folder (its marker is there); not checked further."""
    return (Path(data_dir) / MARKER).exists()


def _read_marker(data_dir: Path) -> dict:
    return read_folder_marker(data_dir, MARKER, FORMAT, "dataset", "the prepare run that wrote it did not finish, or it "
                              "predates this version", "run `python app/prepare.py` to make it", DatasetError)


def _check_files(data_dir: Path, files: dict) -> None:
    again = "re-run `python app/prepare.py`"
    for name, meta in files.items():
        path = data_dir / name
        if not path.is_file():
            raise DatasetError(f"{path}: missing; the dataset is incomplete, {again}")
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise DatasetError(f"{path}: {size} bytes, but the prepare run wrote {meta['bytes']} "
                               f"(truncated or replaced); {again}")
        if "records" not in meta and file_sha256(path) != meta["sha256"]:  # the small metadata files, in full
            raise DatasetError(f"{path}: edited since the prepare run wrote it (another SHA-256); {again}")
    for split in SPLITS:
        for extra in sorted(set(p.name for p in data_dir.glob(SHARD_GLOB.format(split=split))) - set(files)):
            raise DatasetError(f"{data_dir / extra}: a shard that the prepare run of {MARKER} did not write "
                               f"(a mixed folder); {again}")


DEMO_SOURCES = "raw"  # the demo world's generated sources, inside its dataset
JOIN_TEMP = ".join"  # prepare's bucket files while it runs (an empty folder of it was left by older versions)


def _check_replaceable(target: Path) -> None:
    """Only a dataset folder (or an empty folder, or nothing) may be replaced by a new dataset."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise DatasetError(f"{target}: exists and is not a folder; choose another output folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).exists():
        raise DatasetError(f"{target}: a folder that is not a dataset (no {MARKER}) and not empty: it would be "
                           f"replaced whole; choose another output folder, or remove it first")
    if (target / MARKER).is_file():
        try:
            listed = json.loads((target / MARKER).read_text(encoding="utf-8")).get("files", {})
        except (ValueError, AttributeError):
            listed = {}
        known = {MARKER, DEMO_SOURCES, JOIN_TEMP, *listed}
        for entry in sorted(p.name for p in target.iterdir() if p.name not in known):
            raise DatasetError(f"{target / entry}: not a part of the dataset, and it would be deleted with it (the "
                               f"dataset is replaced whole); move it out first, or choose another output folder")


def _read_back(folder: Path, target: Path) -> None:
    """Reads every file of a finished dataset folder with its own reader (never committing a folder
    that cannot be read).

    Raises:
        DatasetError: naming the file that does not read back; `target` is left as it was.
    """
    from app.sources.hierarchy import Hierarchy

    try:
        info = DatasetInfo.load(folder)
        Hierarchy.from_json(info.hierarchy_path, [mid for mid, _ in info.classes])
    except (ValueError, KeyError, OSError) as err:
        raise DatasetError(f"{target}: the dataset just written does not read back, so it was not put in place "
                           f"(nothing was replaced): {err}") from err


class DatasetWriter:
    """Writes a dataset into a temporary sibling folder and swaps it into place on `commit`.

    Use as a context manager: on an exception the temporary folder is removed and an existing
    dataset at the target stays as it was. One writer per target at a time (a lock file).

    Args:
        target: the dataset folder to (re)place.
    """

    def __init__(self, target: str | Path):
        self.target = Path(target)
        _check_replaceable(self.target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.target.parent / f".{self.target.name}.lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(f"{self.target}: another process is writing this dataset") from None
        for pattern in (f".{self.target.name}.tmp-*", f".{self.target.name}.old-*"):
            for stale in self.target.parent.glob(pattern):  # left by a killed prepare
                shutil.rmtree(stale, ignore_errors=True)
        self.path = self.target.parent / f".{self.target.name}.tmp-{os.getpid()}"
        self.path.mkdir()
        self.shards: dict = {}

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()

    def add_shards(self, shards: dict) -> None:
        """Records shards written into `self.path` as `{name: {"records", "bytes", "sha256"}}`."""
        self.shards.update(shards)

    def write_metadata(self, classes: list, hierarchy_text: str, vocab: Vocabulary) -> None:
        """Writes classes.csv (`[(MID, DisplayName)]` in output order), hierarchy.json and vocab.tsv."""
        atomic_write_text(self.path / CLASSES, "".join(f"{mid},{_csv_field(name)}\n" for mid, name in classes))
        atomic_write_text(self.path / HIERARCHY, hierarchy_text)
        vocab.save(self.path / VOCAB)
        if Vocabulary.load(self.path / VOCAB) != vocab:  # (commit reads every file back too)
            raise DatasetError(f"{self.target / VOCAB}: reads back as another vocabulary than the one written")

    def copy_metadata(self, source: DatasetInfo) -> None:
        """Writes another dataset's classes.csv, hierarchy.json and vocab.tsv, byte for byte."""
        for name in (CLASSES, HIERARCHY, VOCAB):
            atomic_write_bytes(self.path / name, (source.data_dir / name).read_bytes())

    def write_stats(self, stats: dict) -> None:
        """Writes stats.json: what the dataset was made from and its counts."""
        atomic_write_json(self.path / STATS, stats)

    def link_shards(self, source: DatasetInfo, names: dict) -> None:
        """Puts another complete dataset's shards into this one, unchanged, under new names: hard
        links where the file system allows (no copy), else copies.

        Args:
            source: the dataset the shards come from.
            names: `{source shard path: name in this dataset}`.
        """
        files = _read_marker(source.data_dir)["files"]
        for shard, name in names.items():
            try:
                os.link(shard, self.path / name)
            except OSError:
                shutil.copyfile(shard, self.path / name)
            self.shards[name] = dict(files[Path(shard).name])

    def rename_shard(self, name: str, new_name: str) -> None:
        """Renames a shard already added (to number a split's shards from two sources as one)."""
        os.replace(self.path / name, self.path / new_name)
        self.shards[new_name] = self.shards.pop(name)

    def commit(self) -> str:
        """Writes the marker and swaps the folder into place. Returns the fingerprint."""
        files = dict(self.shards)
        for name in (CLASSES, HIERARCHY, VOCAB, STATS):
            path = self.path / name
            files[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        splits = {split: sum(meta["records"] for name, meta in self.shards.items() if name.startswith(f"{split}-"))
                  for split in SPLITS}
        atomic_write_json(self.path / MARKER, {"format": FORMAT, "fingerprint": digest, "splits": splits,
                                               "files": files})
        _read_back(self.path, self.target)
        swap_in_folder(self.path, self.target)
        return digest


def _csv_field(text: str) -> str:
    """A CSV field: quoted, its quotes doubled, when it holds a comma or a quote."""
    return '"' + text.replace('"', '""') + '"' if "," in text or '"' in text else text
