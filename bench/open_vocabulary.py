"""Open vocabulary on real tags: MIRFLICKR-25K generalized zero-shot, tag suggestion, and their baselines.

    python bench/open_vocabulary.py --seeds 0 1 2 [--epochs 8] [--mirflickr DIR] [--work /tmp/ov_bench]

Per split seed (60/10/30, as issue 29's benchmark): the MIRFLICKR files become a manifest (tags `|`,
24 labels, no images) prepared with `prepare.py --manifest`; then
- closed vocabulary: `train.py --model tags` on all 24 classes (test mAP of the seen classes);
- generalized zero-shot: `train.py --model tags --unseen-classes` (the 12 classes of odd index held out:
  labels masked, tags naming them dropped) `--embedding-head`; test mAP of the unseen classes by the
  head's cosine with their names, of the seen classes by the sigmoid head and by the embedding;
- the no-training baseline: each class scored by the highest cosine between a photo's tags and its name;
- tag suggestion, attalos-style: half of each test photo's tags hidden (a seeded draw), 5 words suggested
  from the training vocabulary (the kept tags excluded) by the head from the kept half, against the
  baseline (the kept tags' mean vector); macro precision and recall over words, F1 = their harmonic mean.
Writes one JSON line per seed, then the mean ± std, to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

MIRFLICKR = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mirflickr25k"
CLASSES = ("animals baby bird car clouds dog female flower food indoor lake male night people plant_life portrait "
           "river sea sky structures sunset transport tree water").split()
UNSEEN = CLASSES[1::2]


def write_manifest(mirflickr: Path, out: Path, seed: int) -> Path:
    """MIRFLICKR as a manifest CSV with a seeded 60/10/30 split, and its class file."""
    read = lambda name: mirflickr.joinpath(name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    images, tags, labels = read("all_imgs.txt"), read("all_tags.txt"), read("all_labels.txt")
    order = np.random.default_rng(seed).permutation(len(images))
    split = np.empty(len(images), object)
    split[order[:int(0.6 * len(order))]] = "train"
    split[order[int(0.6 * len(order)):int(0.7 * len(order))]] = "validation"
    split[order[int(0.7 * len(order)):]] = "test"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "photos.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "tags", "labels", "split"])
        for i, (image, tag_line, label_line) in enumerate(zip(images, tags, labels)):
            names = [c for c, v in zip(CLASSES, label_line.split()) if v == "1"]
            writer.writerow([image, "|".join(tag_line.split(",")), "|".join(names), split[i]])
    (out / "classes.csv").write_text("\n".join(CLASSES) + "\n")
    (out / "unseen.txt").write_text("\n".join(UNSEEN) + "\n")
    return out


def run(command: list) -> None:
    import subprocess

    subprocess.run([sys.executable] + command, check=True, stdout=subprocess.DEVNULL)


def test_arrays(run_dir: Path, head) -> dict:
    """Test split: classifier scores, head embeddings, labels, and each photo's tags, in shard order."""
    import tensorflow as tf

    from app.records.dataset import DatasetInfo
    from app.records.pipeline import make_dataset
    from app.records.schema import iter_tags
    from app.runs.trained import TrainedRun

    trained = TrainedRun(run_dir)
    info = DatasetInfo.load(trained.run.data_dir)
    classify = tf.function(lambda x: trained.model(x, training=False), reduce_retracing=True)
    embed = tf.function(lambda x: head.model(x, training=False), reduce_retracing=True) if head else None
    scores, embeddings, labels = [], [], []
    for inputs, targets, _ in make_dataset(info, "test", trained.preprocessor, batch_size=512):
        scores.append(classify(inputs).numpy())
        embeddings.append(embed(inputs).numpy() if embed else np.zeros((len(targets), 1)))
        labels.append(targets.numpy() > 0.5)
    return {"scores": np.concatenate(scores), "embed": np.concatenate(embeddings), "labels": np.concatenate(labels),
            "tags": list(iter_tags(info.shard_files("test"))), "vocab": trained.preprocessor.tags.vocab.tokens}


def class_map(scores: np.ndarray, labels: np.ndarray, columns: list) -> float:
    from app.evaluation.exhaustive import per_class_average_precisions

    return float(np.nanmean(per_class_average_precisions(scores[:, columns], labels[:, columns])))


def cosine_baseline(tags: list, class_vectors: np.ndarray, table: dict) -> np.ndarray:
    """Each class scored by the highest cosine between a photo's tags and its name (-1 without tags)."""
    out = np.full((len(tags), class_vectors.shape[0]), -1.0, np.float32)
    for i, row in enumerate(tags):
        known = [table[t] for t in row if t in table]
        if known:
            out[i] = (np.stack(known) @ class_vectors.T).max(axis=0)
    return out


def suggestion_scores(photo_vectors: np.ndarray, hidden: list, kept: list, words: list,
                      word_vectors: np.ndarray, k: int = 5) -> dict:
    """Attalos-style P/R/F1@k: each photo's top k words (its kept tags excluded) against its hidden tags;
    precision and recall per word, averaged over the words ever predicted / ever hidden."""
    index = {w: i for i, w in enumerate(words)}
    cos = photo_vectors @ word_vectors.T
    predicted_count, true_count, hit_count = (np.zeros(len(words)) for _ in range(3))
    for i in range(len(hidden)):
        row = cos[i].copy()
        row[[index[t] for t in kept[i] if t in index]] = -np.inf
        top = np.argpartition(-row, k)[:k]
        truth = {index[t] for t in hidden[i] if t in index}
        predicted_count[top] += 1
        for j in truth:
            true_count[j] += 1
        for j in set(top) & truth:
            hit_count[j] += 1
    precision = float(np.mean(hit_count[predicted_count > 0] / predicted_count[predicted_count > 0]))
    recall = float(np.mean(hit_count[true_count > 0] / true_count[true_count > 0]))
    return {"P": precision, "R": recall, "F1": 2 * precision * recall / max(precision + recall, 1e-12)}


