"""Unseen tags on MIRFLICKR-25K: train without 30% of the tags, serve with them restored through the encoder.

For each split seed: a seeded 60/10/30 split of the 20,015 photos (the shared text files, converted
to a manifest in a scratch folder: the photos are not needed), and a seeded 30% of the 1,386 tags
"dropped": removed from the train and validation photos (so from the vocabulary), kept on the test
photos. Tags-only models (`--word-vectors` scratch, frozen, fine-tuned) are trained on that dataset,
and on the full one (every tag) as the upper bound. On the test photos that carry a dropped tag:

* dropped: the model as trained (a dropped tag is out of vocabulary);
* restored: the model with the dropped tags added through the encoder (`app.serving.extend`, as
  `export.py --extend-vocabulary` does), with 1 and 5 neighbours where it matters;
* full: the same kind of model trained with every tag.

Class mAP and photo mAP (exhaustive labels) on those photos; the full models' validation and test
mAP on every photo choose `--word-vectors`. Results: mean ± std over the seeds, printed and written
as JSON (`OUT/unseen.json`).

    python bench/unseen_tags.py --mirflickr ../shared/reference/mirflickr25k --out /tmp/unseen [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from app.evaluation.exhaustive import per_class_average_precisions, per_photo_average_precisions  # noqa: E402
from app.evaluation.scoring import TrainedModel  # noqa: E402
from app.records.dataset import DatasetInfo  # noqa: E402
from app.records.schema import iter_language_tags  # noqa: E402
from app.serving.extend import extend_run  # noqa: E402
from app.training.run import RunOptions, train  # noqa: E402
from tuning.paired import PairedDifference, mean_std  # noqa: E402

LABELS = ("animals baby bird car clouds dog female flower food indoor lake male night people plant_life portrait river "
          "sea sky structures sunset transport tree water").split()
MODES = ("scratch", "frozen", "fine-tuned")


def read_mirflickr(folder: Path) -> tuple[list, list, list, list]:
    """`(ids, tag lists, label rows, tag list)` from the four CRLF text files."""
    lines = {name: (folder / f"{name}.txt").read_text(encoding="utf-8").splitlines()
             for name in ("all_imgs", "all_tags", "all_labels", "TagList")}
    ids = [Path(line).stem for line in lines["all_imgs"]]
    tags = [line.split(",") if line else [] for line in lines["all_tags"]]
    labels = [[LABELS[i] for i, v in enumerate(line.split()) if v == "1"] for line in lines["all_labels"]]
    if not len(ids) == len(tags) == len(labels):
        raise SystemExit(f"{folder}: the files disagree in line count: {len(ids)}, {len(tags)}, {len(labels)}")
    return ids, tags, labels, lines["TagList"]


def write_manifest(path: Path, ids, tags, labels, splits, dropped: set) -> None:
    """A manifest CSV; `dropped` tags are removed from the train and validation photos."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "tags", "labels", "split"])
        for photo, photo_tags, photo_labels, split in zip(ids, tags, labels, splits):
            kept = photo_tags if split == "test" else [t for t in photo_tags if t not in dropped]
            out.writerow([photo, "|".join(kept), "|".join(photo_labels), split])


def prepare(manifest: Path, classes: Path, out: Path) -> Path:
    from app import prepare as prepare_cli

    if not (out / "dataset.json").exists() and not out.exists():
        prepare_cli.main(["--manifest", str(manifest), "--classes", str(classes), "--out", str(out), "--no-progress"])
    return out


def datasets(args, seed: int) -> tuple[Path, Path, set]:
    """The full and the dropped dataset folders of a split seed, and the dropped tags."""
    ids, tags, labels, tag_list = read_mirflickr(args.mirflickr)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    splits = np.empty(len(ids), dtype=object)
    n_train, n_val = int(0.6 * len(ids)), int(0.1 * len(ids))
    splits[order[:n_train]], splits[order[n_train:n_train + n_val]], splits[order[n_train + n_val:]] = \
        "train", "validation", "test"
    dropped = set(rng.choice(tag_list, int(round(args.drop * len(tag_list))), replace=False).tolist())
    root = args.out / f"seed{seed}"
    classes = root / "classes.csv"
    classes.parent.mkdir(parents=True, exist_ok=True)
    classes.write_text("".join(f"{name}\n" for name in LABELS), encoding="utf-8")
    for name, drop in (("full", set()), ("dropped", dropped)):
        write_manifest(root / f"{name}.csv", ids, tags, labels, splits, drop)
    return (prepare(root / "full.csv", classes, root / "data-full"),
            prepare(root / "dropped.csv", classes, root / "data-dropped"), dropped)


def train_tags(data: Path, run: Path, mode: str, seed: int, epochs: int) -> Path:
    config = RunConfig(data=DataConfig(), model=ModelConfig(model="tags", word_vectors=mode),
                       train=TrainConfig(seed=seed, epochs=epochs))
    train(data, run, config, RunOptions(progress=False))
    return run


