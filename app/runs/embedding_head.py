"""A run's embedding head on disk: `RUN/embedding/` (model.keras, embedding.json), written whole or not at all.

embedding.json records the run it was trained on (`RunDir.identity`), the text encoder
(`name@version`), the calibration of cosines fitted on validation, the unseen classes and the
validation figures. A head whose run was retrained, or read with another encoder, is refused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras

from app.errors import InputError
from app.fileio import atomic_write_json, swap_in_folder
from app.model.zero_shot import Calibration
from app.runs.rundir import RunDir

FOLDER = "embedding"
MODEL = "model.keras"
RECORD = "embedding.json"


@dataclass
class EmbeddingHead:
    """The embedding model of a run, with its calibration and what it was made from."""

    model: keras.Model
    calibration: Calibration
    record: dict

    @property
    def encoder(self) -> str:
        return self.record["encoder"]

    def save(self, run: RunDir) -> Path:
        """Writes `RUN/embedding/` atomically (a temporary sibling swapped in once complete)."""
        target = run.path / FOLDER
        tmp = Path(tempfile.mkdtemp(dir=run.path, prefix=f".{FOLDER}.", suffix=".tmp"))
        try:
            self.model.save(tmp / MODEL)
            record = {**self.record, "calibration": {"scale": self.calibration.scale, "bias": self.calibration.bias}}
            atomic_write_json(tmp / RECORD, record)
            swap_in_folder(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def load(cls, run: RunDir, encoder_id: str | None = None) -> "EmbeddingHead":
        """Reads a run's head, refusing one trained on another state of the run or with another encoder.

        Raises:
            InputError: no head (train one: `train.py --embedding-head`), or a mismatch.
        """
        folder = run.path / FOLDER
        if not (folder / RECORD).is_file():
            raise InputError(f"{run.path}: no embedding head (train one with: python app/train.py --embedding-head "
                             f"... --out {run.path})")
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        if record["run"] != run.identity():
            raise InputError(f"{folder}: trained on another state of the run ({record['run']}, the run is now "
                             f"{run.identity()}): retrain it with --embedding-head")
        if encoder_id is not None and record["encoder"] != encoder_id:
            raise InputError(f"{folder}: trained with the text encoder {record['encoder']}, not {encoder_id}")
        model = keras.saving.load_model(folder / MODEL)
        return cls(model, Calibration(**record["calibration"]), record)


def has_embedding_head(run: RunDir) -> bool:
    return (run.path / FOLDER / RECORD).is_file()
