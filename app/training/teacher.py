"""A teacher's pseudo-labels: a finished run labels the `yfcc` split, and a new dataset folder holds
Open Images train plus the selected photos, with the teacher's scores as their soft targets.

    teacher run + dataset ──score the yfcc split──▶ per-class top K ──▶ NEW dataset folder
        train       = the dataset's train shards (hard links) + the selected yfcc photos (pseudo-labelled)
        validation, test = the dataset's own shards (hard links); no yfcc split

A student then trains on the new folder like on any other (`python app/train.py --model image
--data NEW`), and is chosen and scored on the same validation and test photos as its controls. The
saved vocabulary is the source's (Open Images train); a vocabulary of other settings built from the
new folder would also count the kept photos' tags.

**Selection** (`PseudoLabelConfig`). With `top_k` K (default, after Yalniz et al.), each class's K
photos with the highest teacher score are found (the K-th score is the class's cut; ties at the cut
are all kept), and a photo is kept when it reaches the cut of at least one class, with a score of at
least `target_floor` (so a class the teacher never predicts selects nothing). With `top_k` 0, a
photo is kept when its highest score reaches `min_score`. **Targets** are soft: a kept photo's
record gets the teacher's score for every class (under `target_floor`: 0) as its training targets,
and no verified labels; its image, tags and autotags are kept.

Memory is flat in the number of photos: the scores go to a float16 file in the output's temporary
folder (1 KB a photo), the per-class cut is found with a running `[K, classes]` top-K, and records
are streamed twice (scoring, then writing).

**Scoring is one task per shard** of the `yfcc` split (`app.distributor`): in this process, or on
Ray, where each actor loads the teacher once (with a GPU when the cluster has one) and scores shards
(`--ray`). Each shard is scored in batches of its own, so the scores, and the new folder, are the
same byte for byte wherever its shards ran. The new folder's `stats.json` records the teacher (its
run fingerprint), the source dataset's fingerprint and the selection, so a student's run
fingerprint (the dataset's) changes with any of them.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

from app.config import PseudoLabelConfig
from app.distributor import Distributor, LocalDistributor, Shard, ShardJob
from app.records import schema
from app.records.dataset import DatasetInfo, DatasetWriter
from app.records.schema import shard_name
from app.errors import InputError
from app.evaluation.scoring import TrainedModel
from app.fileio import refuse_output_over_inputs

log = logging.getLogger("app.training")
SOURCE_SPLIT = "yfcc"


def pseudo_label(teacher_dir: str | Path, data_dir: str | Path, out_dir: str | Path, config: PseudoLabelConfig,
                 progress: bool = True, distributor: Optional[Distributor] = None) -> dict:
    """Writes the pseudo-labelled dataset folder `out_dir` (swapped in whole when complete).

    Args:
        teacher_dir: a finished run (any model kind) trained on `data_dir`'s classes.
        data_dir: a prepared dataset with a `yfcc` split.
        out_dir: the new dataset folder (not `data_dir`).
        config: the selection.
        progress: show a progress bar.
        distributor: where the shards are scored (default: in this process).

    Returns:
        The new folder's `pseudo_labels` stats, with its `fingerprint`.

    Raises:
        InputError (RunError, DatasetError among them): with a message for the user.
    """
    info = DatasetInfo.load(data_dir)
    refuse_output_over_inputs(out_dir, {"--data": info.data_dir, "--teacher": teacher_dir}, "never")
    if not info.split_sizes.get(SOURCE_SPLIT):
        kind = info.stats.get("collection", {}).get("kind")
        how = ("prepare with a YFCC100M file and --yfcc-split-size > 0" if kind is None else
               "give photos with split `unlabelled` in the manifest" if kind == "manifest" else
               f"a {kind} dataset has no unlabelled photos; add them through a manifest with split `unlabelled`")
        raise InputError(f"{info.data_dir}: the {SOURCE_SPLIT} split is empty: nothing to pseudo-label ({how})")
    teacher = TrainedModel(teacher_dir)
    teacher.check_dataset(info)
    with DatasetWriter(out_dir) as writer:
        scores_path = writer.path / ".teacher-scores.f16"
        cuts = _score(TeacherLoader(teacher_dir, teacher), info, config, scores_path,
                      distributor or LocalDistributor(), progress)
        scores = np.memmap(scores_path, np.float16, "r", shape=(info.split_sizes[SOURCE_SPLIT], info.num_classes))
        keep = _selected(scores, cuts, config)
        if not len(keep):
            rule = f"--min-score {config.min_score}" if not config.top_k else f"--target-floor {config.target_floor}"
            raise InputError(f"no {SOURCE_SPLIT} photo reaches {rule} with teacher {teacher.name}: nothing to "
                             f"pseudo-label, so no dataset was written")
        kept = _write_train(writer, info, scores, keep, config)
        del scores
        for split in ("validation", "test"):
            files = info.shard_files(split)
            writer.link_shards(info, {f: shard_name(split, i, len(files)) for i, f in enumerate(files)})
        scores_path.unlink()
        stats = _stats(info, teacher, config, kept, cuts)
        writer.copy_metadata(info)
        writer.write_stats(stats)
        fingerprint = writer.commit()
    log.info("pseudo-labels of %s: kept %d of %d %s photos; %s train photos in %s", teacher.name, kept,
             info.split_sizes[SOURCE_SPLIT], SOURCE_SPLIT, stats["splits"]["train"]["images"], out_dir)
    return {**stats["pseudo_labels"], "fingerprint": fingerprint}


class TeacherLoader:
    """The scoring job's setup: the teacher, loaded once per worker. The one already loaded in this
    process is used here, and never pickled (a Ray actor loads its own from `teacher_dir`)."""

    def __init__(self, teacher_dir: str | Path, loaded: Optional[TrainedModel] = None):
        self.teacher_dir, self.loaded = str(teacher_dir), loaded

    def __call__(self) -> TrainedModel:
        return self.loaded or TrainedModel(self.teacher_dir)

    def __getstate__(self) -> dict:
        return {"teacher_dir": self.teacher_dir, "loaded": None}


@dataclass(frozen=True)
class ScoreShard:
    """A scoring task's payload: one shard of the `yfcc` split."""

    data_dir: str
    file: str
    batch_size: int


