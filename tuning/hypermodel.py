"""KerasTuner hypermodel: tag limit × tag threshold (they change the data) and the rest.

`build()` chooses every value, including tag limit and threshold, and builds the model on the
matching tag lookup; `fit()` turns the values into a `RunConfig` and trains with the same code as
`python app/train.py` (`app.training.run.train`), into the trial's own run folder, and returns the
best epoch's validation mAP (the trainer's model-selection rule). Each (limit, threshold)
vocabulary is built once, by streaming the train split's tags, and reused by every trial that
draws the pair; frozen-backbone features are cached once for the whole search.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import keras
import keras_tuner as kt

from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from app.records.dataset import DatasetInfo
from app.model.preprocess import TagLookup
from app.model.preprocessor import ContextualPreprocessor
from app.model.classifier import build_head
from app.runs.rundir import MODEL
from app.training.run import RunOptions, train

log = logging.getLogger("tuning")

TAG_LIMITS = [2, 5, 10, 20, 40, 80, 160]
TAG_THRESHOLDS = [2, 5, 10, 20, 40, 80]
SEARCHED = ["tag_limit", "tag_threshold", "units", "pooling", "batch_size", "dropout", "learning_rate", "l2"]


class TagHyperModel(kt.HyperModel):
    """Searches the study's space (and learning rate and L2, which the study never tuned).

    Args:
        data_dir: a prepared dataset folder.
        model: `tags` (the study's search) or `contextual` (with a frozen image backbone).
        epochs: maximum epochs per trial.
        trial_time_budget_s: stop a trial's training after this many seconds.
        seed: the first training seed.
        image_size: contextual: the backbone's image size.
        image_weights: contextual: the backbone's weights.
        cache_dir: where the search caches frozen-backbone features.
        text_input: the text the models read: tags, captions (`text`) or both.
        text_branch: with `text_input="both"`, one shared or two separate embedding branches.
    """

    def __init__(self, data_dir, model: str = "tags", epochs: int = 20, trial_time_budget_s: Optional[float] = None,
                 seed: int = 0, image_size: int = ModelConfig.image_size,
                 image_weights: str = ModelConfig.image_weights, cache_dir: Optional[Path] = None,
                 text_input: str = ModelConfig.text_input, text_branch: str = ModelConfig.text_branch):
        super().__init__(name=f"{model}_hypermodel")
        if model not in ("tags", "contextual"):
            raise ValueError(f"model must be 'tags' or 'contextual'. Received: model={model!r}")
        self.info = DatasetInfo.load(data_dir)
        self.model_kind, self.epochs, self.budget, self.seed = model, epochs, trial_time_budget_s, seed
        self.image_size, self.image_weights, self.cache_dir = image_size, image_weights, cache_dir
        self.text_input, self.text_branch = text_input, text_branch
        self._lookups: dict = {}
        self._preprocessors: dict = {}

    def lookup(self, limit: int, threshold: int) -> TagLookup:
        """The (limit, threshold) tag lookup, built once and cached."""
        key = (limit, threshold)
        if key not in self._lookups:
            self._lookups[key] = TagLookup(self.info.vocabulary(limit, threshold, DataConfig().tag_normalization))
            log.info("tag limit %d, threshold %d: vocabulary of %d ids", limit, threshold, self._lookups[key].vocab_size)
        return self._lookups[key]

    def run_config(self, hp: kt.HyperParameters, seed: Optional[int] = None) -> RunConfig:
        """The hyperparameters as a full config that `python app/train.py --config` accepts."""
        return RunConfig(
            data=DataConfig(tag_limit=hp.get("tag_limit"), tag_threshold=hp.get("tag_threshold")),
            model=ModelConfig(model=self.model_kind, embedding_dim=hp.get("units"), hidden_units=hp.get("units"),
                              pooling=hp.get("pooling"), dropout=hp.get("dropout"), l2=hp.get("l2"),
                              image_size=self.image_size, image_weights=self.image_weights,
                              text_input=self.text_input, text_branch=self.text_branch),
            train=TrainConfig(epochs=self.epochs, batch_size=hp.get("batch_size"), learning_rate=hp.get("learning_rate"),
                              seed=self.seed if seed is None else seed,
                              time_budget_hours=self.budget / 3600 if self.budget else None),
        )

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        limit = hp.Choice("tag_limit", TAG_LIMITS)
        threshold = hp.Choice("tag_threshold", TAG_THRESHOLDS)
        hp.Choice("units", [64, 128])
        hp.Choice("pooling", ["max", "avg"])
        hp.Choice("batch_size", [128, 256])
        hp.Choice("dropout", [0.0, 0.1, 0.2, 0.3, 0.4])
        hp.Float("learning_rate", 1e-4, 3e-2, sampling="log")
        hp.Float("l2", 1e-7, 1e-3, sampling="log")
        config = self.run_config(hp)
        keras.utils.set_random_seed(config.train.seed)
        if (limit, threshold) not in self._preprocessors:  # a caption vocabulary streams the train split: once
            self._preprocessors[limit, threshold] = ContextualPreprocessor.for_run(
                config.model, config.data, self.info, self.lookup(limit, threshold))
        preprocessor = self._preprocessors[limit, threshold]
        return build_head(config.model, self.info.num_classes, preprocessor, seed=config.train.seed)

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, run_dir: Path, seed: Optional[int] = None,
            **kwargs) -> dict:
        """Trains `model` on the data of `hp.get("tag_limit")` / `hp.get("tag_threshold")`.

        Args:
            hp: the trial's values.
            model: the model `build(hp)` made.
            run_dir: the trial's run folder (a killed trial resumes there).
            seed: the training seed (default: the search's).

        Returns:
            `val_map` of the best epoch, that epoch, and the epochs run.
        """
        config = self.run_config(hp, seed)
        tags = self.lookup(hp.get("tag_limit"), hp.get("tag_threshold"))
        options = RunOptions(progress=False, tags=tags, head=model, cache_dir=self.cache_dir, finish=False,
                             preprocessor=self._preprocessors.get((hp.get("tag_limit"), hp.get("tag_threshold"))),
                             hparams=dict(hp.values), refuse_unusable=False)  # (the search scores such a trial)
        result = train(self.info.data_dir, run_dir, config, options)
        m = result.metrics
        return {"val_map": m["val_map"], "best_epoch": m["best_epoch"], "epochs_run": m["epochs"]}


class SearchTuner(kt.RandomSearch):
    """RandomSearch whose trials train into their own run folders and log one line each.

    A trial's run folder (`trial_N/run/`) keeps the model of its best epoch (`model.keras`, the rule
    of `app/train.py`) and its TensorBoard logs, hyperparameters included; `get_best_models()` loads
    those models.
    """

    def trial_run_dir(self, trial_id: str) -> Path:
        """The run folder that a trial trains into."""
        return Path(self.get_trial_dir(trial_id)) / "run"

    def run_trial(self, trial, *args, **kwargs) -> dict:
        hp = trial.hyperparameters
        return self.hypermodel.fit(hp, self.hypermodel.build(hp), run_dir=self.trial_run_dir(trial.trial_id))

    def load_model(self, trial) -> keras.Model:
        """The trial's best-epoch model, as `app/train.py` chose and saved it."""
        path = self.trial_run_dir(trial.trial_id) / MODEL
        if not path.exists():
            raise FileNotFoundError(f"{path}: trial {trial.trial_id} kept no model (trials of searches made before "
                                    f"models were kept have only their score)")
        return keras.saving.load_model(path)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        hp = trial.hyperparameters.values
        score = trial.score if trial.score is not None else float("nan")
        log.info("trial %s: val mAP %.4f | limit %s threshold %s units %s %s batch %s dropout %s lr %.2g l2 %.2g",
                 trial.trial_id, score, hp["tag_limit"], hp["tag_threshold"], hp["units"], hp["pooling"],
                 hp["batch_size"], hp["dropout"], hp["learning_rate"], hp["l2"])


if __name__ == "__main__":
    raise SystemExit("tuning/hypermodel.py is a library module (the search's hypermodel): "
                     "run python tuning/search.py --help or python tuning/compare.py --help")
