"""A run's embedding head on disk: `RUN/embedding/` (weights.npz, embedding.json), written whole or not at all.

weights.npz holds the head's own layers (`app.model.embedding.HEAD_LAYERS`); loading rebuilds the head
on the run's classifier, so the two share the classifier's weights (an export stores them once).

embedding.json records the run it was trained on (`RunDir.identity`), the text encoder
(`name@version` and the spec that loads it), the calibration of cosines fitted on validation, the
unseen classes and the validation figures. A head whose run was retrained, or read with another
encoder, is refused.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from app.errors import InputError
from app.fileio import atomic_folder, atomic_write_json
from app.model.embedding import HEAD_LAYERS, build_embedding_model
from app.model.zero_shot import Calibration
from app.runs.rundir import RunDir

FOLDER = "embedding"
WEIGHTS = "weights.npz"
RECORD = "embedding.json"
TRAIN_HINT = "python app/train.py --embedding-head, with the run's flags and --out"


@dataclass
class EmbeddingHead:
    """The embedding model of a run, with its calibration and what it was made from."""

    model: keras.Model
    calibration: Calibration
    record: dict

    @property
    def identity(self) -> str:
        """A short hash of the head's weights and calibration: a head trained again is another head."""
        import hashlib

        digest = hashlib.sha256(json.dumps(self.record.get("calibration"), sort_keys=True).encode())
        for layer in self.model.layers:
            if layer.name in HEAD_LAYERS:
                for weight in layer.get_weights():
                    digest.update(np.ascontiguousarray(weight).tobytes())
        return digest.hexdigest()[:12]

    @property
    def encoder(self) -> str:
        """`name@version` of the text encoder whose space the head maps photos into."""
        return self.record["encoder"]

    def save(self, run: RunDir) -> Path:
        """Writes `RUN/embedding/` atomically (a temporary sibling swapped in once complete)."""
        target = run.path / FOLDER
        with atomic_folder(target) as tmp:
            np.savez(tmp / WEIGHTS, **{f"{layer.name}.{i}": w for layer in self.model.layers
                                       if layer.name in HEAD_LAYERS for i, w in enumerate(layer.get_weights())})
            record = {**self.record, "calibration": {"scale": self.calibration.scale, "bias": self.calibration.bias}}
            atomic_write_json(tmp / RECORD, record)
        return target

    @classmethod
    def load(cls, run: RunDir, classifier: keras.Model) -> "EmbeddingHead":
        """Reads a run's head on its classifier (the run's model), refusing one trained on another state of
        the run.

        Raises:
            InputError: no head, or one of another state of the run.
        """
        folder = run.path / FOLDER
        if not (folder / RECORD).is_file():
            raise InputError(f"{run.path}: no embedding head; train one with {TRAIN_HINT}")
        record = cls.record_of(run)
        if record.get("run") != run.identity():
            raise InputError(f"{folder}: trained on another state of the run ({record.get('run')}; the run is now "
                             f"{run.identity()}): train it again with {TRAIN_HINT}")
        try:
            with np.load(folder / WEIGHTS) as saved:
                weights = {key: saved[key] for key in saved.files}
            model = build_embedding_model(classifier, weights["class_name_vectors.0"], weights.get("word_vectors.0"))
            for layer in model.layers:
                if layer.name in HEAD_LAYERS:
                    layer.set_weights([weights[f"{layer.name}.{i}"] for i in range(len(layer.weights))])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise InputError(f"{folder / WEIGHTS}: not this run's embedding head ({type(err).__name__}: {err}); "
                             f"train it again with {TRAIN_HINT}") from None
        return cls(model, Calibration(**record["calibration"]), record)


    @staticmethod
    def record_of(run: RunDir) -> dict:
        """The head's embedding.json (what it was made from), without loading its model.

        Raises:
            InputError: the record is not a JSON object with a calibration.
        """
        path = run.path / FOLDER / RECORD
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            Calibration(**record["calibration"])
        except (ValueError, KeyError, TypeError) as err:  # (a calibration that is not two finite numbers too)
            raise InputError(f"{path}: not an embedding head's record ({type(err).__name__}: {err}): train it again "
                             f"with {TRAIN_HINT}") from None
        return record


def record_encoder(record: dict):
    """The text encoder a head's record names (`encoder_spec`), refused when the installed version differs.

    Raises:
        InputError: another version of the encoder is installed now.
    """
    from app.text.encoders import encoder_from_spec

    encoder = encoder_from_spec(record.get("encoder_spec", "use"))
    if record["encoder"] != f"{encoder.name}@{encoder.version}":
        raise InputError(f"the embedding head was trained with the text encoder {record['encoder']}; the one "
                         f"installed is {encoder.name}@{encoder.version}: train the head again")
    return encoder


def has_embedding_head(run: RunDir) -> bool:
    """Whether the run folder holds an embedding head (of any state of the run)."""
    return (run.path / FOLDER / RECORD).is_file()