def dense_test(model: TrainedModel, info: DatasetInfo) -> np.ndarray:
    """`[photos, classes]` test scores in shard order."""
    return np.concatenate(list(model.score_batches(info, "test")))


def test_facts(info: DatasetInfo, dropped: set) -> tuple[np.ndarray, np.ndarray]:
    """Test labels `[photos, classes]` and whether each photo carries a dropped tag, in shard order."""
    import tensorflow as tf

    from app.records.schema import parse_batch

    labels = []
    for batch in tf.data.TFRecordDataset(info.shard_files("test")).batch(4096).map(
            lambda s: parse_batch(s, ["verified_pos"])):
        for row in batch["verified_pos"].to_list():
            dense = np.zeros(info.num_classes, np.int8)
            dense[row] = 1
            labels.append(dense)
    carries = [any(t in dropped for t in tags) for _, tags in iter_language_tags(info.shard_files("test"))]
    return np.stack(labels), np.array(carries)


def metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    return {"class_map": float(np.nanmean(per_class_average_precisions(scores, labels))),
            "photo_map": float(np.nanmean(per_photo_average_precisions(scores, labels)))}


def one_seed(args, seed: int) -> dict:
    full_data, dropped_data, dropped = datasets(args, seed)
    info = DatasetInfo.load(dropped_data)
    labels, carries = test_facts(info, dropped)
    rows = {"photos": int(carries.sum()), "test_photos": len(carries)}
    for mode in args.word_vectors:
        runs = args.out / f"seed{seed}" / "runs"
        trained = TrainedModel(train_tags(dropped_data, runs / f"dropped-{mode}", mode, seed, args.epochs))
        full = TrainedModel(train_tags(full_data, runs / f"full-{mode}", mode, seed, args.epochs))
        full_metrics = json.loads((full.run.path / "metrics.json").read_text())
        out = {"dropped": metrics(dense_test(trained, info)[carries], labels[carries]),
               "full": metrics(dense_test(full, info)[carries], labels[carries]),
               "full_val_map": full_metrics["val_map"], "full_test_map": full_metrics["test_map"]}
        for k in ([1] if mode == "frozen" else args.neighbours):
            started = time.time()
            extended = extend_run(trained, sorted(dropped), neighbours=k)
            seconds = round(time.time() - started, 1)
            out[f"restored_k{k}"] = {**metrics(dense_test(extended.run, info)[carries], labels[carries]),
                                     "added": len(extended.added["tag"]), "seconds": seconds}
        rows[mode] = out
        print(seed, mode, json.dumps(out), flush=True)
    return rows


def summarise(results: list) -> str:
    """Mean ± std per mode and system, then paired differences (restored − dropped, full − restored)."""
    lines = ["| word vectors | system | class mAP | photo mAP |", "|---|---|---|---|"]
    pairs = ["| word vectors | difference | class mAP | photo mAP |", "|---|---|---|---|"]
    for mode in (m for m in MODES if m in results[0]):
        systems = [s for s, v in results[0][mode].items() if isinstance(v, dict)]
        value = lambda system, metric: [r[mode][system][metric] for r in results]  # noqa: E731
        for system in systems:
            lines.append(f"| {mode} | {system} | " + " | ".join(
                "{:.4f} ± {:.4f}".format(*mean_std(value(system, m))) for m in ("class_map", "photo_map")) + " |")
        for key in ("full_val_map", "full_test_map"):
            lines.append(f"| {mode} | {key} (all photos) | " + "{:.4f} ± {:.4f}".format(
                *mean_std([r[mode][key] for r in results])) + " | |")
        for a, b in [(s, "dropped") for s in systems if s.startswith("restored")] + [("full", s) for s in systems
                                                                                    if s.startswith("restored")]:
            pairs.append(f"| {mode} | {a} − {b} | " + " | ".join(
                str(PairedDifference.of(value(a, m), value(b, m))) for m in ("class_map", "photo_map")) + " |")
    return "\n".join(lines + [""] + pairs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirflickr", type=Path, required=True, help="the folder of all_imgs/all_tags/all_labels/TagList")
    p.add_argument("--out", type=Path, required=True, help="scratch folder (manifests, datasets, runs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--drop", type=float, default=0.3, help="share of the tag list dropped from training")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--word-vectors", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--neighbours", type=int, nargs="+", default=[1, 5])
    p.add_argument("--summary-only", action="store_true", help="print the summary of OUT/unseen.json")
    args = p.parse_args()
    if args.summary_only:
        print(summarise(json.loads((args.out / "unseen.json").read_text())))
        return
    results = [one_seed(args, seed) for seed in args.seeds]
    (args.out / "unseen.json").write_text(json.dumps(results, indent=1))
    print(summarise(results))


if __name__ == "__main__":
    main()
