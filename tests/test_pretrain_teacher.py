"""Weak pre-training on the yfcc split (`--train-split yfcc`, `--pretrained`) and a teacher's
pseudo-labels for image-only students (`app/pseudo_label.py`)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from app import pseudo_label
from app import train as train_cli
from app.records.dataset import DatasetInfo
from conftest import with_flag

# the study's weak pre-training: a tag embedding learned from scratch, then fine-tuned
TAGS = ["--model", "tags", "--epochs", "1", "--tag-limit", "10", "--tag-threshold", "2", "--embedding-dim", "8",
        "--hidden-units", "16", "--batch-size", "32", "--no-progress", "--word-vectors", "scratch"]
IMAGE = ["--image-size", "32", "--epochs", "1", "--batch-size", "32", "--hidden-units", "16", "--no-progress"]


def run(argv, tmp_path, name):
    return train_cli.main(argv + ["--out", str(tmp_path / name)])


@pytest.fixture(scope="module")
def pretrained(tiny_world, tmp_path_factory):
    """A tags-only run trained on the tiny world's yfcc split (autotag targets)."""
    _, data = tiny_world
    root = tmp_path_factory.mktemp("pretrain")
    run(TAGS + ["--data", str(data), "--train-split", "yfcc"], root, "pre")
    return root / "pre"


def test_pretraining_on_yfcc_trains_on_its_photos(tiny_world, pretrained):
    _, data = tiny_world
    info = DatasetInfo.load(data)
    config = json.loads((pretrained / "config.json").read_text())
    history = (pretrained / "history.csv").read_text().splitlines()
    assert config["data"]["train_split"] == "yfcc" and len(history) == 2
    assert info.split_sizes["yfcc"] == 60
    # it is scored on Open Images validation and test, like any run
    metrics = json.loads((pretrained / "metrics.json").read_text())
    assert 0 < metrics["val_map"] <= 1 and 0 < metrics["test_map"] <= 1


def test_fine_tuning_starts_from_the_pretrained_weights(tiny_world, pretrained, tmp_path):
    from app.model.classifier import load_classifier

    _, data = tiny_world
    pre = load_classifier(pretrained / "model.keras")
    frozen = run(TAGS + ["--data", str(data), "--pretrained", str(pretrained), "--freeze-embedding"], tmp_path, "frozen")
    tuned = run(TAGS + ["--data", str(data), "--pretrained", str(pretrained)], tmp_path, "tuned")
    assert frozen.status == tuned.status == "trained"
    frozen_model, tuned_model = (load_classifier(tmp_path / n / "model.keras") for n in ("frozen", "tuned"))
    table = pre.get_layer("tag_embedding").get_weights()[0]
    np.testing.assert_array_equal(frozen_model.get_layer("tag_embedding").get_weights()[0], table)
    assert not np.array_equal(tuned_model.get_layer("tag_embedding").get_weights()[0], table)  # fine-tuned
    # a contextual model takes the embedding alone (its head has another input width)
    context = run(["--model", "contextual"] + TAGS[2:] + IMAGE[:2] + ["--data", str(data), "--pretrained",
                                                                      str(pretrained), "--freeze-embedding"],
                  tmp_path, "context")
    model = load_classifier(tmp_path / "context" / "model.keras")
    head = model.get_layer("contextual_head")
    np.testing.assert_array_equal(head.get_layer("tag_embedding").get_weights()[0], table)
    assert context.status == "trained"