def one_seed(args, seed: int) -> dict:
    from app.runs.embedding_head import EmbeddingHead
    from app.runs.rundir import RunDir
    from app.retrieval.text_encoder import load_encoder
    from app.text.encoders import VectorCache

    work = args.work / f"seed{seed}"
    manifest = write_manifest(args.mirflickr, work, seed)
    if not (work / "data" / "dataset.json").exists():
        run(["app/prepare.py", "--manifest", str(manifest / "photos.csv"), "--classes", str(manifest / "classes.csv"),
             "--out", str(work / "data")])
    common = ["app/train.py", "--data", str(work / "data"), "--model", "tags", "--epochs", str(args.epochs),
              "--seed", str(seed), "--no-progress"]
    started = time.time()
    run(common + ["--out", str(work / "closed")])
    closed_s = time.time() - started
    started = time.time()
    run(common + ["--out", str(work / "gzsl"), "--unseen-classes", str(manifest / "unseen.txt"), "--embedding-head",
                  "--tag-weight", str(args.tag_weight)])
    gzsl_s = time.time() - started
    encoder = load_encoder()
    cache = VectorCache()
    class_vectors = cache.vectors(encoder, [c.replace("_", " ") for c in CLASSES], progress=False).vectors
    seen = [i for i, c in enumerate(CLASSES) if c not in UNSEEN]
    unseen = [i for i, c in enumerate(CLASSES) if c in UNSEEN]
    closed = test_arrays(work / "closed", None)
    head = EmbeddingHead.load(RunDir(work / "gzsl"))
    gzsl = test_arrays(work / "gzsl", head)
    words = closed["vocab"]
    word_vectors = cache.vectors(encoder, words, progress=False).vectors
    table = dict(zip(words, word_vectors))
    baseline = cosine_baseline(gzsl["tags"], class_vectors, table)
    cosines = gzsl["embed"] @ class_vectors.T
    out = {"seed": seed, "closed_seen_map": class_map(closed["scores"], closed["labels"], seen),
           "closed_all_map": class_map(closed["scores"], closed["labels"], list(range(24))),
           "gzsl_seen_map_sigmoid": class_map(gzsl["scores"], gzsl["labels"], seen),
           "gzsl_seen_map_embed": class_map(cosines, gzsl["labels"], seen),
           "gzsl_unseen_map": class_map(cosines, gzsl["labels"], unseen),
           "baseline_unseen_map": class_map(baseline, gzsl["labels"], unseen),
           "baseline_seen_map": class_map(baseline, gzsl["labels"], seen),
           "baseline_all_map": class_map(baseline, gzsl["labels"], list(range(24))),
           "train_seconds": {"closed": round(closed_s), "gzsl_and_head": round(gzsl_s)},
           "head_validation": head.record["validation_map"]}
    both = np.concatenate([gzsl["scores"][:, seen], cosines[:, unseen]], axis=1)
    out["gzsl_all_map"] = class_map(both, np.concatenate([gzsl["labels"][:, seen], gzsl["labels"][:, unseen]], 1),
                                    list(range(24)))
    out.update(suggestions(gzsl["tags"], head, work, words, word_vectors, table, seed))
    return out


def suggestions(tags: list, head, work: Path, words: list, word_vectors: np.ndarray, table: dict, seed: int) -> dict:
    """Tag suggestion with half of each test photo's tags hidden, by the head and by the baseline."""
    import tensorflow as tf

    from app.runs.trained import TrainedRun

    rng = np.random.default_rng(seed + 100)
    kept, hidden = [], []
    for row in tags:
        if len(row) < 2:
            continue
        order = rng.permutation(len(row))
        kept.append([row[j] for j in order[:len(row) // 2]])
        hidden.append([row[j] for j in order[len(row) // 2:]])
    trained = TrainedRun(work / "gzsl")
    vectors = []
    for start in range(0, len(kept), 512):
        inputs, _ = trained.preprocessor({"tags": tf.ragged.constant(kept[start:start + 512], dtype=tf.string)})
        vectors.append(np.asarray(head.model({k: v for k, v in inputs.items() if k in head.model.input},
                                             training=False)))
    mean = np.stack([np.mean([table[t] for t in row if t in table] or [np.zeros(word_vectors.shape[1])], axis=0)
                     for row in kept])
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return {"suggest_photos": len(kept),
            "suggest_head": suggestion_scores(np.concatenate(vectors), hidden, kept, words, word_vectors),
            "suggest_baseline": suggestion_scores(mean, hidden, kept, words, word_vectors)}


def summary(rows: list) -> dict:
    out = {}
    for key, value in rows[0].items():
        if isinstance(value, float):
            values = [r[key] for r in rows]
            out[key] = f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.4f}"
        elif isinstance(value, dict) and all(isinstance(v, float) for v in value.values()):
            out[key] = {k: f"{np.mean([r[key][k] for r in rows]):.4f} ± "
                           f"{np.std([r[key][k] for r in rows], ddof=1) if len(rows) > 1 else 0:.4f}" for k in value}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--tag-weight", type=float, default=1.0)
    p.add_argument("--mirflickr", type=Path, default=MIRFLICKR)
    p.add_argument("--work", type=Path, default=Path("/tmp/ov_bench"))
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(args, seed))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"summary": summary(rows), "load_avg_1m": round(os.getloadavg()[0], 1)}), flush=True)


if __name__ == "__main__":
    main()
