"""Serving a model with the image-presence input and a vocabulary normalised per language."""

import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from app.serving import predictor
from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from app.text.language import detect_language
from app.records.pipeline import make_dataset
from app.model.preprocess import decode_images
from app.runs.trained import TrainedRun
from app.serving.signatures import export
from app.training.run import RunOptions, train
from photos import jpeg, noisy_jpeg, truncated
from test_presence import write_photos

# Raw tags as users write them, with each photo's language: inflections, case, umlauts, repeats,
# digits, a multi-word tag, tags never seen in training, a language without a stemmer and none.
MULTILINGUAL = [
    (["Katzen", "katze", "hunde", "2009", "hunde"], "de"),
    (["chats", "chiens", "chat", "new york"], "fr"),
    (["gatos", "perros", "Perro"], "es"),
    (["gatti", "cani", "cane"], "it"),
    (["dogs", "Cats", "puppies", "zzzunseen"], "en"),
    (["katzen", "dogs", "chats"], "un"),
    (["Männer", "mädchen", "frauen"], "vo"),
    (["gatos", "hund"], ""),
    ([], "un"),
]


@pytest.fixture(scope="module")
def exported(tiny_world, tmp_path_factory):
    _, data_dir = tiny_world
    root = tmp_path_factory.mktemp("serving2")
    config = RunConfig(data=DataConfig(tag_limit=10, tag_threshold=2, tag_normalization="snowball"),
                       model=ModelConfig(model="contextual", embedding_dim=16, hidden_units=32, image_size=32,
                                         image_presence=True, image_dropout=0.5),
                       train=TrainConfig(epochs=1, batch_size=32))
    train(data_dir, root / "run", config, RunOptions(progress=False))
    target = export(root / "run")
    return root / "run", target, tf.saved_model.load(str(target))


def test_signatures_take_the_language_and_map_tags_as_the_training_pipeline(exported, tiny_world, tmp_path):
    run_dir, _, loaded = exported
    run = TrainedRun(run_dir)
    assert run.preprocessor.tags.vocab.normalization == "snowball" and run.preprocessor.tags.vocab.forms
    images = [jpeg(20 * i + 10) if i % 3 else b"" for i in range(len(MULTILINGUAL))]
    # the training pipeline: records written by prepare's cleaning, read by make_dataset
    info = write_photos(tmp_path / "d", tiny_world[1], [(t, lang, im) for (t, lang), im in zip(MULTILINGUAL, images)])
    order = [i for shard in range(2) for i in range(shard, len(images), 2)]  # round-robin into two shards
    inputs = next(iter(make_dataset(info, "test", run.preprocessor, batch_size=16)))[0]
    reference = np.asarray(run.model({k: v for k, v in inputs.items() if k in run.model.input}, training=False))
    for name in ("serving_default", "serve_yfcc"):
        assert set(loaded.signatures[name].structured_input_signature[1]) == {"tags", "image_bytes", "language"}
    width = max(len(t) for t, _ in MULTILINGUAL)
    out = loaded.signatures["serving_default"](
        tags=tf.constant([t + [""] * (width - len(t)) for t, _ in MULTILINGUAL]), image_bytes=tf.constant(images),
        language=tf.constant([lang for _, lang in MULTILINGUAL]))
    np.testing.assert_allclose(out["scores"].numpy()[order], reference, rtol=0, atol=1e-5)
    yfcc = loaded.signatures["serve_yfcc"](tags=tf.constant([",".join(t).replace(" ", "+") for t, _ in MULTILINGUAL]),
                                           image_bytes=tf.constant(images),
                                           language=tf.constant([lang for _, lang in MULTILINGUAL]))
    np.testing.assert_allclose(yfcc["scores"].numpy(), out["scores"].numpy(), atol=1e-6)
    # the language matters: a tag whose form in its photo's language differs from its most frequent form
    group, tag = next(key for key in sorted(run.preprocessor.tags.vocab.forms) if key[0])  # e.g. (es, eos) -> eos, not eo
    ids = [run.preprocessor.tags(tf.ragged.constant([[tag]]), languages=tf.constant([lang])).numpy()[0, 0] for lang in (group, "un")]
    assert ids[0] != ids[1]


