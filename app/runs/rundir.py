"""The run folder (`saved_models/NAME/`): the one module that knows its files.

    run.json          what the run was made from (its fingerprint), its data folder and status
    config.json       the full RunConfig (`python app/train.py --config` takes it)
    preprocessor.json the model's inputs (`app.model.preprocessor.ContextualPreprocessor`)
    vocab.tsv         the tag vocabulary (with the tag limit and cleaning: all a TagLookup needs)
    classes.csv       output order of the 500 classes (MID,DisplayName)
    hierarchy.json    the class hierarchy of the dataset
    model.keras       the best model by validation mAP (tag ids and/or uint8 pixels in)
    history.csv       one row per epoch; logs/train/ and logs/validation/ hold the same for TensorBoard
    metrics.json      validation and test mAP of the best model
    thresholds.json   per-class thresholds tuned on validation when training ends (0.5 and a note
                      when validation is too small: app.evaluation.reliability)
    text_encoder.json the text encoder (name, version, dim) the embedding's starting vectors came from
                      (runs with --word-vectors frozen or fine-tuned)
    backup/           the last epoch's checkpoint (resume after a kill)
    cache/            parsed rows of the train and validation records (`app.records.parsed_cache`);
                      frozen-backbone features where the dataset's own feature cache cannot be
                      written (`app.training.features`: beside the dataset, shared by its runs)
    serving/N/        TensorFlow Serving exports (app/export.py)

`run.json` also records the size and SHA-256 of the files that decide what the run computes
(`config.json`, `preprocessor.json` and its vocabularies, `classes.csv`, `hierarchy.json` from the
start; `model.keras`, `thresholds.json`, `metrics.json` and `history.csv` once finished), as a
dataset's marker does: resuming, reporting, loading (export, predict, evaluate) refuse a folder
whose recorded file was edited, replaced or removed (runs from before this record are read as
they are).

A run's fingerprint is the dataset's content hash, every config field that decides what is
computed (not the execution settings: strategy, epochs to reach, time budget), and the code
version. Re-running with the same fingerprint resumes or reports the finished run; another
fingerprint in an existing folder is refused, naming what differs, unless `overwrite`. Nothing
is written into the folder before that check. Writers hold a lock beside the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from app import __version__
from app.config import RunConfig, read_json
from app.records.dataset import CLASSES, HIERARCHY, VOCAB, DatasetInfo, file_sha256
from app.sources.oid import read_classes
from app.text.tags import Vocabulary
from app.errors import InputError
from app.fileio import atomic_output, atomic_write_json, atomic_write_text, folder_lock, remove_stale_temps

if TYPE_CHECKING:  # the preprocessor needs TensorFlow, which reading a run's record does not
    from app.model.preprocessor import ContextualPreprocessor

RUN = "run.json"
CONFIG = "config.json"
MODEL = "model.keras"
HISTORY = "history.csv"
METRICS = "metrics.json"
THRESHOLDS = "thresholds.json"
TEXT_ENCODER = "text_encoder.json"

NEW, RESUME, COMPLETE = "new", "resume", "complete"


class RunError(InputError):
    """A run folder that cannot be used as asked (mismatch, in use, not trained)."""


@dataclass(frozen=True)
class Fingerprint:
    """What a run is made from."""

    dataset: str
    config: dict
    code: str

    @classmethod
    def of(cls, dataset: DatasetInfo, config: RunConfig, pretrained: Optional["RunDir"] = None) -> "Fingerprint":
        """The fingerprint of a run; a pre-trained run it starts from counts by its own fingerprint,
        so retraining that run (in the same folder) makes this one another run."""
        fields = config.fingerprint()
        if pretrained is not None:  # by what it is, not where it is
            fields["train"]["pretrained"] = pretrained.identity()
        return cls(dataset.fingerprint, fields, __version__)

    def differences(self, other: "Fingerprint") -> list[str]:
        """Human-readable differences, e.g. `model.hidden_units 128 -> 64`. A setting this fingerprint
        does not record (its run is older than the setting) at its default is no difference: the older
        run computed what the default computes."""
        out, defaults = [], RunConfig().to_dict()
        if self.dataset != other.dataset:
            out.append(f"dataset {self.dataset[:12]} -> {other.dataset[:12]}")
        if self.code != other.code:
            out.append(f"code version {self.code} -> {other.code}")
        for section in sorted(set(self.config) | set(other.config)):
            old, new, default = self.config.get(section, {}), other.config.get(section, {}), defaults.get(section, {})
            out += [f"{section}.{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k) and not (k not in old and k in default and new.get(k) == default[k])]
        return out


class RunDir:
    """A run folder. Reading needs no lock; writing happens inside `lock()`.

    Args:
        path: the folder (`saved_models/NAME`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    # === Paths of the files others write through their own writers ===
    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def backup_dir(self) -> Path:
        return self.path / "backup"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def serving_dir(self) -> Path:
        return self.path / "serving"

    # === State ===
    def record(self) -> Optional[dict]:
        """The run's `run.json`, or None for a folder that holds no run."""
        path = self.path / RUN
        return read_json(path) if path.exists() else None

    def state(self, fingerprint: Fingerprint, config: RunConfig) -> str:
        """`new`, `resume` or `complete` for a run with this fingerprint and config.

        Raises:
            RunError: the folder holds another run (names what differs), or files but no run.
        """
        record = self.record()
        if record is None:
            if self.path.exists() and any(p.name != "cache" for p in self.path.iterdir()):
                raise RunError(f"{self.path}: not empty and not a run folder (no {RUN}); use another --name or "
                               f"--overwrite")
            return NEW
        self.verify(record)
        diff = Fingerprint(**record["fingerprint"]).differences(fingerprint)
        if diff:
            raise RunError(f"{self.path} holds another run ({'; '.join(diff)}); use another --name, or "
                           f"--overwrite to replace it")
        if record["status"] == COMPLETE and not _asks_for_more(record["finished"], config):
            return COMPLETE
        return RESUME

    def metrics(self) -> dict:
        return read_json(self.path / METRICS)

    def identity(self) -> str:
        """A short hash of what the run was made from (its fingerprint) and of its saved model, so a
        run trained on, into a new best epoch, is another run."""
        digest = hashlib.sha256(json.dumps(self.record()["fingerprint"], sort_keys=True).encode())
        with open(self.model_path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return "run " + digest.hexdigest()[:12]

    def is_complete(self) -> bool:
        """True when the folder holds a run whose training finished."""
        record = self.record()
        return record is not None and record["status"] == COMPLETE

    def require_complete(self) -> "RunDir":
        """Raises a clear error unless the folder holds a finished run."""
        record = self.record()
        if record is None:
            raise RunError(f"{self.path}: no trained run here (no {RUN}); train one with `python app/train.py`")
        if record["status"] != COMPLETE or not self.model_path.exists():
            raise RunError(f"{self.path}: the run has not finished training; re-run `python app/train.py` with the "
                           f"same settings to resume it")
        self.verify(record)
        return self

    def verify(self, record: Optional[dict] = None) -> None:
        """Refuses a folder whose files differ from those `run.json` records (size, then SHA-256).

        Raises:
            RunError: naming the first file that was edited, replaced or removed.
        """
        again = "restore it, or retrain the run (python app/train.py ... --overwrite)"
        for name, meta in sorted(((record or self.record()).get("files") or {}).items()):
            path = self.path / name
            if not path.is_file():
                raise RunError(f"{path}: missing, but {RUN} records it; {again}")
            if path.stat().st_size != meta["bytes"] or file_sha256(path) != meta["sha256"]:
                raise RunError(f"{path}: edited since the run wrote it (its size or SHA-256 is not the one {RUN} "
                               f"records); {again}")

    # === Reading ===
    def load_config(self) -> RunConfig:
        return RunConfig.load(self.path / CONFIG)

    def load_vocab(self) -> Optional[Vocabulary]:
        path = self.path / VOCAB
        return Vocabulary.load(path) if path.exists() else None

    def load_classes(self) -> list:
        return read_classes(self.path / CLASSES, any_id=True)

    def copy_classes(self, target: Path) -> None:
        """Copies `classes.csv` (MID,DisplayName in output order) to `target` (an export's asset)."""
        shutil.copy(self.path / CLASSES, target)

    def load_preprocessor(self) -> "ContextualPreprocessor":
        """The model's inputs; runs from before `preprocessor.json` get them from their config."""
        from app.model.preprocessor import PREPROCESSOR, ContextualPreprocessor

        if (self.path / PREPROCESSOR).exists():
            return ContextualPreprocessor.load(self.path)
        return ContextualPreprocessor.for_model(self.load_config().model, self.load_vocab())

    @property
    def hierarchy_path(self) -> Path:
        return self.path / HIERARCHY

    @property
    def data_dir(self) -> Path:
        return Path(self.record()["data"])

    def load_thresholds(self):
        import numpy as np

        path = self.path / THRESHOLDS
        return np.asarray(read_json(path)["thresholds"]) if path.exists() else None

    def load_text_encoder(self) -> Optional[dict]:
        """The key (`TextEncoder.key`) of the encoder the run's vectors came from, or None."""
        path = self.path / TEXT_ENCODER
        return read_json(path) if path.exists() else None

    def load_model(self):
        from app.model.classifier import load_classifier

        return load_classifier(self.model_path)

    # === Writing (inside `lock()`) ===
    @contextlib.contextmanager
    def lock(self) -> Iterator["RunDir"]:
        """Holds the run's lock (a file beside the folder); a second process gets a clear error."""
        with folder_lock(self.path, lambda pid: RunError(f"{self.path} is in use by another process (pid {pid}); "
                                                         f"wait for it or use another --name")):
            if self.path.exists():
                remove_stale_temps(self.path)
            yield self

    def clear(self) -> None:
        """Empties the folder (for `--overwrite`), keeping a feature cache of the same dataset."""
        if self.path.exists():
            for child in self.path.iterdir():
                if child.name != "cache":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()

    def begin(self, fingerprint: Fingerprint, config: RunConfig, dataset: DatasetInfo,
              preprocessor: "ContextualPreprocessor") -> None:
        """Writes what the run is made from (after `state` accepted it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        config.save(self.path / CONFIG)
        written = preprocessor.save(self.path)
        atomic_write_text(self.path / CLASSES, dataset.classes_path.read_text(encoding="utf-8"))
        atomic_write_text(self.path / HIERARCHY, dataset.hierarchy_path.read_text(encoding="utf-8"))
        self._write_record(fingerprint, dataset.data_dir, "training", None, [CONFIG, CLASSES, HIERARCHY, *written])

    def save_model(self, model) -> None:
        with atomic_output(self.model_path) as tmp:
            model.save(tmp)

    def finish(self, metrics: dict, config: RunConfig) -> None:
        """Writes the metrics and marks the run complete."""
        atomic_write_json(self.path / METRICS, metrics)
        record = self.record()
        finished = {"epochs": config.train.epochs, "time_budget_hours": config.train.time_budget_hours,
                    "early_stopping_patience": config.train.early_stopping_patience,
                    "stopped_early": bool(metrics.get("stopped_early"))}
        sealed = [*(record.get("files") or {}), MODEL, METRICS, HISTORY, THRESHOLDS, TEXT_ENCODER]
        self._write_record(Fingerprint(**record["fingerprint"]), Path(record["data"]), COMPLETE, finished, sealed)

    def save_thresholds(self, thresholds, split: Optional[str], note: Optional[str] = None) -> None:
        """Writes the per-class thresholds, the split they were tuned on (None: not tuned) and why not."""
        atomic_write_json(self.path / THRESHOLDS, {"split": split, "thresholds": [float(t) for t in thresholds],
                                                   **({"note": note} if note else {})})

    def save_text_encoder(self, key: dict) -> None:
        atomic_write_json(self.path / TEXT_ENCODER, key)

    def _write_record(self, fingerprint: Fingerprint, data: Path, status: str, finished: Optional[dict],
                      sealed: list[str]) -> None:
        """Writes run.json, with the size and SHA-256 of each `sealed` file that exists."""
        files = {name: {"bytes": (self.path / name).stat().st_size, "sha256": file_sha256(self.path / name)}
                 for name in sealed if (self.path / name).is_file()}
        atomic_write_json(self.path / RUN, {"fingerprint": asdict(fingerprint), "data": str(data), "status": status,
                                            "finished": finished, "files": files})


def _asks_for_more(finished: dict, config: RunConfig) -> bool:
    """True when the new execution settings go beyond those the run finished with. A run that stopped
    early goes on only with more patience (or none: 0), not with more epochs (it would stop again)."""
    if finished.get("stopped_early"):
        new = config.train.early_stopping_patience
        return new == 0 or new > finished["early_stopping_patience"]
    if config.train.epochs > finished["epochs"]:
        return True
    old, new = finished["time_budget_hours"], config.train.time_budget_hours
    return old is not None and (new is None or new > old)