def score_shard(teacher: TrainedModel, shard: ScoreShard) -> dict:
    """A shard task: the teacher's float16 scores `[records, classes]` of one shard, in record order."""
    info = DatasetInfo.load(shard.data_dir)
    parts = [s.astype(np.float16) for s in teacher.score_batches(info, SOURCE_SPLIT, shard.batch_size, files=[shard.file])]
    return {"scores": np.concatenate(parts) if parts else np.zeros((0, info.num_classes), np.float16)}


def _score(loader: TeacherLoader, info: DatasetInfo, config: PseudoLabelConfig, path: Path, distributor: Distributor,
           progress: bool):
    """Scores the split into `path` (float16 rows, shard order), shard by shard with the distributor;
    returns each class's top-K cut."""
    files = info.shard_files(SOURCE_SPLIT)
    rows = [info.shard_records(f) for f in files]
    starts = np.cumsum([0] + rows).tolist()
    shards = [Shard(f"{i:05d}", rows[i], ScoreShard(str(info.data_dir), str(f), config.batch_size))
              for i, f in enumerate(files)]
    best = np.zeros((0, info.num_classes), np.float32)
    with open(path, "wb") as out:
        for outcome in distributor.run(ShardJob(score_shard, setup=loader), shards, progress=progress, desc="teacher",
                                       total=starts[-1]):
            i = int(outcome.shard.name)
            scores = outcome.result["scores"] if not outcome.error else None
            if scores is None or len(scores) != rows[i]:
                raise InputError(f"{files[i]}: " + (f"its scoring failed every attempt: {outcome.error}" if outcome.error
                                                    else "the shard holds another number of records than its stats"))
            out.seek(starts[i] * info.num_classes * 2)
            out.write(scores.tobytes())  # the cut is taken on the stored values
            if config.top_k:
                best = np.concatenate([best, scores.astype(np.float32)])
                if len(best) > config.top_k:
                    best = np.partition(best, len(best) - config.top_k, axis=0)[-config.top_k:]
    if not config.top_k:
        return None
    # Fewer photos than K: every photo is in every class's top K.
    return best.min(axis=0) if len(best) == config.top_k else np.full(info.num_classes, -np.inf, np.float32)


