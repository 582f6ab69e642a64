"""Open vocabulary on real tags: generalized zero-shot, tag suggestion, and their no-training baselines.

    python bench/open_vocabulary.py [MIRFLICKR_DIR] [--seeds 0 1 2] [--work /tmp/ov_bench]
    python bench/open_vocabulary.py --demo [--seeds 0 1 2]       # the demo world, image + tags

Per seed (MIRFLICKR: `prepare.py --mirflickr --split-seed N`, 60/10/30 as bench/mirflickr.py; the demo:
its own split, the seed is the training seed):
- closed vocabulary: `train.py` with every class (the model arm of the run flags below);
- generalized zero-shot: the same flags with `--unseen-classes` (MIRFLICKR: the 12 classes of odd index;
  the demo: every fifth class, 20%) and `--embedding-head`: test mAP of the unseen classes by the head's
  calibrated cosine with their names, of the seen ones by the sigmoid head (`app.evaluation.zero_shot`);
- the no-training baseline: each class scored by the highest cosine between a photo's tags and its name;
- tag suggestion, attalos-style: half of each test photo's tags hidden (a seeded draw, photos with at least
  2 tags), 5 words suggested from the training vocabulary (the kept tags excluded) from the kept half by
  the head, against the kept tags' mean vector (no training); macro precision and recall over words
  (over the words ever suggested / ever hidden), F1 their harmonic mean (as Ni et al. compute it).
Prints one JSON line per seed, then the mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

MIRFLICKR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "mirflickr25k"
MIRFLICKR_FLAGS = ("--model", "tags", "--wide-tags", "--dropout", "0.3")  # bench/mirflickr.py's best arm
DEMO_FLAGS = ("--model", "contextual")


def prepare(args, seed: int) -> tuple[Path, list]:
    """The dataset folder of a seed and its `(id, name)` classes."""
    from app.records.dataset import DatasetError, DatasetInfo

    data = Path("tfrecords/demo") if args.demo else args.work / f"data-seed{seed}"
    try:
        DatasetInfo.load(data)
    except DatasetError:
        command = ["app/prepare.py", "--no-progress"] + (["--demo", "--out", str(data)] if args.demo else
                                                          ["--mirflickr", str(args.mirflickr), "--split-seed",
                                                           str(seed), "--out", str(data)])
        subprocess.run([sys.executable] + command, check=True, stdout=subprocess.DEVNULL)
    return data, DatasetInfo.load(data).classes


def train(data: Path, out: Path, seed: int, flags: tuple, extra: list) -> float:
    """`app/train.py` (a run already complete is found, not retrained); its wall seconds."""
    started = time.time()
    subprocess.run([sys.executable, "app/train.py", "--data", str(data), "--out", str(out), "--seed", str(seed),
                    "--no-progress", *flags, *extra], check=True, stdout=subprocess.DEVNULL)
    return time.time() - started


def one_seed(args, seed: int) -> dict:
    from app.evaluation.zero_shot import generalized_zero_shot, model_scorer, split_average_precisions
    from app.runs.trained import TrainedRun

    data, classes = prepare(args, seed)
    every = 5 if args.demo else 2
    unseen_names = [name for i, (_, name) in enumerate(classes) if i % every == every - 1]
    unseen_file = args.work / f"unseen-{len(unseen_names)}.txt"
    unseen_file.parent.mkdir(parents=True, exist_ok=True)
    unseen_file.write_text("".join(f"{n}\n" for n in unseen_names), encoding="utf-8")
    flags = DEMO_FLAGS if args.demo else MIRFLICKR_FLAGS
    name = "demo" if args.demo else "mirflickr"
    closed_s = train(data, args.work / f"{name}-closed-{seed}", seed, flags, [])
    open_run = args.work / f"{name}-gzsl-{seed}"
    head_flags = ["--head-epochs", str(args.head_epochs)] if args.head_epochs else []
    gzsl_s = train(data, open_run, seed, flags, ["--unseen-classes", str(unseen_file), "--embedding-head", *head_flags])
    gzsl = generalized_zero_shot(open_run)
    closed = TrainedRun(args.work / f"{name}-closed-{seed}")
    from app.records.dataset import DatasetInfo

    info = DatasetInfo.load(data)
    seen = np.array([n not in unseen_names for _, n in classes])
    closed_ap = split_average_precisions(info, "test", closed.preprocessor, model_scorer(closed.model))
    base_ap = split_average_precisions(info, "test", closed.preprocessor, baseline_scorer(closed, classes))
    out = {"seed": seed, "unseen_map": gzsl["unseen"], "seen_map": gzsl["seen"], "all_map": gzsl["all"],
           "seen_map_by_head": gzsl["seen_by_head"],
           "closed_seen_map": float(np.nanmean(closed_ap[seen])), "closed_all_map": float(np.nanmean(closed_ap)),
           "baseline_unseen_map": float(np.nanmean(base_ap[~seen])), "baseline_seen_map": float(np.nanmean(base_ap[seen])),
           "baseline_all_map": float(np.nanmean(base_ap)),
           "seconds": {"closed": round(closed_s), "gzsl_and_head": round(gzsl_s)}}
    out.update(suggestion(open_run, info, seed))
    return out


def baseline_scorer(run, classes: list):
    """`inputs -> [batch, classes]`: each class's highest cosine with a photo's (vocabulary) tags, mapped to
    (0, 1] ((1 + cosine) / 2; a photo without known tags 1e-6, below every photo with one)."""
    from app.evaluation.zero_shot import class_vectors
    from app.model.word_vectors import vocabulary_rows
    from app.text.encoders import encoder_from_spec

    encoder = encoder_from_spec("use")
    rows, names = vocabulary_rows(encoder, run.preprocessor.tags.vocab, progress=False), class_vectors(encoder, classes)
    cosines = rows @ names.T  # [vocab ids, classes]

    def score(inputs):
        ids = inputs["tag_ids"].numpy()
        values = np.where((ids > 1)[..., None], cosines[ids], -np.inf).max(axis=1)
        return np.where(np.isfinite(values), (1.0 + values) / 2.0, 1e-6)

    return score


def suggestion(run_dir: Path, info, seed: int, k: int = 5) -> dict:
    """Tag suggestion with half of each test photo's tags hidden: the head (the `embed` signature, in
    process) against the kept tags' mean encoder vector, both from the training vocabulary."""
    from app.model.word_vectors import vocabulary_rows
    from app.model.zero_shot import cosine_scores, top_words
    from app.records.schema import iter_tags
    from app.runs.trained import TrainedRun
    from app.serving.predictor import load_predictor
    from app.text.encoders import encoder_from_spec

    vocab = TrainedRun(run_dir).preprocessor.tags.vocab
    known = set(vocab.tokens)
    rng = np.random.default_rng(seed + 100)
    kept, hidden = [], []
    for row in iter_tags(info.shard_files("test")):
        row = list(dict.fromkeys(t for t in row if t in known))
        if len(row) >= 2:
            order = rng.permutation(len(row))
            kept.append([row[j] for j in order[:len(row) // 2]])
            hidden.append([row[j] for j in order[len(row) // 2:]])
    rows = vocabulary_rows(encoder_from_spec("use"), vocab, progress=False)[2:]
    index = {t: i for i, t in enumerate(vocab.tokens)}
    mean = np.stack([rows[[index[t] for t in row]].mean(axis=0) for row in kept])
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    embed = load_predictor(run_dir).embed
    head = np.concatenate([embed(kept[i:i + 512], [b""] * len(kept[i:i + 512]))["embedding"]
                           for i in range(0, len(kept), 512)])
    out = {"suggest_photos": len(kept)}
    for method, vectors in (("head", head), ("tag_mean", mean)):
        top = top_words(cosine_scores(vectors, rows), vocab.tokens, k, exclude=kept)
        out[f"suggest_{method}"] = attalos_scores([[w for w, _ in row] for row in top], hidden)
    return out


def attalos_scores(suggested: list, hidden: list) -> dict:
    """Macro precision (over the words ever suggested) and recall (over the words ever hidden), F1 their
    harmonic mean."""
    predicted, true, hits = {}, {}, {}
    for words, truth in zip(suggested, hidden):
        for w in words:
            predicted[w] = predicted.get(w, 0) + 1
        for w in set(truth):
            true[w] = true.get(w, 0) + 1
        for w in set(words) & set(truth):
            hits[w] = hits.get(w, 0) + 1
    precision = float(np.mean([hits.get(w, 0) / n for w, n in predicted.items()]))
    recall = float(np.mean([hits.get(w, 0) / n for w, n in true.items()]))
    return {"P": precision, "R": recall, "F1": 2 * precision * recall / max(precision + recall, 1e-12)}


def summary(rows: list) -> dict:
    """Mean ± std (ddof 1) of every figure over the seeds."""
    def spread(values):
        return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.4f}"

    out = {}
    for key, value in rows[0].items():
        if isinstance(value, float):
            out[key] = spread([r[key] for r in rows])
        elif isinstance(value, dict) and all(isinstance(v, float) for v in value.values()):
            out[key] = {k: spread([r[key][k] for r in rows]) for k in value}
    out["unseen_minus_baseline"] = spread([r["unseen_map"] - r["baseline_unseen_map"] for r in rows])
    out["seen_minus_closed"] = spread([r["seen_map"] - r["closed_seen_map"] for r in rows])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mirflickr", type=Path, nargs="?", default=MIRFLICKR, help="the MIRFLICKR-25K folder")
    p.add_argument("--demo", action="store_true", help="the demo world (tfrecords/demo, image + tags) instead")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--head-epochs", type=int, help="train.py --head-epochs [default: train.py's]")
    p.add_argument("--work", type=Path, default=Path("/tmp/ov_bench"), help="datasets and runs (kept: a re-run "
                                                                             "finds them)")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(args, seed))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"summary": summary(rows), "load_avg_1m": round(os.getloadavg()[0], 1)}), flush=True)


if __name__ == "__main__":
    main()