def test_a_photo_without_an_image_is_marked_absent_not_black(exported):
    run_dir, _, loaded = exported
    run = TrainedRun(run_dir)
    serve = loaded.signatures["serving_default"]
    images = [jpeg(90), b"", truncated(noisy_jpeg(3))]
    tags, languages = tf.constant([["dog", "hund"]] * 3), tf.constant(["de"] * 3)
    out = serve(tags=tags, image_bytes=tf.constant(images), language=languages)
    assert out["image_ok"].numpy().tolist() == [True, False, False]
    pixels, _ = decode_images(tf.constant(images), 32)
    tag_ids = run.preprocessor.tags(tf.ragged.constant([["dog", "hund"]] * 3), languages=languages)
    present = tf.constant([[1.0], [0.0], [0.0]])
    keras_scores = np.asarray(run.model({"tag_ids": tag_ids, "image": pixels, "image_present": present}))
    np.testing.assert_allclose(out["scores"].numpy(), keras_scores, atol=1e-5)
    black = np.asarray(run.model({"tag_ids": tag_ids, "image": pixels, "image_present": tf.ones_like(present)}))
    assert not np.allclose(black[1], keras_scores[1], atol=1e-4)  # absent is not a black image


def test_saved_model_cli_runs_with_the_language_input(exported):
    _, target, _ = exported
    cli = shutil.which("saved_model_cli") or "saved_model_cli"
    run = subprocess.run([cli, "run", "--dir", str(target), "--tag_set", "serve", "--signature_def", "serve_yfcc",
                          "--input_exprs", "tags=['katzen,hund', ''];image_bytes=[b'', b'\\xff\\xd8\\xff'];"
                                           "language=['de', 'un']"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-1000:]
    assert "Result for output key image_ok:\n[False False]" in run.stdout, run.stdout[-2000:]


def test_predict_detects_each_photos_language_as_prepare_does(exported):
    run_dir, target, loaded = exported
    tags = [["hund", "katze", "strand", "sommer", "urlaub"], ["dog"], []]
    assert predictor.tag_languages(tags) == ["de", "un", "un"] == [detect_language(t) for t in tags]
    serve = loaded.signatures["serving_default"]
    width = max(len(t) for t in tags)
    expected = serve(tags=tf.constant([t + [""] * (width - len(t)) for t in tags]), image_bytes=tf.constant([b""] * 3),
                     language=tf.constant(["de", "un", "un"]))["scores"].numpy()
    for model in (target, run_dir):  # the SavedModel, and the run folder's model in process
        got = predictor.load_predictor(model)(tags, [b""] * 3)["scores"]
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_parser_and_the_serving_signature_give_identical_model_inputs(exported, tiny_world, tmp_path):
    """Photos with tags and an image, with an image only, with tags only and with neither: the tf.data
    parser (records) and the serving path (raw request) make the same model inputs, and the export
    scores them as the Keras model scores the parser's."""
    run_dir, _, loaded = exported
    run = TrainedRun(run_dir)
    photos = [(["Katzen", "hunde"], "de", jpeg(60)), ([], "un", jpeg(150)), (["chats", "chat"], "fr", b""),
              ([], "un", b"")]
    info = write_photos(tmp_path / "d", tiny_world[1], photos)
    parsed = next(iter(make_dataset(info, "train", run.preprocessor, batch_size=8)))[0]
    order = [0, 2, 1, 3]  # round-robin into two shards
    tags = [photos[i][0] for i in order]
    width = max(len(t) for t in tags)
    padded = tf.constant([t + [""] * (width - len(t)) for t in tags], tf.string)
    raw = {"tags": tf.RaggedTensor.from_tensor(padded, padding=""),
           "language": tf.constant([photos[i][1] for i in order]), "image": tf.constant([photos[i][2] for i in order])}
    served, image_error = run.preprocessor(raw)
    assert list(served) == list(parsed) == ["tag_ids", "image", "image_present"]
    for name in parsed:
        np.testing.assert_array_equal(served[name], parsed[name])
    assert parsed["image_present"].numpy()[:, 0].tolist() == [1, 0, 1, 0]
    assert image_error.numpy().tolist()[1] == b"no image bytes"
    out = loaded.signatures["serving_default"](tags=padded, image_bytes=raw["image"], language=raw["language"])
    np.testing.assert_allclose(out["scores"], run.model(parsed, training=False), rtol=0, atol=1e-5)


def test_a_run_loads_back_through_app_runs_alone(exported):
    run_dir, _, _ = exported
    run = TrainedRun(run_dir)
    assert run.preprocessor.get_config() == {"inputs": ["tag_ids", "image", "image_present"], "image_size": 32,
                                             "image_presence": True, "vocabulary": "vocab.tsv"}
    assert run.preprocessor.needs_language and run.preprocessor.tags.vocab.normalization == "snowball"
    assert set(run.model.input) == set(run.preprocessor.model_inputs())
    assert len(run.classes) == len(run.thresholds) == run.model.output.shape[-1]
    inputs, _ = run.preprocessor({"tags": tf.ragged.constant([["Katzen"]]), "language": tf.constant(["de"]),
                                  "image": tf.constant([jpeg(60)])})
    assert run.model(inputs).shape == (1, len(run.classes))


# === Free text (a caption) as an input ===
# (raw tags, language, caption): punctuation, case, digits, repeats, inflections, none at all.
CAPTIONED = [(["Hund", "strand"], "de", "Zwei Hunde am Strand, 2009!"), (["dog"], "en", "A dog, running on the BEACH."),
             ([], "un", "dogs... dogs & a cat?"), (["chat"], "fr", ""), ([], "un", "")]


@pytest.fixture(scope="module")
def captioned(tiny_world, tmp_path_factory):
    """A tags + captions model (separate branches, Snowball per language) trained for one epoch, and its export."""
    root = tmp_path_factory.mktemp("captions")
    info = write_photos(root / "data", tiny_world[1], [(tags, lang, b"", text) for tags, lang, text in CAPTIONED * 4])
    config = RunConfig(data=DataConfig(tag_limit=10, tag_threshold=1, tag_normalization="snowball", text_limit=6,
                                       text_threshold=2),
                       model=ModelConfig(model="tags", text_input="both", text_branch="separate", embedding_dim=8,
                                         hidden_units=16),
                       train=TrainConfig(epochs=1, batch_size=8))
    train(info.data_dir, root / "run", config, RunOptions(progress=False))
    return info, root / "run", tf.saved_model.load(str(export(root / "run")))


def test_captions_are_tokenised_in_the_graph_and_served_as_the_parser_reads_them(captioned):
    from app.model.preprocessor import tokenize_text

    info, run_dir, loaded = captioned
    words = tokenize_text(tf.constant(["Zwei Hunde am Strand, 2009!", "A dog, running on the BEACH.", ""]))
    assert words.to_list() == [[b"zwei", b"hunde", b"am", b"strand", b"2009"],
                               [b"a", b"dog", b"running", b"on", b"the", b"beach"], []]
    run = TrainedRun(run_dir)
    vocab = run.preprocessor.text.vocab
    assert (run_dir / "text_vocab.tsv").exists() and vocab.limit == 6 and vocab.normalization == "snowball"
    assert "hund" in vocab.tokens and "hunde" not in vocab.tokens  # "Hunde" (de) -> "hund"; digits dropped
    parsed = next(iter(make_dataset(info, "test", run.preprocessor, batch_size=32)))[0]
    order = [i for shard in range(2) for i in range(shard, len(CAPTIONED) * 4, 2)]
    photos = [(CAPTIONED * 4)[i] for i in order]
    width = max(len(t) for t, _, _ in photos)
    padded = tf.constant([t + [""] * (width - len(t)) for t, _, _ in photos], tf.string)
    raw = {"tags": tf.RaggedTensor.from_tensor(padded, padding=""), "language": tf.constant([p[1] for p in photos]),
           "text": tf.constant([p[2] for p in photos])}
    served, _ = run.preprocessor(raw)
    assert list(served) == list(parsed) == ["tag_ids", "text_ids"]
    for name in parsed:
        np.testing.assert_array_equal(served[name], parsed[name])
    assert set(loaded.signatures["serving_default"].structured_input_signature[1]) == {
        "tags", "image_bytes", "text", "language"}
    out = loaded.signatures["serving_default"](tags=padded, image_bytes=tf.constant([b""] * len(photos)),
                                               text=raw["text"], language=raw["language"])
    np.testing.assert_allclose(out["scores"], run.model(parsed, training=False), rtol=0, atol=1e-5)
    withheld = next(iter(make_dataset(info, "test", run.preprocessor, batch_size=32, withhold=("tags",))))[0]
    assert not np.any(withheld["text_ids"]) and not np.any(withheld["tag_ids"])  # "tags": the whole text side


def test_predict_and_the_client_send_the_text(captioned, tmp_path, capsys):
    import json

    from app.predict import main as predict_main
    from app.serving.client import Photo, rest_body

    _, run_dir, loaded = captioned
    tags, text = ["hund"], "Zwei Hunde am Strand"
    expected = loaded.signatures["serving_default"](tags=tf.constant([tags]), image_bytes=tf.constant([b""]),
                                                    text=tf.constant([text]), language=tf.constant(["un"]))
    without = predictor.load_predictor(run_dir)([tags], [b""])["scores"]
    got = predictor.load_predictor(run_dir)([tags], [b""], [text])["scores"]
    np.testing.assert_allclose(got, expected["scores"], atol=1e-5)
    assert not np.allclose(got, without, atol=1e-6)  # the text is read
    predict_main(["--model", str(run_dir), "--tags", "hund", "--text", text, "--no-progress"])
    single = json.loads(capsys.readouterr().out)
    assert single["text"] == text and [c["score"] for c in single["top_k"]] == pytest.approx(
        expected["top_k_scores"].numpy()[0].tolist(), abs=1e-5)
    (tmp_path / "in.csv").write_text(f"image_path,tags,text\n,hund,{text}\n,hund,\n", encoding="utf-8")
    predict_main(["--model", str(run_dir), "--input", str(tmp_path / "in.csv"), "--no-progress"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["top_k"] == single["top_k"] and lines[1]["top_k"] != single["top_k"]
    body = rest_body([Photo(tags, text=text), Photo([])])
    assert [row["text"] for row in body["instances"]] == [text, ""]


def test_a_shared_text_branch_has_one_vocabulary_embedding_and_pooling(captioned, tmp_path):
    from app.config import ModelConfig as Model
    from app.model.preprocessor import ContextualPreprocessor
    from app.model.classifier import build_head

    info = captioned[0]
    data = DataConfig(tag_limit=10, tag_threshold=2, text_limit=6, text_threshold=2)
    assert Model().text_branch == "separate"  # validation's choice (tuning/results/README.md, section 5)
    shared = ContextualPreprocessor.for_run(Model(model="tags", text_input="both", text_branch="shared"), data, info)
    assert shared.shared_text and shared.tags.vocab.tokens == shared.text.vocab.tokens
    ids, _ = shared({"tags": tf.ragged.constant([["dog"]]), "text": tf.constant(["a DOG!"])})
    assert ids["tag_ids"].numpy()[0, 0] == ids["text_ids"].numpy()[0, 1] > 1  # one id for the tag and the word
    model = build_head(Model(model="tags", text_input="both", text_branch="shared", embedding_dim=4, hidden_units=8), 5,
                       shared)
    assert "text_embedding" not in [layer.name for layer in model.layers]
    shared.save(tmp_path)
    assert not (tmp_path / "text_vocab.tsv").exists()
    loaded = ContextualPreprocessor.load(tmp_path)
    assert loaded.get_config() == shared.get_config() and loaded.text.limit == 6 and loaded.tags.limit == 10
    old = RunConfig().fingerprint()  # runs without text keep their fingerprints (and preprocessor.json)
    assert "text_input" not in old["model"] and "text_branch" not in old["model"] and "text_limit" not in old["data"]
    text_only = ContextualPreprocessor.for_run(Model(model="tags", text_input="text"), data, info)
    assert list(text_only.model_inputs()) == ["text_ids"] and text_only.record_keys() == ["text", "language"]


# === Every input, on a run exported or not ===
def _as_never_exported(run_dir, folder):
    """A copy of a run folder without its exports: predict scores it in process."""
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("serving"))
    return folder


@pytest.mark.parametrize("which", ["contextual_export", "captioned"])
def test_predict_takes_every_input_the_model_reads_whether_the_run_was_exported_or_not(which, request, tmp_path,
                                                                                      capsys):
    """Tags and image (contextual), tags, text and language (captions, Snowball): each input
    combination scores the same through the export and through the run folder that was never
    exported (which crashed on models reading text or a language, issue 32)."""
    import json

    from app.predict import main as predict_main

    run_dir = request.getfixturevalue(which)[1 if which == "captioned" else 0]
    export_dir = request.getfixturevalue(which)[1] if which == "contextual_export" else None
    (tmp_path / "a.jpg").write_bytes(jpeg(90))
    (tmp_path / "in.csv").write_text("image_path,tags,text\na.jpg,hund|strand,Zwei Hunde am Strand\na.jpg,,\n"
                                     ",hund,\n,,A dog on the beach\n", encoding="utf-8")
    outputs = []
    for model in (export_dir or run_dir / "serving" / "1", _as_never_exported(run_dir, tmp_path / "never")):
        predict_main(["--model", str(model), "--input", str(tmp_path / "in.csv"), "--no-progress"])
        outputs.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    exported, in_process = outputs
    assert len(in_process) == 4 and not any("error" in row for row in in_process)
    for a, b in zip(exported, in_process):
        assert [c["score"] for c in a["top_k"]] == pytest.approx([c["score"] for c in b["top_k"]], abs=1e-5)
    if which == "contextual_export":
        return  # (the single photo goes through the same predictor; loading the image model again is slow)
    predict_main(["--model", str(tmp_path / "never"), "--image", str(tmp_path / "a.jpg"), "--tags", "hund|strand",
                  "--text", "Zwei Hunde am Strand", "--no-progress"])
    single = json.loads(capsys.readouterr().out)
    assert [c["score"] for c in single["top_k"]] == pytest.approx([c["score"] for c in in_process[0]["top_k"]],
                                                                   abs=1e-5)


def test_export_lists_every_input_of_its_signatures(captioned, tmp_path, capsys):
    from app.export import main as export_main

    _, run_dir, _ = captioned
    export_main(["--model", str(run_dir), "--out", str(tmp_path / "serving"), "--no-progress"])
    assert ("  signatures: serving_default(tags [batch, None], image_bytes [batch], text [batch], language [batch]), "
            "serve_yfcc(tags [batch], image_bytes [batch], text [batch], language [batch])\n") in capsys.readouterr().out
