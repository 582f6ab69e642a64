"""A finished run loaded back from its folder: the model, its preprocessor, classes and thresholds."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from app.config import RunConfig
from app.records.dataset import DatasetInfo
from app.model.preprocessor import ContextualPreprocessor
from app.runs.rundir import RunDir


class TrainedRun:
    """The best model of a finished run, with its config, preprocessor (the model's inputs), classes
    and per-class thresholds (tuned on validation at the end of training; 0.5 for runs without them).

    Args:
        run_dir: a run folder whose training finished.

    Raises:
        RunError: the folder holds no finished run.
    """

    def __init__(self, run_dir: str | Path | RunDir):
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.run.require_complete()
        self.config: RunConfig = self.run.load_config()
        self.preprocessor: ContextualPreprocessor = self.run.load_preprocessor()
        self.classes = self.run.load_classes()
        self.model: keras.Model = self.run.load_model()
        thresholds = self.run.load_thresholds()
        self.thresholds = thresholds if thresholds is not None else np.full(len(self.classes), 0.5)

    @property
    def name(self) -> str:
        return self.run.name

    def check_dataset(self, info: DatasetInfo) -> None:
        """Refuses a dataset whose classes are not the run's (the outputs would mean other classes)."""
        if [m for m, _ in info.classes] != [m for m, _ in self.classes]:
            raise ValueError(f"{info.data_dir}: its class list differs from the one {self.run.path} was trained on")