def test_pretrained_runs_are_checked_and_fingerprinted(tiny_world, pretrained, tmp_path, capsys):
    _, data = tiny_world
    with pytest.raises(SystemExit):  # another vocabulary: the ids would mean other tags
        run(with_flag(TAGS, "--tag-threshold", "3") + ["--data", str(data), "--pretrained", str(pretrained)], tmp_path,
            "x")
    assert "its tag vocabulary is not this run's" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(TAGS + ["--data", str(data), "--pretrained", str(tmp_path / "nothing")], tmp_path, "y")
    assert "no trained run here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["--model", "image"] + IMAGE + ["--data", str(data), "--pretrained", str(pretrained)], tmp_path, "z")
    assert "an image-only model has none" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(TAGS + ["--data", str(data), "--freeze-embedding"], tmp_path, "w")
    assert "--freeze-embedding) needs pretrained (--pretrained RUN_DIR)" in capsys.readouterr().err
    image = run(["--model", "image"] + IMAGE + ["--data", str(data)], tmp_path, "img")
    for flags, argv, message in [(TAGS, ["--pretrained", str(tmp_path / "img")], "has no tag embedding"),
                                 (with_flag(TAGS, "--embedding-dim", "16"), ["--pretrained", str(pretrained)],
                                  "give --embedding-dim 8"),
                                 (TAGS, ["--train-split", "yfcc", "--loss-on", "verified"], "no verified labels")]:
        with pytest.raises(SystemExit):
            run(flags + ["--data", str(data)] + argv, tmp_path, "v")
        assert message in capsys.readouterr().err
    assert image.status == "trained"
    assert not any((tmp_path / n).exists() for n in "xyzwv")  # refused before anything was written
    kept = (tmp_path / "img" / "run.json").read_text()
    with pytest.raises(SystemExit):  # --overwrite of a finished run with a bad --pretrained: the old run stays
        run(TAGS + ["--data", str(data), "--pretrained", str(tmp_path / "img"), "--overwrite"], tmp_path, "img")
    assert (tmp_path / "img" / "run.json").read_text() == kept and (tmp_path / "img" / "model.keras").exists()
    record = json.loads((pretrained / "run.json").read_text())
    run(TAGS + ["--data", str(data), "--pretrained", str(pretrained)], tmp_path, "f")
    fingerprint = json.loads((tmp_path / "f" / "run.json").read_text())["fingerprint"]["config"]["train"]["pretrained"]
    assert fingerprint.startswith("run ") and str(pretrained) not in fingerprint  # what it is, not where
    record["fingerprint"]["config"]["train"]["seed"] = 7  # the pre-trained run is now another run
    (pretrained / "run.json").write_text(json.dumps(record))
    try:
        with pytest.raises(SystemExit):
            run(TAGS + ["--data", str(data), "--pretrained", str(pretrained)], tmp_path, "f")
        assert "train.pretrained" in capsys.readouterr().err
    finally:
        record["fingerprint"]["config"]["train"]["seed"] = 0
        (pretrained / "run.json").write_text(json.dumps(record))


def records(info, split):
    out = []
    for raw in tf.data.TFRecordDataset(info.shard_files(split)):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        out.append({key: list(getattr(feature[key], kind).value) for key, kind in
                    [("image_id", "bytes_list"), ("label_ids", "int64_list"), ("label_targets", "float_list"),
                     ("verified_pos", "int64_list"), ("image", "bytes_list"), ("tags", "bytes_list")]})
    return out


