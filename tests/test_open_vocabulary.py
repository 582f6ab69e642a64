"""Open vocabulary on a tiny world: a class held out of training scored zero-shot, the embed signature,
tag suggestion from a user's word list, evaluation on another class list, and the bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from app import evaluate, predict, prepare, train
from app.errors import InputError
from app.model.zero_shot import Calibration


def _unseen_class(data_dir) -> tuple[int, str]:
    """The class with the most test photos tagged with its name (so that the words can say it)."""
    from conftest import dense_split

    from app.records.dataset import DatasetInfo
    from app.records.schema import iter_tags

    info = DatasetInfo.load(data_dir)
    tags = [[t.lower() for t in row] for row in iter_tags(info.shard_files("test"))]
    positive = dense_split(data_dir, "test")["verified"] == 1
    said = [sum(name.lower() in t for t, p in zip(tags, positive[:, i]) if p) for i, (_, name) in enumerate(info.classes)]
    index = int(np.argmax(said))
    return index, info.classes[index][1]


def _ap(scores: np.ndarray, positive: np.ndarray) -> float:
    hits = positive[np.argsort(-scores, kind="stable")]
    return float(np.sum(np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)) / hits.sum())


@pytest.fixture(scope="module")
def open_run(tiny_world, tmp_path_factory):
    """A tags model trained through the CLI with one class unseen, its embedding head, and its export."""
    from app.serving.signatures import export

    _, data_dir = tiny_world
    index, name = _unseen_class(data_dir)
    root = tmp_path_factory.mktemp("open")
    (root / "unseen.txt").write_text(name + "\n")
    train.main(["--data", str(data_dir), "--out", str(root / "run"), "--model", "tags", "--tag-limit", "10",
                "--tag-threshold", "2", "--embedding-dim", "16", "--hidden-units", "32", "--epochs", "2",
                "--batch-size", "32", "--unseen-classes", str(root / "unseen.txt"), "--embedding-head",
                "--head-epochs", "2", "--head-batch-size", "32", "--no-progress"])
    return {"run": root / "run", "export": export(root / "run"), "unseen": (index, name), "data": data_dir,
            "root": root}


def test_a_class_absent_from_training_is_scored_zero_shot(open_run, tmp_path):
    from conftest import dense_split

    from app.records.dataset import DatasetInfo
    from app.records.schema import iter_tags
    from app.runs.rundir import RunDir

    index, name = open_run["unseen"]
    info = DatasetInfo.load(open_run["data"])
    run = RunDir(open_run["run"])
    record = json.loads((open_run["run"] / "embedding" / "embedding.json").read_text())
    assert record["unseen_classes"] == [name] and record["run"] == run.identity()
    assert run.load_thresholds()[index] == 1.0  # the sigmoid head never calls the held-out class
    assert run.metrics()["unseen_classes"] == [name]  # by name: the head holds out these, whatever the file says later
    # every test photo, scored for the unseen class by predict.py --classes, through the export
    tags = list(iter_tags(info.shard_files("test")))
    photos = tmp_path / "photos.jsonl"
    photos.write_text("".join(json.dumps({"image_path": "", "tags": t}) + "\n" for t in tags))
    (tmp_path / "classes.csv").write_text(f"{name}\nkeyboard\n")
    predict.main(["--model", str(open_run["export"]), "--input", str(photos), "--classes",
                  str(tmp_path / "classes.csv"), "--output", str(tmp_path / "out.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == len(tags) and {len(r["zero_shot"]) for r in rows} == {2}
    assert all(c["name"] != name for r in rows for c in r["top_k"][:1])  # its sigmoid output is silenced
    scores = np.array([next(c["score"] for c in r["zero_shot"] if c["name"] == name) for r in rows])
    positive = dense_split(open_run["data"], "test")["verified"][:, index] == 1
    assert _ap(scores, positive) > 2 * positive.mean()  # far above chance (a random ranking's AP is the prevalence)


def test_embed_signature_equals_the_keras_model(open_run):
    from app.runs.embedding_head import EmbeddingHead
    from app.runs.trained import TrainedRun

    run = TrainedRun(open_run["run"])
    head = EmbeddingHead.load(run.run, run.model)
    tags = [["dog", "beach"], [], ["zzzz-unknown"], ["pizza", "bier", "dog"]]
    width = max(len(t) for t in tags)
    padded = tf.constant([t + [""] * (width - len(t)) for t in tags])
    out = tf.saved_model.load(str(open_run["export"])).signatures["embed"](tags=padded,
                                                                           image_bytes=tf.constant([b""] * 4))
    inputs, _ = run.preprocessor({"tags": tf.ragged.constant(tags, dtype=tf.string)})
    reference = np.asarray(head.model({"tag_ids": inputs["tag_ids"]}, training=False))
    np.testing.assert_allclose(out["embedding"].numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-5)
    assert out["image_ok"].numpy().tolist() == [False] * 4  # (no bytes)


def test_tags_suggested_from_a_user_word_list(open_run, tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("guitar\n\nbanana\n   \nsnow\nbanana\nbeach\n")
    predict.main(["--model", str(open_run["run"]), "--tags", "beach", "--suggest-tags", "2", "--words", str(words)])
    captured = capsys.readouterr()
    suggested = [s["tag"] for s in json.loads(captured.out)["suggested_tags"]]
    assert len(suggested) == 2 and set(suggested) <= {"guitar", "banana", "snow"}  # the photo's own tag is not
    assert "2 line(s) skipped (blank_line)" in captured.err and "1 line(s) skipped (repeated_word)" in captured.err


def test_a_class_list_with_duplicate_names_and_a_word_list_of_blanks_are_refused(open_run, tmp_path, capsys):
    (tmp_path / "classes.csv").write_text("cat\ndog\ncat\n")
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    for flags, message in ((["--classes", str(tmp_path / "classes.csv")], "classes.csv:3: class name 'cat' repeats "
                                                                           "line 1"),
                           (["--suggest-tags", "3", "--words", str(tmp_path / "blank.txt")], "blank.txt: no words")):
        with pytest.raises(SystemExit):
            predict.main(["--model", str(open_run["run"]), "--tags", "dog", *flags])
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_evaluate_scores_a_dataset_with_another_class_list(open_run, tmp_path, capsys):
    # tags of the run's vocabulary; the classes are names the run was never trained on
    rows = [("p1", "guitar|man", "guitar"), ("p2", "pizza|cake", "food"), ("p3", "guitar", "guitar"),
            ("p4", "hamburger|pizza", "food"), ("p5", "guitar|night", "guitar"), ("p6", "strawberry", "food")]
    splits = ["train"] * 6 + ["test"] * 3 + ["validation"] * 3
    lines = ["id,tags,labels,split"] + [f"{i}{k // 6},{t},{c},{s}"
                                        for k, ((i, t, c), s) in enumerate(zip(rows * 2, splits))]
    (tmp_path / "photos.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.csv").write_text("guitar\nfood\n")
    prepare.main(["--manifest", str(tmp_path / "photos.csv"), "--classes", str(tmp_path / "classes.csv"),
                  "--out", str(tmp_path / "data"), "--no-progress"])
    capsys.readouterr()
    result = evaluate.main(["--model", str(open_run["run"]), "--data", str(tmp_path / "data"), "--json"])
    assert json.loads(capsys.readouterr().out) == result
    assert result["classes_scored"] == 2 and result["new_classes"] == 2 and result["images"] == 3
    assert result["ap"] == {"guitar": 1.0, "food": 1.0}  # the guitar photos rank above the food photo, and back


def test_a_head_of_another_state_of_the_run_is_refused(open_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(open_run["run"], copy, ignore=shutil.ignore_patterns("serving"))  # the run in process
    record_path = copy / "embedding" / "embedding.json"
    record = json.loads(record_path.read_text())
    for changed, message in (({"run": "0" * 16}, "trained on another state of the run"),
                             ({"calibration": {"scale": float("nan"), "bias": 0.0}}, "two finite numbers")):
        record_path.write_text(json.dumps({**record, **changed}))
        with pytest.raises(SystemExit):
            predict.main(["--model", str(copy), "--tags", "dog", "--classes", str(open_run["root"] / "unseen.txt")])
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err


def test_unseen_classes_that_the_dataset_lacks_are_refused_before_anything_is_written(tiny_world, tmp_path, capsys):
    _, data_dir = tiny_world
    (tmp_path / "unseen.txt").write_text("Unicorn\n")
    with pytest.raises(SystemExit):
        train.main(["--data", str(data_dir), "--out", str(tmp_path / "run"), "--model", "tags",
                    "--unseen-classes", str(tmp_path / "unseen.txt"), "--no-progress"])
    err = capsys.readouterr().err
    assert "unseen.txt: class 'Unicorn' is not among the dataset's" in err and not (tmp_path / "run").exists()


def test_unseen_classes_lose_their_targets_and_the_tags_that_name_them():
    from app.records.unseen import UnseenClasses
    from app.text.tags import Vocabulary

    classes = [("/m/1", "Dog"), ("/m/2", "Sea_lion"), ("/m/3", "Cat")]
    unseen = UnseenClasses.matching([("Sea_lion", "Sea_lion")], classes, "test")
    with pytest.raises(InputError, match="the name and the id are two classes"):
        UnseenClasses.matching([("/m/3", "Dog")], classes, "test")  # `Dog,/m/3`: /m/3 is Cat
    with pytest.raises(InputError, match="names match case: 'Dog'"):
        UnseenClasses.matching([("dog", "dog")], classes, "test")
    assert unseen.indices == (1,) and {"sea lion", "sealion", "sea_lion"} <= set(unseen.words)
    vocab = Vocabulary(tokens=["dog", "sea lion", "cat", "sealion"], counts=[4, 3, 2, 1], limit=4, threshold=1)
    ids = unseen.tag_ids(vocab)
    assert ids == [3, 5]
    batch = tf.data.Dataset.from_tensors(({"tag_ids": tf.constant([[2, 3, 5, 0]], tf.int32)}, tf.ones([1, 3]),
                                          tf.ones([1, 1])))
    inputs, targets, mask = next(iter(unseen.hide(batch, 3, ids)))
    assert inputs["tag_ids"].numpy().tolist() == [[2, 0, 0, 0]]
    assert targets.numpy().tolist() == [[1, 0, 1]] and mask.numpy().tolist() == [[1, 0, 1]]


def test_calibration_stays_finite_on_separable_scores():
    cosines = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    fitted = Calibration.fit(cosines, np.array([0, 0, 0, 1, 1, 1]))
    assert np.isfinite([fitted.scale, fitted.bias]).all() and fitted.scale > 0
    probabilities = fitted(cosines)
    assert (np.diff(probabilities) > 0).all() and probabilities[0] < 0.5 < probabilities[-1]
    mixed = Calibration.fit(np.r_[cosines, cosines], np.r_[[0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 1]])
    assert 0 < mixed.scale < fitted.scale


def test_the_clients_embed_requests_feed_the_exports_signature(open_run):
    import base64

    from app.serving.client import Photo, grpc_request, rest_body

    photos = [Photo(["dog", "beach"], b""), Photo([], b""), Photo(["snow"], b"")]
    body = rest_body(photos, "embed", columnar=True)
    assert body["signature_name"] == "embed" and body["inputs"]["tags"] == [["dog", "beach"], ["", ""], ["snow", ""]]
    request = grpc_request(photos, "m", signature="embed")
    assert request.model_spec.signature_name == "embed"
    assert [d.size for d in request.inputs["tags"].tensor_shape.dim] == [3, 2]
    signature = tf.saved_model.load(str(open_run["export"])).signatures["embed"]
    images = [base64.b64decode(item["b64"]) for item in body["inputs"]["image_bytes"]]
    by_rest = signature(tags=tf.constant(body["inputs"]["tags"]), image_bytes=tf.constant(images))["embedding"]
    by_grpc = signature(**{name: tf.make_ndarray(proto) for name, proto in request.inputs.items()})["embedding"]
    np.testing.assert_allclose(by_rest.numpy(), by_grpc.numpy(), atol=1e-6)
    assert by_rest.shape[0] == 3 and not np.allclose(by_rest[0], by_rest[2])


def test_search_from_a_trained_runs_vectors(open_run, tmp_path, capsys):
    from app import search
    from app.records.dataset import DatasetInfo
    from app.records.schema import iter_tags
    from app.retrieval.photo_vectors import photo_tags
    from app.serving.predictor import load_predictor
    from app.text.encoders import encoder_from_spec

    data, run, index = str(open_run["data"]), str(open_run["run"]), tmp_path / "index"
    report = search.main(["index", "--data", data, "--out", str(index), "--model", run, "--no-progress"])
    info = DatasetInfo.load(open_run["data"])
    assert report.added == report.size == info.split_sizes["test"]  # a photo without tags has a vector too
    fingerprint = json.loads((index / "index.json").read_text())["fingerprint"]
    assert fingerprint["vectors"].startswith("embedding-head:") and fingerprint["run"] == str(open_run["run"].resolve())
    answers = search.main(["query", "--index", str(index), "beach", "-k", "5", "--format", "json"])
    # the same photos as brute force over the export's embed signature
    tags = list(iter_tags(info.shard_files("test")))
    vectors = load_predictor(open_run["export"]).embed(tags, [b""] * len(tags))["embedding"]
    ids = [i for batch, _ in photo_tags(info, "test") for i in batch]
    exact = dict(zip(ids, vectors @ encoder_from_spec("use").encode(["beach"])[0]))
    found = answers[0]["results"]
    np.testing.assert_allclose([r["score"] for r in found], sorted(exact.values(), reverse=True)[:5], atol=1e-5)
    np.testing.assert_allclose([exact[r["id"]] for r in found], [r["score"] for r in found], atol=1e-5)  # (ties:
    # photos with the same inputs have the same vector, in any order)
    # an index of tag means is not added to from a run, and a run's index takes no other encoder
    search.main(["index", "--data", data, "--out", str(tmp_path / "tags"), "--no-progress"])
    capsys.readouterr()
    for out, flags, message in ((tmp_path / "tags", [], "its vectors are the mean of each photo's tag vectors"),
                                (index, ["--text-encoder", "savedmodel:/elsewhere"], "leave --text-encoder out with --model")):
        with pytest.raises(SystemExit):
            search.main(["index", "--data", data, "--out", str(out), "--model", run, *flags, "--no-progress"])
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err


def test_an_index_refuses_the_vectors_of_a_head_trained_again(open_run, tmp_path, capsys):
    import shutil

    from app import search

    run = tmp_path / "run"
    shutil.copytree(open_run["run"], run, ignore=shutil.ignore_patterns("serving"))
    data, index = str(open_run["data"]), str(tmp_path / "index")
    search.main(["index", "--data", data, "--out", index, "--model", str(run), "--no-progress"])
    train.main(["--data", data, "--out", str(run), "--model", "tags", "--tag-limit", "10", "--tag-threshold", "2",
                "--embedding-dim", "16", "--hidden-units", "32", "--epochs", "2", "--batch-size", "32",
                "--unseen-classes", str(open_run["root"] / "unseen.txt"), "--embedding-head", "--head-epochs", "1",
                "--head-batch-size", "32", "--no-progress"])  # the same run; a head of other settings
    assert "training a new one in its place" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        search.main(["index", "--data", data, "--out", index, "--split", "validation", "--no-progress"])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "its vectors are the embedding head of the run" in err, err
