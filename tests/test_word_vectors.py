"""Encoder vectors in the model: starting rows (frozen, fine-tuned), save/load, and unseen words added at export."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from app import export as export_cli
from app import train as train_cli
from app.config import ModelConfig
from app.model.classifier import build_head
from app.model.preprocessor import ContextualPreprocessor
from app.model.word_vectors import place_words, starting_vectors
from app.serving.signatures import EXTENSION_ASSET
from app.text.encoders import VectorCache
from app.text.tags import Vocabulary
from tiny_encoders import one_hot_rows, save_tiny_encoder

SYNONYMS = [["dog", "doggo"], ["car", "automobil"]]  # doggo and automobil are in no training photo
NEW_WORDS = "doggo\nautomobil\n\n\u200b\n" + "x" * 10_000 + "\n2009\ndog\n"


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    path = save_tiny_encoder(tmp_path_factory.mktemp("encoder") / "tiny", one_hot_rows(SYNONYMS, 8), 8)
    return f"savedmodel:{path}"


@pytest.fixture(autouse=True)
def vector_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIC_VECTOR_CACHE", str(tmp_path / "vectors"))


def test_frozen_embedding_starts_from_encoder_vectors_and_survives_save_load(tiny_spec, tmp_path):
    config = ModelConfig(model="tags", word_vectors="frozen", text_encoder=tiny_spec, embedding_dim=6)
    vocab = Vocabulary(["dog", "car", "beach"], [5, 4, 3], limit=4, threshold=1)
    preprocessor = ContextualPreprocessor.for_model(config, vocab)
    rows = starting_vectors(config, preprocessor)["tag"]
    head = build_head(config, 3, preprocessor)
    embedding = head.get_layer("tag_embedding")
    assert not embedding.trainable and embedding.output_dim == 8 and head.get_layer("tag_projection").units == 6
    np.testing.assert_array_equal(embedding.get_weights()[0], rows)
    assert not rows[:2].any() and rows[2] @ rows[3] == pytest.approx(0.0)  # padding, OOV; dog, car
    head.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert not loaded.get_layer("tag_embedding").trainable
    ids = np.array([[2, 4, 0, 0]], np.int32)
    np.testing.assert_allclose(loaded({"tag_ids": ids}), head({"tag_ids": ids}), rtol=1e-6)
    fine = build_head(ModelConfig(**{**config.__dict__, "word_vectors": "fine-tuned"}), 3, preprocessor)
    assert fine.get_layer("tag_embedding").trainable


def test_place_words():
    vocab = np.array([[0, 0], [0, 0], [1, 0], [0, 1]], np.float32)  # padding, OOV, two words
    trained = np.array([[0, 0], [9, 9], [3, 1], [2, 5]], np.float32)
    new = np.array([[0.6, 0.8]], np.float32)
    np.testing.assert_allclose(place_words(new, vocab, vocab, from_encoder=True, neighbours=2), new)  # frozen
    np.testing.assert_allclose(place_words(new, vocab, trained, from_encoder=False, neighbours=1), trained[[3]])  # snap
    drift = (0.6 * (trained[2] - vocab[2]) + 0.8 * (trained[3] - vocab[3])) / 1.4  # weights: the cosines, summing to 1
    np.testing.assert_allclose(place_words(new, vocab, trained, True, neighbours=2), new + drift, rtol=1e-6)


def _serve(target, tags):
    serve = tf.saved_model.load(str(target)).signatures["serving_default"]
    rows = tf.ragged.constant(tags).to_tensor(default_value="")
    return serve(tags=rows, image_bytes=tf.constant([b""] * len(tags)))["scores"].numpy()


@pytest.mark.parametrize("vectors", ["scratch", "frozen"])
def test_export_with_an_extended_vocabulary_reads_unseen_tags(tiny_world, tiny_spec, tmp_path, vectors):
    _, data_dir = tiny_world
    run = tmp_path / "run"
    train_cli.main(["--data", str(data_dir), "--out", str(run), "--model", "tags", "--epochs", "2",
                    "--tag-threshold", "2", "--tag-limit", "10", "--embedding-dim", "8", "--hidden-units", "16",
                    "--word-vectors", vectors, "--text-encoder", tiny_spec])
    assert (run / "text_encoder.json").exists() == (vectors == "frozen")
    words = tmp_path / "words.txt"
    words.write_text(NEW_WORDS, encoding="utf-8")
    target = export_cli.main(["--model", str(run), "--extend-vocabulary", str(words), "--text-encoder", tiny_spec,
                              "--neighbours", "1"])  # scratch: the nearest word's row (a snap)
    record = json.loads((target / EXTENSION_ASSET).read_text(encoding="utf-8"))
    assert record["added"] == {"tag": ["doggo", "automobil"]} and record["already_in_vocabulary"] == {"tag": 1}
    assert sorted(record["skipped"].values()) == ["digits_only", "empty", "invisible_only", "too_long"]
    scores = _serve(target, [["dog"], ["doggo"], ["car"], ["automobil"], ["never-seen-qqq"]])
    np.testing.assert_allclose(scores[1], scores[0], rtol=1e-5)
    np.testing.assert_allclose(scores[3], scores[2], rtol=1e-5)
    assert np.abs(scores[1] - scores[4]).max() > 1e-4 and np.abs(scores[3] - scores[4]).max() > 1e-4
    plain = _serve(export_cli.main(["--model", str(run)]), [["dog"], ["doggo"], ["never-seen-qqq"]])
    np.testing.assert_allclose(plain[0], scores[0], rtol=1e-5)  # the vocabulary's words are unchanged
    np.testing.assert_allclose(plain[1], plain[2], rtol=1e-6)  # without the extension doggo is out of vocabulary


def test_a_wide_tag_path_gets_zero_rows_for_words_added_after_training(tiny_world, tiny_spec, tmp_path):
    """--wide-tags: the linear tag x class table is averaged over a photo's tags and added to the logits;
    a word added at export has only its encoder vector (the deep path), not a learned row of its own."""
    from app.runs.trained import TrainedRun
    from app.serving.extend import extend_run

    _, data_dir = tiny_world
    run = tmp_path / "run"
    train_cli.main(["--data", str(data_dir), "--out", str(run), "--model", "tags", "--epochs", "2", "--tag-threshold",
                    "2", "--tag-limit", "10", "--embedding-dim", "8", "--hidden-units", "16", "--wide-tags",
                    "--text-encoder", tiny_spec])
    trained = TrainedRun(run)
    table = trained.model.get_layer("tag_wide").get_weights()[0]
    assert np.abs(table).max() > 0  # it learned
    ids = np.zeros((1, 10), "int32")
    ids[0, :2] = [2, 3]
    pooled = keras.Model(trained.model.inputs, trained.model.get_layer("tag_wide_pool").output)({"tag_ids": ids})
    np.testing.assert_allclose(pooled[0], table[[2, 3]].mean(axis=0), rtol=1e-5)  # the mean of the photo's rows
    extended = extend_run(trained, ["doggo", "automobil"], tiny_spec).run
    grown = extended.model.get_layer("tag_wide").get_weights()[0]
    np.testing.assert_array_equal(grown[: len(table)], table)
    assert grown.shape[0] == len(table) + 2 and not grown[len(table):].any()


def test_contextual_export_extended_with_the_runs_own_encoder(contextual_export, tmp_path):
    from app.serving.signatures import export
    from photos import jpeg

    run, plain = contextual_export  # trained with the defaults: frozen vectors of the bundled encoder
    target = export(run, tmp_path / "serving", new_words=["doggie"])
    tags = [["dog"], ["doggie"], ["never-seen-qqq"]]
    image = tf.constant([jpeg(90, 32)] * 3)
    out, before = (tf.saved_model.load(str(t)).signatures["serving_default"](tags=tf.ragged.constant(
        tags).to_tensor(default_value=""), image_bytes=image)["scores"].numpy() for t in (target, plain))
    np.testing.assert_allclose(out[0], before[0], rtol=1e-5)  # vocabulary words score as before
    np.testing.assert_allclose(before[1], before[2], rtol=1e-6)  # before: doggie was out of vocabulary
    assert np.abs(out[1] - out[0]).sum() < np.abs(out[2] - out[0]).sum()  # now it reads close to dog


def test_a_missing_user_encoder_is_refused_before_the_run_folder_is_written(tiny_world, tmp_path, capsys):
    _, data_dir = tiny_world
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--data", str(data_dir), "--out", str(tmp_path / "run"), "--model", "tags", "--epochs", "1",
                        "--tag-threshold", "2", "--text-encoder", f"savedmodel:{tmp_path / 'absent'}"])
    assert exit_info.value.code == 2 and "absent: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # was written, then refused the corrected command


def test_a_run_refuses_words_placed_by_another_encoder(tiny_world, tiny_spec, tmp_path, capsys):
    _, data_dir = tiny_world
    run = tmp_path / "run"
    train_cli.main(["--data", str(data_dir), "--out", str(run), "--model", "tags", "--epochs", "1",
                    "--tag-threshold", "2", "--embedding-dim", "8", "--word-vectors", "fine-tuned",
                    "--text-encoder", tiny_spec])
    words = tmp_path / "words.txt"
    words.write_text("doggo\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main(["--model", str(run), "--extend-vocabulary", str(words), "--text-encoder", "use"])
    assert exit_info.value.code == 2
    assert "new words must be placed by the same encoder" in capsys.readouterr().err
    record = json.loads((run / "text_encoder.json").read_text())
    (run / "text_encoder.json").write_text(json.dumps({**record, "version": "sha256:other"}))
    with pytest.raises(SystemExit):
        export_cli.main(["--model", str(run), "--extend-vocabulary", str(words)])
    assert "text_encoder.json: edited since the run wrote it" in capsys.readouterr().err  # the run folder is sealed


def test_caption_words_start_from_the_same_encoder(tiny_spec):
    config = ModelConfig(model="tags", text_input="both", text_branch="separate", word_vectors="fine-tuned",
                         text_encoder=tiny_spec, embedding_dim=4)
    tags = Vocabulary(["dog", "beach"], [3, 2], limit=3, threshold=1)
    words = Vocabulary(["doggo", "car", "sunset"], [4, 3, 1], limit=5, threshold=1)
    preprocessor = ContextualPreprocessor.for_model(config, tags, words)
    head = build_head(config, 2, preprocessor)
    tag_rows, word_rows = (head.get_layer(f"{p}_embedding").get_weights()[0] for p in ("tag", "text"))
    assert tag_rows.shape == (4, 8) and word_rows.shape == (5, 8)
    np.testing.assert_array_equal(tag_rows[2], word_rows[2])  # dog and doggo: one encoder vector
    assert head.get_layer("text_projection").units == 4