def test_a_teacher_labels_the_yfcc_split_for_an_image_only_student(tiny_world, pretrained, tmp_path, capsys):
    from app.evaluation.scoring import TrainedModel

    _, data = tiny_world
    info = DatasetInfo.load(data)
    out = tmp_path / "taught"
    scores = np.concatenate(list(TrainedModel(pretrained).score_batches(info, "yfcc")))
    stored = scores.astype(np.float16)
    floor = float(np.quantile(stored.max(axis=1), 0.6))  # 40% of the photos can be kept
    stats = pseudo_label.main(["--teacher", str(pretrained), "--data", str(data), "--out", str(out), "--top-k", "3",
                               "--target-floor", str(floor), "--no-progress"])
    assert "pseudo-labelled by" in capsys.readouterr().out
    taught = DatasetInfo.load(out)
    cuts = np.sort(stored.astype(np.float32), axis=0)[-3]
    keep = (stored >= np.maximum(cuts, floor)).any(axis=1)
    assert stats["kept"] == keep.sum() and 3 <= stats["kept"] <= 24
    assert taught.split_sizes["train"] == info.split_sizes["train"] + stats["kept"] and not taught.shards["yfcc"]
    original, yfcc, new = records(info, "train"), records(info, "yfcc"), records(taught, "train")
    assert new[:len(original)] == original  # Open Images train, unchanged, then the kept photos
    kept = [r for r, k in zip(yfcc, keep) if k]
    assert [r["image_id"] for r in new[len(original):]] == [r["image_id"] for r in kept]
    row = np.flatnonzero(keep)[0]
    first = new[len(original)]
    expected = np.flatnonzero(stored[row] >= floor)
    assert first["label_ids"] == expected.tolist() and first["verified_pos"] == []
    np.testing.assert_allclose(first["label_targets"], scores[row][expected], atol=1e-3)
    assert first["image"] == kept[0]["image"] and first["tags"] == kept[0]["tags"]
    for split in ("validation", "test"):
        assert records(taught, split) == records(info, split)
    assert taught.stats["pseudo_labels"]["teacher_run"] == TrainedModel(pretrained).run.identity()
    student = run(["--model", "image"] + IMAGE + ["--data", str(out)], tmp_path, "student")
    assert student.status == "trained" and 0 < student.metrics["test_map"] <= 1
    median = float(np.median(stored.max(axis=1)))
    by_score = pseudo_label.main(["--teacher", str(pretrained), "--data", str(data), "--out", str(out), "--top-k", "0",
                                  "--min-score", str(median), "--no-progress"])
    assert by_score["kept"] == (stored.max(axis=1) >= median).sum() and 20 <= by_score["kept"] < 60
    assert DatasetInfo.load(out).fingerprint != taught.fingerprint  # replaced whole


def test_pseudo_label_refuses_bad_inputs(tiny_world, pretrained, tmp_path, capsys):
    _, data = tiny_world
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    for argv, message in [
        (["--out", str(data)], "choose another output"),
        (["--out", str(data.parent)], "choose another output"),  # it holds the dataset
        (["--out", str(data / "inside")], "choose another output"),
        (["--out", str(pretrained / "x")], "choose another output"),
        (["--out", str(tmp_path / "notes")], "a folder that is not a dataset"),
        (["--out", str(tmp_path / "notes" / "mine.txt")], "exists and is not a folder"),
        (["--out", str(tmp_path / "o"), "--top-k", "-1"], "top_k must be a finite number >= 0"),
        (["--out", str(tmp_path / "o"), "--min-score", "2"], "scores in [0, 1)"),
        (["--out", str(tmp_path / "o"), "--min-score", "nan"], "min_score must be a finite number >= 0"),
        (["--out", str(tmp_path / "o"), "--target-floor", "nan"], "target_floor must be a finite number >= 0"),
        (["--out", str(tmp_path / "o"), "--top-k", "0", "--min-score", "1"], "nothing to pseudo-label"),
    ]:
        with pytest.raises(SystemExit):
            pseudo_label.main(["--teacher", str(pretrained), "--data", str(data), "--no-progress"] + argv)
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        pseudo_label.main(["--teacher", str(tmp_path / "nothing"), "--data", str(data), "--out", str(tmp_path / "o")])
    assert "no trained run here" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and (tmp_path / "notes" / "mine.txt").read_text() == "keep me"
    assert data.is_dir() and (pretrained / "model.keras").exists()


def test_a_dataset_without_a_yfcc_split_is_said_so(tiny_world, pretrained, tmp_path, capsys):
    from app.config import PrepareConfig
    from app.records.builder import prepare_dataset

    sources, data = tiny_world
    empty = tmp_path / "no-yfcc"
    prepare_dataset(sources, empty, PrepareConfig(tag_limit=10, tag_threshold=2, records_per_shard=64,
                                                  yfcc_split_size=0), progress=False)
    info = DatasetInfo.load(empty)
    assert info.split_sizes["yfcc"] == 0 and info.split_digest("test") == DatasetInfo.load(data).split_digest("test")
    with pytest.raises(SystemExit):
        run(TAGS + ["--data", str(empty), "--train-split", "yfcc"], tmp_path, "r")
    assert "the yfcc split is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pseudo_label.main(["--teacher", str(pretrained), "--data", str(empty), "--out", str(tmp_path / "o")])
    assert "the yfcc split is empty" in capsys.readouterr().err
