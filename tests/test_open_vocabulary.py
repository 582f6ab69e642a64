"""Open vocabulary on a tiny world: a class held out of training scored zero-shot, the embed signature,
tag suggestion from a user's word list, and the bad inputs of --classes and --words."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from app import predict


def _unseen_class(data_dir) -> tuple[int, str]:
    """The class with the most test photos tagged with its name (so that the words can say it)."""
    from conftest import dense_split

    from app.records.dataset import DatasetInfo
    from app.records.schema import iter_tags

    info = DatasetInfo.load(data_dir)
    tags = list(iter_tags(info.shard_files("test")))
    positive = dense_split(data_dir, "test")["verified"] == 1
    said = [sum(name.lower() in t for t, p in zip(tags, positive[:, i]) if p) for i, (_, name) in enumerate(info.classes)]
    index = int(np.argmax(said))
    return index, info.classes[index][1]


@pytest.fixture(scope="module")
def open_run(tiny_world, tmp_path_factory):
    """A tags model trained with one class unseen, its embedding head, and its export."""
    from app.config import DataConfig, EmbeddingConfig, ModelConfig, RunConfig, TrainConfig
    from app.retrieval.text_encoder import load_encoder
    from app.serving.signatures import export
    from app.training.embedding_head import fit_embedding_head
    from app.training.run import RunOptions, train

    _, data_dir = tiny_world
    index, name = _unseen_class(data_dir)
    root = tmp_path_factory.mktemp("open")
    (root / "unseen.txt").write_text(name + "\n")
    config = RunConfig(data=DataConfig(tag_limit=10, tag_threshold=2, unseen_classes=str(root / "unseen.txt")),
                       model=ModelConfig(model="tags", embedding_dim=16, hidden_units=32),
                       train=TrainConfig(epochs=2, batch_size=32))
    train(data_dir, root / "run", config, RunOptions(progress=False))
    head = fit_embedding_head(root / "run", load_encoder(), EmbeddingConfig(head_epochs=1, head_batch_size=32))
    return {"run": root / "run", "export": export(root / "run"), "head": head, "unseen": (index, name),
            "data": data_dir, "root": root}


def test_a_class_absent_from_training_is_scored_zero_shot(open_run, tmp_path, capsys):
    from conftest import dense_split

    from app.records.dataset import DatasetInfo
    from app.records.schema import iter_tags
    from app.records.unseen import UnseenClasses

    index, name = open_run["unseen"]
    info = DatasetInfo.load(open_run["data"])
    unseen = UnseenClasses.read(open_run["root"] / "unseen.txt", info.classes)
    assert unseen.indices == (index,) and name.lower() in unseen.words
    assert open_run["head"].record["unseen_classes"] == [info.classes[index][0]]
    # every test photo, scored for the unseen class by predict.py --classes, through the export
    truth = dense_split(open_run["data"], "test")
    photos = tmp_path / "photos.jsonl"
    tags = list(iter_tags(info.shard_files("test")))
    photos.write_text("".join(json.dumps({"image_path": "", "tags": t}) + "\n" for t in tags))
    (tmp_path / "classes.csv").write_text(f"{name}\nkeyboard\n")
    predict.main(["--model", str(open_run["export"]), "--input", str(photos), "--classes",
                  str(tmp_path / "classes.csv"), "--output", str(tmp_path / "out.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == len(tags) and {len(r["zero_shot"]) for r in rows} == {2}
    scores = np.array([next(c["score"] for c in r["zero_shot"] if c["name"] == name) for r in rows])
    positive = truth["verified"][:, index] == 1
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    ap = float(np.sum(np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)) / hits.sum())
    assert ap > 2 * positive.mean()  # far above chance (a random ranking's AP is the prevalence)


def test_embed_signature_equals_the_keras_model(open_run):
    run_dir, target, head = open_run["run"], open_run["export"], open_run["head"]
    from app.runs.trained import TrainedRun

    run = TrainedRun(run_dir)
    tags = [["dog", "beach"], [], ["zzzz-unknown"], ["pizza", "bier", "dog"]]
    width = max(len(t) for t in tags)
    padded = tf.constant([t + [""] * (width - len(t)) for t in tags])
    out = tf.saved_model.load(str(target)).signatures["embed"](tags=padded, image_bytes=tf.constant([b""] * 4))
    inputs, _ = run.preprocessor({"tags": tf.ragged.constant(tags, dtype=tf.string)})
    reference = np.asarray(head.model(inputs, training=False))
    np.testing.assert_allclose(out["embedding"].numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-5)


def test_tags_suggested_from_a_user_word_list(open_run, tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("guitar\n\nbanana\n   \nsnow\nbanana\n")
    predict.main(["--model", str(open_run["run"]), "--tags", "guitar", "--suggest-tags", "2", "--words", str(words)])
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    suggested = [s["tag"] for s in record["suggested_tags"]]
    assert len(suggested) == 2 and set(suggested) <= {"guitar", "banana", "snow"} and suggested[0] == "guitar"
    assert "skipped 3 lines (blank_line 2, repeated_word 1)" in captured.err


def test_a_class_list_with_duplicate_names_is_refused(open_run, tmp_path, capsys):
    (tmp_path / "classes.csv").write_text("cat\ndog\ncat\n")
    with pytest.raises(SystemExit):
        predict.main(["--model", str(open_run["run"]), "--tags", "dog", "--classes", str(tmp_path / "classes.csv")])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "classes.csv:3: class name 'cat' repeats line 1" in err


def test_evaluate_scores_a_dataset_with_another_class_list(open_run, tmp_path, capsys):
    from app import evaluate, prepare

    # tags of the run's vocabulary; the classes are names the run was never trained on
    rows = [("p1", "guitar|man", "guitar"), ("p2", "pizza|cake", "food"), ("p3", "guitar", "guitar"),
            ("p4", "hamburger|pizza", "food"), ("p5", "guitar|night", "guitar"), ("p6", "strawberry", "food")]
    splits = ["train"] * 6 + ["test"] * 3 + ["validation"] * 3
    lines = ["id,tags,labels,split"] + [f"{i}{k // 6},{t},{c},{s}" for k, ((i, t, c), s) in enumerate(zip(rows * 2, splits))]
    photos = tmp_path / "photos.csv"
    photos.write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.csv").write_text("guitar\nfood\n")
    prepare.main(["--manifest", str(photos), "--classes", str(tmp_path / "classes.csv"), "--out", str(tmp_path / "data")])
    capsys.readouterr()
    result = evaluate.main(["--model", str(open_run["run"]), "--data", str(tmp_path / "data"), "--json"])
    assert json.loads(capsys.readouterr().out) == result
    assert result["classes_scored"] == 2 and result["new_classes"] == 2 and result["images"] == 3
    assert result["ap"]["guitar"] == 1.0  # the two guitar photos of the test split rank above the food photo
    assert result["ap"]["food"] == 1.0
