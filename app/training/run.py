"""One training run, end to end: the one path that `app/train.py` and the KerasTuner search share.

dataset folder -> run folder check (fingerprint, lock) -> model -> features (frozen backbone)
-> trainer with callbacks -> best model by validation mAP -> validation and test mAP.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from app.config import RunConfig
from app.records.dataset import DatasetInfo
from app.records.pipeline import make_dataset
from app.records.unseen import UnseenClasses
from app.model.preprocess import TagLookup
from app.model.preprocessor import ContextualPreprocessor
from app.evaluation.metrics import sparse_average_precisions, sparse_mean_average_precision
from app.evaluation.reliability import small_split_warning, tuned_thresholds
from app.evaluation.truth import PairScores, SplitTruth, load_truth
from app.model.classifier import (attach_backbone, build_backbone, build_head, resolve_image_weights,
                                  silence_classes, transfer_pretrained)
from app.text.encoders import check_encoder_available, encoder_from_spec
from app.runs.rundir import COMPLETE, NEW, Fingerprint, RunDir, RunError
from app.training.callbacks import (BestModel, Checkpoint, EarlyStopping, History, Progress, TimeBudget,
                                    read_history)
from app.training.features import FeatureStore, default_cache_root
from app.training.optimizer import LazyAdam
from app.training.strategy import broadcast_from_chief, get_strategy, is_chief, worker_shards
from app.training.trainer import Trainer, masked_bce, steps_for
from app.training.usable import check_inputs, random_weights_warning
from app.wording import plural

log = logging.getLogger("app.training")
STATES = {NEW: 0, "resume": 1, COMPLETE: 2}
BACKBONE_SEED = 1234  # see _fit
REFUSED = 9


@dataclass
class RunResult:
    """What `train` did: `trained`, `complete` (finished earlier: nothing done) or `worker`
    (a non-chief multi-worker process: the chief reports)."""

    run_dir: Path
    status: str
    history: list
    metrics: dict
    seconds: float


@dataclass
class RunOptions:
    """How to execute a run, beyond its config.

    Args:
        progress: show progress bars (on a terminal).
        overwrite: replace a run folder that holds another run.
        tags: a ready tag lookup (the tuner caches one per limit and threshold).
        preprocessor: the ready inputs of `head` (the tuner's, whose word vocabulary is built once).
        head: a ready head model (the tuner's `build()`); built from the config otherwise.
        cache_dir: where frozen-backbone features are cached (default: beside the dataset,
            `app.training.features.default_cache_root`, shared by every run on it).
        finish: tune the class thresholds, score the test split and keep `backup/` (tuning trials
            only need the score and the best epoch's `model.keras`).
        hparams: hyperparameter values to log for TensorBoard's HParams dashboard.
        refuse_unusable: refuse a model that would read no usable input (`app.training.usable`);
            a tuning trial only warns, and the search scores it like any other.
    """

    progress: bool = True
    overwrite: bool = False
    tags: Optional[TagLookup] = None
    preprocessor: Optional[ContextualPreprocessor] = None
    head: Optional[keras.Model] = None
    cache_dir: Optional[Path] = None
    finish: bool = True
    hparams: Optional[dict] = None
    refuse_unusable: bool = True


def train(data_dir: str | Path, run_dir: str | Path, config: RunConfig, options: RunOptions = RunOptions(),
          strategy: Optional[tf.distribute.Strategy] = None) -> RunResult:
    """Trains one model into a run folder, or resumes it, or reports it finished.

    Args:
        data_dir: a prepared dataset folder.
        run_dir: the run folder (`saved_models/NAME`); see `app.runs.rundir`.
        config: data, model and training configuration.
        options: execution options.
        strategy: an already created strategy (else made from `config.train`).

    Returns:
        The run's status, history and metrics.

    Raises:
        RunError, DatasetError, ValueError, FileNotFoundError: with a message for the user.
    """
    started = time.time()
    t, m = config.train, config.model
    strategy = strategy or get_strategy(t.strategy, t.cpu_devices, t.worker_timeout)
    chief = is_chief(strategy)
    info = DatasetInfo.load(data_dir)
    pretrained = _check_request(info, config)
    run = RunDir(run_dir)
    fingerprint = Fingerprint.of(info, config, pretrained)
    with run.lock() if chief else contextlib.nullcontext():
        d = config.data

        def lookup() -> Optional[TagLookup]:  # a vocabulary of other settings streams the train split
            return options.tags or (TagLookup(info.vocabulary(d.tag_limit, d.tag_threshold, d.tag_normalization))
                                    if m.reads_tags else None)

        tags = None
        if pretrained is not None:  # before the folder is touched (--overwrite clears it)
            tags = lookup()
            _check_pretrained(pretrained, config, tags, info)
        state = _agree_on_state(strategy, run, fingerprint, config, options.overwrite)
        if state == COMPLETE:
            history = read_history(run.history_path)
            return RunResult(run.path, "complete", history, run.metrics() if chief else {}, time.time() - started)
        tags = tags or lookup()
        preprocessor = options.preprocessor or ContextualPreprocessor.for_run(m, d, info, tags)
        warnings = check_inputs(info, config, preprocessor, options.refuse_unusable)
        warnings += filter(None, [random_weights_warning(info, config)])
        for warning in warnings:
            log.warning("%s", warning)
        if chief:
            run.begin(fingerprint, config, info, preprocessor)
        log.info("%s model on %s (%s split, %s): %s, %s, strategy %s with %d replica(s)", m.model, info.data_dir,
                 d.train_split, plural(info.split_sizes[d.train_split], "photo"), plural(info.num_classes, "class"),
                 f"vocabulary {(preprocessor.tags or preprocessor.text).vocab_size}" if preprocessor.uses_tags
                 else "no tags", t.strategy, strategy.num_replicas_in_sync)
        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16" if t.mixed_precision else "float32")
        try:
            return _fit(info, run, config, options, strategy, chief, preprocessor, pretrained, started, warnings)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)


def _check_request(info: DatasetInfo, config: RunConfig) -> Optional[RunDir]:
    """Checks what can be checked before anything is written; returns the pretrained run, if any."""
    m, t = config.model, config.train
    _check_splits(info, config)
    UnseenClasses.read(config.data.unseen_classes, info.classes)  # a bad class file, before anything is written
    if m.uses_vectors:
        check_encoder_available(m.text_encoder)  # a user's model path, before the run folder is written
    if m.uses_image:
        resolve_image_weights(m.image_weights)  # fails before anything is written
    if t.pretrained and not m.uses_tags:
        raise ValueError(f"--pretrained initialises a tag embedding, and an {m.model}-only model has none. "
                         f"Received: pretrained={t.pretrained!r}")
    return RunDir(t.pretrained).require_complete() if t.pretrained else None


def _check_splits(info: DatasetInfo, config: RunConfig) -> None:
    train_split = config.data.train_split
    for split in (train_split, "validation"):
        if not info.split_sizes.get(split):
            raise ValueError(f"{info.data_dir}: the {split} split is empty; a run needs photos to train on and "
                             f"validation photos (to choose the best epoch)")
    if train_split == "yfcc" and config.train.loss_on == "verified":
        raise ValueError("the yfcc split has no verified labels (its targets are autotags): --loss-on verified "
                         "would train on nothing; use --loss-on all")
    counts = info.stats["splits"].get(train_split, {})
    needed = "with_verified_labels" if config.train.loss_on == "verified" else "with_targets"
    if counts.get(needed, 1) == 0:  # (a pseudo-labelled train split has targets by construction)
        raise ValueError(f"{info.data_dir}: none of the {counts.get('images')} photos of the {train_split} split has "
                         f"{'a verified label' if needed == 'with_verified_labels' else 'a target'} (see its "
                         f"stats.json and prepare's warnings): training would learn nothing")


def _check_pretrained(pretrained: RunDir, config: RunConfig, tags: TagLookup, info: DatasetInfo) -> None:
    """Refuses a pre-trained run whose tag embedding, tag ids or classes do not fit this run."""
    source = pretrained.load_config().model
    if not source.uses_tags:
        raise RunError(f"{pretrained.path}: an {source.model}-only run has no tag embedding to start from")
    if source.embedding_dim != config.model.embedding_dim:
        raise RunError(f"{pretrained.path}: its tag embedding has {source.embedding_dim} dimensions, this run's "
                       f"{config.model.embedding_dim} (give --embedding-dim {source.embedding_dim})")
    vocab = pretrained.load_vocab()
    same = vocab is not None and all(getattr(vocab, k) == getattr(tags.vocab, k)
                                     for k in ("tokens", "limit", "lowercase", "normalization", "forms"))
    if not same:
        raise RunError(f"{pretrained.path}: its tag vocabulary is not this run's (pre-train on the same dataset "
                       f"with the same --tag-limit, --tag-threshold and --tag-normalization)")
    if [mid for mid, _ in pretrained.load_classes()] != [mid for mid, _ in info.classes]:
        raise RunError(f"{pretrained.path}: its classes are not those of {info.data_dir}")


def _agree_on_state(strategy, run: RunDir, fingerprint: Fingerprint, config: RunConfig, overwrite: bool) -> str:
    """The chief decides new / resume / complete (or refuses); every worker learns its decision."""
    error, state = None, None
    if is_chief(strategy):
        try:
            state = run.state(fingerprint, config)
        except RunError as err:
            if not overwrite:
                error = err
            else:
                log.info("--overwrite: replacing %s", run.path)
                run.clear()
                state = NEW
    code = broadcast_from_chief(strategy, REFUSED if error else STATES.get(state, 0))
    if error is not None:
        raise error
    if code == REFUSED:
        raise RunError(f"{run.path}: the chief refused the run folder (see its log)")
    return next(name for name, value in STATES.items() if value == code)


def _fit(info: DatasetInfo, run: RunDir, config: RunConfig, options: RunOptions, strategy, chief: bool,
         preprocessor: ContextualPreprocessor, pretrained: Optional[RunDir], started: float,
         warnings: list) -> RunResult:
    m, t = config.model, config.train
    if m.uses_vectors and chief:
        run.save_text_encoder(encoder_from_spec(m.text_encoder).key)
    with strategy.scope():
        image_size = preprocessor.image_size
        # One seed for the backbone, whatever the run's: with random weights it is then the same function
        # in every run, as features cached per dataset (and shared by its runs) assume.
        keras.utils.set_random_seed(BACKBONE_SEED)
        backbone = build_backbone(image_size, m.image_weights, m.train_backbone) if image_size else None
        keras.utils.set_random_seed(t.seed)
        head = options.head or build_head(m, info.num_classes, preprocessor, seed=t.seed)
        if pretrained is not None:
            moved = transfer_pretrained(pretrained.load_model(), head, t.freeze_embedding)
            log.info("initialised from %s: %s%s", pretrained.path, ", ".join(moved),
                     " (embedding frozen)" if t.freeze_embedding else "")
        full = attach_backbone(head, backbone)
        frozen = image_size is not None and not m.train_backbone
        trained = head if frozen else full
        optimizer = LazyAdam(learning_rate=t.learning_rate)
        if t.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(trained.trainable_variables)
    features = None
    if frozen:
        features = FeatureStore(options.cache_dir or default_cache_root(info, run.cache_dir), info, image_size,
                                m.image_weights, backbone)
        features.extract(backbone, _feature_jobs(info, features, strategy, config.data.train_split), strategy,
                         options.progress)
    inputs = RunInputs(info, config, preprocessor, features, options.cache_dir or run.cache_dir)
    trainer = Trainer(strategy, trained, optimizer, t.batch_size, t.mixed_precision)
    steps = steps_for(info.split_sizes[config.data.train_split], t.batch_size)
    history = trainer.fit(inputs.train_dataset, steps, t.epochs, inputs.validation_metrics,
                          _callbacks(run, config, options, strategy, chief, full, steps))
    if not chief:
        return RunResult(run.path, "worker", history, {}, time.time() - started)
    metrics = _final_metrics(run, config, options, inputs, trainer, head, frozen, history, started, warnings)
    run.finish(metrics, config)
    return RunResult(run.path, "trained", history, metrics, time.time() - started)


def _callbacks(run: RunDir, config: RunConfig, options: RunOptions, strategy, chief: bool, full: keras.Model,
               steps: int) -> list:
    t = config.train
    best = BestModel(strategy, (lambda: run.save_model(full)) if chief else None)
    callbacks = [Checkpoint(run.backup_dir, chief, {"best": best.best, "best_epoch": best.best_epoch}), best]
    if chief:
        callbacks.append(History(run.history_path, run.logs_dir, options.hparams))
    callbacks.append(Progress(t.epochs, steps, bar=options.progress and chief))  # the epoch's line, then why it stops
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(best, t.early_stopping_patience))
    if t.time_budget_hours is not None:
        callbacks.append(TimeBudget(t.time_budget_hours * 3600))
    return callbacks


def _feature_jobs(info: DatasetInfo, features: FeatureStore, strategy, train_split: str) -> list:
    """The (shard, feature file) pairs this worker needs: its own shards of the split it trains on,
    all of validation and test."""
    index, count = worker_shards(strategy)
    jobs = []
    for split in (train_split, "validation", "test"):
        pairs = list(zip(info.shard_files(split), features.files(split)))
        jobs += pairs[index::count] if split == train_split else pairs
    return jobs


def _final_metrics(run: RunDir, config: RunConfig, options: RunOptions, inputs: "RunInputs", trainer: Trainer,
                   head: keras.Model, frozen: bool, history: list, started: float, input_warnings: list) -> dict:
    """The best epoch's metrics (and, with `options.finish`, the thresholds and test mAP), with every
    warning about what the run could learn from and how far its figures can be trusted."""
    best_epoch = max(history, key=lambda row: row["val_map"])
    patience, last = config.train.early_stopping_patience, int(history[-1]["epoch"])
    metrics = {"model": config.model.model, "epochs": len(history), "best_epoch": int(best_epoch["epoch"]),
               "val_map": best_epoch["val_map"], "val_loss": best_epoch["val_loss"], "data": str(inputs.info.data_dir),
               "seconds": round(time.time() - started, 1),
               "stopped_early": bool(patience) and last < config.train.epochs and last - best_epoch["epoch"] >= patience}
    if inputs.unseen:  # what was held out, by name (the file may change later; the embedding head reads this)
        metrics["unseen_classes"] = inputs.unseen.names(inputs.info.classes)
    found = _small_split_warnings(inputs.info, history, options.finish)  # (the input warnings were logged)
    if options.finish:
        best = run.load_model()
        if inputs.unseen:  # their untrained outputs would read as scores
            silence_classes(best, inputs.unseen.indices)
            run.save_model(best)
        trainer.model.set_weights((best.get_layer(head.name) if frozen else best).get_weights())
        _, scores = inputs.score_split(trainer, "validation")
        thresholds, note = tuned_thresholds(inputs.truth("validation").pairs, scores,
                                            inputs.info.split_sizes["validation"])
        if inputs.unseen:  # never confident: a held-out class is scored by the embedding head (--classes)
            thresholds = np.array(thresholds, np.float64)
            thresholds[list(inputs.unseen.indices)] = 1.0
        run.save_thresholds(thresholds, "validation" if note is None else None, note)
        found += [note] if note else []
        test = inputs.validation_metrics(trainer, "test")
        metrics.update(test_map=test["val_map"], test_loss=test["val_loss"])
    else:
        shutil.rmtree(run.backup_dir, ignore_errors=True)
    for warning in found:
        log.warning("%s", warning)
    warnings = input_warnings + found
    return {**metrics, "warnings": warnings} if warnings else metrics


def _small_split_warnings(info: DatasetInfo, history: list, with_test: bool) -> list[str]:
    """Warnings for a validation (and test) split too small for its mAP to mean much (`app.evaluation.reliability`)."""
    warnings = []
    for split in ("validation", "test") if with_test else ("validation",):
        warning = small_split_warning(split, info.split_sizes.get(split, 0))
        if warning and split == "validation":
            low, high = min(row["val_map"] for row in history), max(row["val_map"] for row in history)
            warning += (f"; it chose the best epoch, and it ranged {low:.4f}-{high:.4f} over the epochs"
                        if low != high else "; it chose the best epoch")
        warnings += [warning] if warning else []
    return warnings


class RunInputs:
    """The datasets of one run: shards streamed through tf.data, with frozen-backbone features
    zipped in when the backbone is frozen.

    Args:
        info: the dataset.
        config: the run configuration.
        preprocessor: the model's inputs.
        features: the feature store (None unless the backbone is frozen).
        cache_root: where the splits read every epoch (train, validation) are cached as parsed
            rows (`app.records.parsed_cache`); None parses every epoch.
    """

    def __init__(self, info: DatasetInfo, config: RunConfig, preprocessor: ContextualPreprocessor,
                 features: Optional[FeatureStore], cache_root: Optional[Path] = None):
        self.info, self.config, self.preprocessor, self.features = info, config, preprocessor, features
        self.cache_root = cache_root
        self.unseen = UnseenClasses.read(config.data.unseen_classes, info.classes)
        self._truth: dict = {}
        self._eval: dict = {}

    def _dataset(self, split: str, batch_size: int, **kwargs) -> tf.data.Dataset:
        t = self.config.train
        return make_dataset(self.info, split, self.preprocessor, batch_size=batch_size,
                            verified_only=t.loss_on == "verified", shuffle_buffer=t.shuffle_buffer,
                            feature_files=self.features.files(split) if self.features else None, **kwargs)

    def train_dataset(self, epoch: int, ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        t = self.config.train
        ds = self._dataset(self.config.data.train_split, ctx.get_per_replica_batch_size(t.batch_size), training=True,
                           seed=t.seed * 1000 + epoch, repeat=True, input_context=ctx, cache_root=self.cache_root)
        tags = self.preprocessor.tags
        return self.unseen.hide(ds, self.info.num_classes, self.unseen.tag_ids(tags.vocab) if tags else [])

    def eval_dataset(self, split: str) -> tf.data.Dataset:
        """A split in order (built once: each new pipeline's traced functions stay in memory)."""
        if split not in self._eval:  # validation is read every epoch, the test split once
            self._eval[split] = self._dataset(split, 256, cache_root=self.cache_root if split == "validation" else None)
        return self._eval[split]

    def truth(self, split: str) -> SplitTruth:
        """A split's ground truth, sparse (read once)."""
        if split not in self._truth:
            self._truth[split] = load_truth(self.info, split)
        return self._truth[split]

    def score_split(self, trainer: Trainer, split: str) -> tuple[float, np.ndarray]:
        """Streams a split through the model, keeping only running sums and the verified pairs' scores.

        Returns:
            `(loss, scores)`: the mean training loss per photo, and the score at each verified pair
            of `self.truth(split)`.
        """
        pairs = PairScores(self.truth(split))
        total, count = 0.0, 0
        for inputs, targets, mask in self.eval_dataset(split):
            scores = trainer.eval_step(inputs)
            total += float(tf.reduce_sum(masked_bce(targets, scores, mask)))
            count += len(scores)
            pairs.add(scores)
        return total / max(count, 1), pairs.result()

    def validation_metrics(self, trainer: Trainer, split: str = "validation") -> dict:
        """`val_loss` (the training loss) and `val_map` (Open Images protocol) on a split: over the seen
        classes only, when some are unseen (`--unseen-classes`)."""
        loss, scores = self.score_split(trainer, split)
        if not self.unseen:
            return {"val_loss": loss, "val_map": sparse_mean_average_precision(self.truth(split).pairs, scores)}
        ap = sparse_average_precisions(self.truth(split).pairs, scores)
        ap[list(self.unseen.indices)] = np.nan
        return {"val_loss": loss, "val_map": float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")}
