"""Every command on a collection (the demo world as a manifest, issue 22 item 6): train (three models),
evaluate with --compare and late fusion, a search trial, export and its serving signature, predict and
pseudo-labelling of the manifest's `unlabelled` split; the class list is the manifest's, not Open Images'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from app import evaluate, export, predict, prepare, pseudo_label, train
from app.records.dataset import DatasetInfo
from app.runs.rundir import RunDir
from tuning import search

SMALL = ["--epochs", "1", "--embedding-dim", "8", "--hidden-units", "16", "--image-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def manifest_runs(tmp_path_factory):
    """The demo world as a manifest (with unlabelled photos), and a contextual, tags and image run on it."""
    root = tmp_path_factory.mktemp("collection-commands")
    data = root / "data"
    prepare.main(["--demo", "--demo-format", "manifest", "--demo-size", "60", "--seed", "2", "--out", str(data),
                  "--tag-threshold", "1", "--no-progress"])
    runs = {kind: root / kind for kind in ("contextual", "tags", "image")}
    for kind, run in runs.items():
        train.main(["--data", str(data), "--model", kind, "--out", str(run), *SMALL])
    return data, runs


def test_evaluate_compares_with_late_fusion_and_no_machine_labels(manifest_runs, capsys):
    data, runs = manifest_runs
    result = evaluate.main(["--model", str(runs["contextual"]), "--compare", str(runs["tags"]), str(runs["image"]),
                            "--no-progress"])
    out = capsys.readouterr().out
    assert any(name.startswith("late fusion") for name in result.summary)
    assert "machine labels" not in result.summary and "machine labels" not in out  # a collection has none
    assert set(result.exhaustive) >= {"contextual", "tags", "image"}
    assert result.class_mids == [cid for cid, _ in DatasetInfo.load(data).classes]


def test_search_export_serving_and_predict_use_the_collection_classes(manifest_runs, tmp_path):
    data, runs = manifest_runs
    ids = {cid for cid, _ in DatasetInfo.load(data).classes}
    best = search.main(["--data", str(data), "--model", "tags", "--max-trials", "1", "--epochs", "1",
                        "--text-input", "both", "--out", str(tmp_path / "search"), "--no-progress"])
    assert 0 < best["mean_map"] <= 1 and (tmp_path / "search" / "best_config.json").exists()
    # the search's models read the captions, and its best config says so (train.py --config takes it)
    assert json.loads((tmp_path / "search" / "best_config.json").read_text())["model"]["text_input"] == "both"
    trial_run = next((tmp_path / "search").glob("trial_*/run"))
    assert (trial_run / "text_vocab.tsv").exists()
    served = export.main(["--model", str(runs["tags"]), "--out", str(tmp_path / "serving"), "--no-progress"])
    image = next((data / "raw" / "world" / "images").glob("*.jpg")).read_bytes()
    out = tf.saved_model.load(str(served)).signatures["serving_default"](
        tags=tf.constant([["dog", "beach"]]), image_bytes=tf.constant([image]))
    assert out["scores"].shape == (1, len(ids))
    assert {m.decode() for m in out["top_k_mids"].numpy().ravel()} <= ids
    (tmp_path / "in.csv").write_text("image_id,image_path,tags\nmy photo,,\"dog,beach\"\n")
    predict.main(["--model", str(served), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "p.csv"),
                  "--format", "oid-csv", "--min-score", "0", "--no-progress"])
    header, *rows = (tmp_path / "p.csv").read_text().splitlines()
    assert header == "ImageID,LabelName,Score" and {r.split(",")[1] for r in rows} == ids


def test_pseudo_label_scores_the_manifest_unlabelled_split(manifest_runs, tmp_path):
    data, runs = manifest_runs
    info = DatasetInfo.load(data)
    assert info.split_sizes["yfcc"] == 60  # the demo manifest's `unlabelled` photos
    made_from = info.stats["collection"]["made_from"]  # the demo's files, where they are once prepared
    assert made_from and all(Path(p).is_file() and Path(p).is_relative_to(data) for p in made_from)
    # without --data: the dataset the teacher was trained on
    stats = pseudo_label.main(["--teacher", str(runs["tags"]), "--out", str(tmp_path / "taught"), "--no-progress"])
    taught = DatasetInfo.load(tmp_path / "taught")
    assert 0 < stats["kept"] <= 60
    assert taught.split_sizes["train"] == info.split_sizes["train"] + stats["kept"]
    assert taught.split_sizes["test"] == info.split_sizes["test"] and not taught.has_machine_labels


def test_pseudo_label_without_unlabelled_photos_and_a_spaced_class_name(tmp_path, capsys):
    (tmp_path / "classes.csv").write_text("traffic light\ncat\n")
    (tmp_path / "photos.csv").write_text("id,tags,labels,split\n1,a b,traffic light,train\n2,b,cat|traffic light,"
                                         "train\n3,a,cat,validation\n4,b,cat,test\n")
    prepare.main(["--manifest", str(tmp_path / "photos.csv"), "--classes", str(tmp_path / "classes.csv"),
                  "--out", str(tmp_path / "data"), "--no-progress"])
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["splits"]["train"]["images"] == 2  # `traffic light` alone is one class, not two labels
    with pytest.raises(SystemExit) as exit_info:
        pseudo_label.main(["--teacher", str(tmp_path / "none"), "--data", str(tmp_path / "data"),
                           "--out", str(tmp_path / "taught")])
    assert exit_info.value.code == 2
    assert "split `unlabelled` in the manifest" in capsys.readouterr().err


def test_class_names_at_padding_index_are_empty():
    """A photo with fewer than k specific confident classes (padding -1) once failed the whole request."""
    from app.serving.specific import at_indices

    table = tf.constant(["p", "l", "c", ""])
    got = at_indices(table, tf.constant([[1, -1, -1], [-1, -1, -1], [2, 0, 1]]))
    assert got.numpy().tolist() == [[b"l", b"", b""], [b"", b"", b""], [b"c", b"p", b"l"]]


def test_predict_names_class_ids_why_a_photo_needs_review_and_what_it_could_not_use(manifest_runs, tmp_path, capsys):
    """Classes as `class_id` (no Open Images `mid`), the classes behind needs_review, warnings for tags
    out of the vocabulary and inputs the model does not read; `caption` is `text`, as in a manifest."""
    data, runs = manifest_runs
    ids = {cid for cid, _ in DatasetInfo.load(data).classes}
    (tmp_path / "a.jpg").write_bytes(next((data / "raw" / "world" / "images").glob("*.jpg")).read_bytes())
    known = RunDir(runs["tags"]).load_vocab().tokens[0]
    (tmp_path / "in.csv").write_text(f"image_path,tags,caption\na.jpg,{known}|zzzunknown,A dog\n,,\n")
    predict.main(["--model", str(runs["tags"]), "--input", str(tmp_path / "in.csv"), "--review-margin", "1",
                  "--no-progress"])
    first, empty = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert first["text"] == "A dog" and first["warnings"] == [
        "tags not in the model's vocabulary, not used: zzzunknown", "the model reads no text: the text is not used",
        "the model reads no image: the image is not used"]
    assert "warnings" not in empty
    for row in (first, empty):
        assert {c["class_id"] for c in row["top_k"] + row["classes"]} <= ids
        assert not any("mid" in c for c in row["top_k"] + row["classes"])
        near = row["review"]["near_threshold"]  # a margin of 1: every class is near its threshold
        assert row["needs_review"] and len(near) == 5 and row["review"]["no_confident_class"] == (not row["classes"])
        gaps = [abs(c["score"] - c["threshold"]) for c in near]
        assert gaps == sorted(gaps) and {c["class_id"] for c in near} <= ids
    (tmp_path / "both.csv").write_text("image_path,tags,text,caption\n,dog,a,b\n")
    with pytest.raises(SystemExit):
        predict.main(["--model", str(runs["tags"]), "--input", str(tmp_path / "both.csv"), "--no-progress"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'both.csv'}:1: columns text and caption are one input (caption is another name for "
        f"text): give one")