def _selected(scores: np.ndarray, cuts, config: PseudoLabelConfig, rows: int = 65536) -> np.ndarray:
    """The kept photos' row numbers, found in blocks of rows."""
    keep = []
    cuts = None if cuts is None else np.maximum(cuts, max(config.target_floor, 1e-7))  # a cut of 0 keeps nothing
    for start in range(0, len(scores), rows):
        block = np.asarray(scores[start:start + rows], np.float32)
        hit = (block >= cuts).any(axis=1) if cuts is not None else block.max(axis=1) >= config.min_score
        keep.append(np.flatnonzero(hit) + start)
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


def _write_train(writer: DatasetWriter, info: DatasetInfo, scores: np.ndarray, keep: np.ndarray,
                 config: PseudoLabelConfig) -> int:
    """Links the train shards and writes the kept photos after them, numbered as one split."""
    train = info.shard_files("train")
    per_shard = max(1, max(info.shard_records(s) for s in train))
    count = schema.shard_count(len(keep), per_shard)
    total = len(train) + count
    writer.link_shards(info, {f: shard_name("train", i, total) for i, f in enumerate(train)})
    shards = schema.ShardWriter(writer.path, "pseudo", count, total=len(keep))
    try:
        for row, serialized in _kept_records(info.shard_files(SOURCE_SPLIT), keep):
            shards.write_serialized(_relabel(serialized, np.asarray(scores[row], np.float32), config.target_floor))
    except BaseException:
        shards.abort()
        raise
    written = shards.close()
    writer.add_shards(written)
    for i, name in enumerate(sorted(written)):
        writer.rename_shard(name, shard_name("train", len(train) + i, total))
    return len(keep)


def _kept_records(files: list, keep: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """`(row, serialized record)` of the kept rows, streamed in shard order."""
    wanted = iter(keep.tolist())
    target = next(wanted, None)
    for row, serialized in enumerate(tf.data.TFRecordDataset(files).prefetch(256).as_numpy_iterator()):
        if target is None:
            return
        if row == target:
            yield row, serialized
            target = next(wanted, None)


def _relabel(serialized: bytes, scores: np.ndarray, floor: float) -> bytes:
    """A record with the teacher's scores as its targets and no verified labels."""
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    ids = np.flatnonzero(scores >= max(floor, 1e-12))
    del feature["label_ids"].int64_list.value[:], feature["label_targets"].float_list.value[:]
    feature["label_ids"].int64_list.value.extend(ids.tolist())
    feature["label_targets"].float_list.value.extend(scores[ids].tolist())
    for key in ("verified_pos", "verified_neg"):
        del feature[key].int64_list.value[:]
    return example.SerializeToString()


def _stats(info: DatasetInfo, teacher: TrainedModel, config: PseudoLabelConfig, kept: int, cuts) -> dict:
    stats = copy.deepcopy(info.stats)
    splits = stats["splits"]
    splits["train"] = {"images": splits["train"]["images"] + kept, "pseudo_labelled": kept,
                       "open_images": splits["train"]}
    splits[SOURCE_SPLIT] = {"images": 0}
    stats["pseudo_labels"] = {
        "teacher": str(teacher.run.path), "teacher_run": teacher.run.identity(),
        "teacher_model": teacher.config.model.model, "source": str(info.data_dir),
        "source_fingerprint": info.fingerprint, "scored": info.split_sizes[SOURCE_SPLIT], "kept": kept,
        "selection": {"top_k": config.top_k, "min_score": None if config.top_k else config.min_score},
        "target_floor": config.target_floor,
        "median_class_cut": None if cuts is None else float(np.median(cuts)),
    }
    return stats
