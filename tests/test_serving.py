import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from app import predict
from app.downloader.images import MAX_IMAGE_PIXELS
from app.model.preprocess import decode_images
from app.model.preprocessor import ContextualPreprocessor
from app.text.tags import OOV_ID, clean_tags
from app.runs.trained import TrainedRun
from app.serving.signatures import directory_size, export
from photos import jpeg, noisy_jpeg, png_bomb, png_with_bad_data, truncated

TRICKY = [
    ["dog", "hund", "2009"],
    ["Café", "caf\u00e9", "a,b", "%2C"],
    ["123", "456"],             # digits only: dropped
    ["zzzz-unknown", "qqq"],    # all unknown
    [],                         # no tags
    [f"tag{i}" for i in range(10000)],  # far over the limit
]


@pytest.fixture(scope="module")
def exported(contextual_export):
    return contextual_export


def test_export_layout_and_versioning(exported):
    run_dir, target = exported
    assert target == run_dir / "serving" / "1" and (target / "saved_model.pb").exists()
    again = export(run_dir)
    assert again.name == "2"
    shutil.rmtree(again)
    weights = sum(w.numpy().nbytes for w in TrainedRun(run_dir).model.weights)
    assert directory_size(target) < 1.5 * weights  # each variable stored once, not twice
    inputs = ContextualPreprocessor.load(target / "assets.extra")  # the inputs, with the vocabulary they name
    assert inputs.get_config() == TrainedRun(run_dir).preprocessor.get_config()
    assert inputs.tags.vocab == TrainedRun(run_dir).preprocessor.tags.vocab


def test_signature_matches_the_python_model(exported):
    run_dir, target = exported
    run = TrainedRun(run_dir)
    loaded = tf.saved_model.load(str(target))
    images = [jpeg(40 * i) for i in range(len(TRICKY))]
    width = max(len(t) for t in TRICKY)
    padded = tf.constant([t + [""] * (width - len(t)) for t in TRICKY])
    out = loaded.signatures["serving_default"](tags=padded, image_bytes=tf.constant(images))
    # the reference: Python tag cleaning and vocabulary, the training pipeline's image decoding
    index = {t: i + 2 for i, t in enumerate(run.preprocessor.tags.vocab.tokens)}
    rows = [[index.get(t, OOV_ID) for t in clean_tags(tags)][:10] for tags in TRICKY]  # Python cleaning, limit 10
    ids = np.array([row + [0] * (10 - len(row)) for row in rows], "int32")
    pixels, _ = decode_images(tf.constant(images), 32)
    reference = np.asarray(run.model({"tag_ids": tf.constant(ids), "image": pixels}, training=False))
    np.testing.assert_allclose(out["scores"].numpy(), reference, rtol=0, atol=1e-5)
    assert out["top_k_mids"].shape == (len(TRICKY), 5)
    top = np.argsort(-reference, axis=1)[:, 0]
    mids = [line.split(",")[0] for line in (run_dir / "classes.csv").read_text().splitlines()]
    assert [m.decode() for m in out["top_k_mids"].numpy()[:, 0]] == [mids[i] for i in top]


def test_yfcc_signature_equals_default_on_encoded_tags(exported):
    _, target = exported
    loaded = tf.saved_model.load(str(target))
    image = tf.constant([jpeg(90)])
    a = loaded.signatures["serve_yfcc"](tags=tf.constant(["dog,caf%C3%A9,a%2Cb,new+york,2009"]), image_bytes=image)
    b = loaded.signatures["serving_default"](tags=tf.constant([["dog", "café", "a,b", "new york", "2009"]]),
                                             image_bytes=image)
    np.testing.assert_allclose(a["scores"].numpy(), b["scores"].numpy(), atol=1e-6)


def test_signature_removes_invisible_characters_as_prepare_does(exported):
    _, target = exported
    serve = tf.saved_model.load(str(target)).signatures["serving_default"]
    image = tf.constant([jpeg(90), jpeg(90)])
    plain = serve(tags=tf.constant([["dog", "hund"], ["cat", ""]]), image_bytes=image)["scores"].numpy()
    hidden = serve(tags=tf.constant([["d\u200bog\u00ad", "\u2066hund\u2069 "], ["\ufeffcat", "\u200b\u202e"]]),
                   image_bytes=image)["scores"].numpy()
    np.testing.assert_allclose(hidden, plain, atol=1e-6)
    assert run_vocab_has(target, "dog")


def run_vocab_has(target, tag: str) -> bool:
    """Whether the run's vocabulary holds `tag` (else the comparison above would prove nothing)."""
    return tag in (target.parent.parent / "vocab.tsv").read_text(encoding="utf-8").split()


def test_bad_photos_do_not_fail_the_batch(exported):
    _, target = exported
    serve = tf.saved_model.load(str(target)).signatures["serving_default"]
    images = [jpeg(10), truncated(noisy_jpeg(1)), png_with_bad_data(), b"\xff\xd8\xffgarbage",
              png_bomb(20000), b"GIF89a...", b"", jpeg(200)]
    tags = tf.constant([["dog"]] * len(images))
    out = serve(tags=tags, image_bytes=tf.constant(images))
    assert out["image_ok"].numpy().tolist() == [True] + [False] * 6 + [True]
    errors = [e.decode() for e in out["image_error"].numpy()]
    assert errors[0] == errors[7] == "" and errors[6] == "no image bytes"
    assert errors[1] == errors[3] == "corrupt or truncated JPEG data" and errors[2] == "corrupt or truncated PNG data"
    assert errors[4].startswith("declares 20000x20000 pixels")
    assert errors[5] == "not a JPEG or PNG: starts with 0x4749463839612e2e"  # "GIF89a.."
    alone = serve(tags=tags[:2], image_bytes=tf.constant([jpeg(10), jpeg(200)]))["scores"].numpy()
    black = serve(tags=tags[:1], image_bytes=tf.constant([b""]))["scores"].numpy()
    scores = out["scores"].numpy()
    # float32 sums run in another order at another batch size (AVX-512 kernels): 1e-5, as parity elsewhere
    np.testing.assert_allclose(scores[[0, 7]], alone, atol=1e-5)  # the good photos score as they do alone
    np.testing.assert_allclose(scores[1:7], np.repeat(black, 6, axis=0), atol=1e-5)  # the bad ones as if black


def test_any_batch_shape_and_empty_tags(exported):
    _, target = exported
    loaded = tf.saved_model.load(str(target))
    yfcc, default = loaded.signatures["serve_yfcc"], loaded.signatures["serving_default"]
    untagged = default(tags=tf.zeros([1, 0], tf.string), image_bytes=tf.constant([jpeg(90)]))["scores"].numpy()
    for fields in ([""], [",,"], ["123"]):  # a lone untagged photo, as YFCC100M writes it
        out = yfcc(tags=tf.constant(fields), image_bytes=tf.constant([jpeg(90)]))
        np.testing.assert_allclose(out["scores"].numpy(), untagged, atol=1e-5)  # other batch sizes: see above
    for tags in ([[""], [""]], [["", ""], ["", ""]]):
        out = default(tags=tf.constant(tags), image_bytes=tf.constant([jpeg(90), jpeg(90)]))
        np.testing.assert_allclose(out["scores"].numpy(), np.repeat(untagged, 2, axis=0), atol=1e-5)
    one_tag = yfcc(tags=tf.constant(["a"]), image_bytes=tf.constant([b""]))
    assert one_tag["scores"].shape[0] == 1 and not one_tag["image_ok"].numpy()[0]
    for out in (yfcc(tags=tf.constant([], tf.string), image_bytes=tf.constant([], tf.string)),
                default(tags=tf.zeros([0, 0], tf.string), image_bytes=tf.constant([], tf.string))):
        assert out["scores"].shape == (0, untagged.shape[1]) and out["top_k_names"].shape == (0, 5)
        assert out["image_ok"].shape == (0,) and out["image_error"].shape == (0,)


def test_mismatched_batch_sizes_fail_the_request_clearly(exported):
    _, target = exported
    loaded = tf.saved_model.load(str(target))
    with pytest.raises(tf.errors.InvalidArgumentError, match="tags has 2 rows but image_bytes has 3"):
        loaded.signatures["serving_default"](tags=tf.constant([["dog"], ["cat"]]), image_bytes=tf.constant([b""] * 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="tags has 1 rows but image_bytes has 0"):
        loaded.signatures["serve_yfcc"](tags=tf.constant(["dog"]), image_bytes=tf.constant([], tf.string))


def test_saved_model_cli_show_and_run(exported):
    _, target = exported
    cli = shutil.which("saved_model_cli") or "saved_model_cli"
    show = subprocess.run([cli, "show", "--dir", str(target), "--all"], capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr[-1000:]
    assert "signature_def['serving_default']" in show.stdout and "signature_def['serve_yfcc']" in show.stdout
    # the TF1-style loader (as TF Serving's), with a good, a truncated and a garbage photo and untagged rows
    images = [jpeg(120), truncated(noisy_jpeg(5)), b"\xff\xd8\xffgarbage"]
    literal = ", ".join("b'" + "".join(f"\\x{c:02x}" for c in data) + "'" for data in images)
    run = subprocess.run([cli, "run", "--dir", str(target), "--tag_set", "serve", "--signature_def", "serve_yfcc",
                          "--input_exprs", f"tags=['dog,hund', '', 'a'];image_bytes=[{literal}]"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-1000:]
    assert "top_k_names" in run.stdout
    assert "Result for output key image_ok:\n[ True False False]" in run.stdout, run.stdout[-2000:]


def test_a_killed_predict_leaves_no_half_output_file(exported, tmp_path):
    import time

    _, target = exported
    (tmp_path / "in.csv").write_text("image_path,tags\n" + ",dog\n" * 20000)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "app/predict.py", "--model", str(target), "--input",
                             str(tmp_path / "in.csv"), "--output", str(out), "--batch-size", "1", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not any(p.stat().st_size for p in tmp_path.glob(".out.*")) and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "predict ended before it could be killed"
    finally:
        proc.kill()
        proc.wait()
    written = [p.name for p in tmp_path.glob(".out.*") if p.stat().st_size]
    assert written and not out.exists()  # the rows so far went to a hidden temporary name, never to out.jsonl


def test_predict_cli_single_and_streaming_batch(exported, tmp_path):
    run_dir, target = exported
    (tmp_path / "a.jpg").write_bytes(jpeg(120))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "in.csv").write_text('image_path,tags\na.jpg,"dog,hund,2009"\nb.jpg,\nmissing.jpg,cat\n')
    done = subprocess.run([sys.executable, "app/predict.py", "--model", str(target), "--input", str(tmp_path / "in.csv"),
                           "--output", str(tmp_path / "out.jsonl"), "--batch-size", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["image_path"] for r in rows] == ["a.jpg", "b.jpg", "missing.jpg"]
    assert rows[0]["tags"] == ["dog", "hund", "2009"] and len(rows[0]["top_k"]) == 5
    assert [r["image_ok"] for r in rows] == [True, False, False] and "error" in rows[1] and "error" in rows[2]
    run = TrainedRun(run_dir)
    threshold = {mid: t for (mid, _), t in zip(run.classes, run.thresholds)}
    from app.sources.hierarchy import Hierarchy

    ancestors = Hierarchy.from_json(run_dir / "hierarchy.json", list(threshold)).ancestors
    for row in rows:
        shown = [c["mid"] for c in row["classes"]]
        assert all(c["score"] >= threshold[c["mid"]] - 1e-6 for c in row["classes"])  # confident only
        assert not any(a in ancestors[b] for a in shown for b in shown)  # parents are implied, not listed
        assert row["needs_review"] or shown  # nothing confident always needs review
    single = subprocess.run([sys.executable, "app/predict.py", "--model", str(run_dir), "--image",
                             str(tmp_path / "a.jpg"), "--tags", "dog,hund"], capture_output=True, text=True, timeout=180)
    assert single.returncode == 0, single.stderr[-2000:]
    assert json.loads(single.stdout)["top_k"][0]["mid"].startswith("/m/")


def test_predict_reads_bom_crlf_and_manifest_style_tags_and_writes_each_rows_image_id(exported, tmp_path):
    run_dir, target = exported
    (tmp_path / "a.jpg").write_bytes(jpeg(120))
    (tmp_path / "in.csv").write_bytes(  # a byte-order mark and CRLF (was: "expected a header", exit 2)
        b'\xef\xbb\xbfimage_id,image_path,tags\r\nfirst,a.jpg,dog|hund\r\nsecond,a.jpg,"dog,hund"\r\n')
    done = subprocess.run([sys.executable, "app/predict.py", "--model", str(target), "--input", str(tmp_path / "in.csv"),
                           "--output", str(tmp_path / "out.jsonl"), "--no-progress"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in rows] == ["first", "second"]  # two rows of one image told apart
    assert rows[0]["tags"] == rows[1]["tags"] == ["dog", "hund"]  # a|b as a manifest's tags: not one unknown tag
    assert rows[0]["top_k"] == rows[1]["top_k"]


def test_predict_keeps_every_csv_row_and_says_what_is_wrong(exported, tmp_path):
    _, target = exported
    (tmp_path / "a.jpg").write_bytes(jpeg(120))
    (tmp_path / "cut.jpg").write_bytes(truncated(noisy_jpeg(7)))
    (tmp_path / "bomb.png").write_bytes(png_bomb(20000))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    lines = [b"image_path,tags", b'a.jpg,"dog,hund"', b"cut.jpg,dog", b"bomb.png,dog", b",dog", b"folder,dog",
             b"/dev/zero,dog", b"empty.jpg,dog", b"a.jpg,caf\xe9", b'a.jpg,"' + b"x" * 200_000 + b'"', b"a.jpg,cat"]
    (tmp_path / "in.csv").write_bytes(b"\n".join(lines) + b"\n")
    done = subprocess.run([sys.executable, "app/predict.py", "--model", str(target), "--input",
                           str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.jsonl"), "--batch-size", "3",
                           "--no-progress"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "predicted 10 photos, 7 with an error" in done.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    where = str(tmp_path / "in.csv")
    assert [r.get("error", "").replace(where, "in.csv") for r in rows] == [
        "",
        "in.csv:3: image cut.jpg not used (corrupt or truncated JPEG data): scored without an image",
        f"in.csv:4: image bomb.png not used (declares 20000x20000 pixels, over the limit of {MAX_IMAGE_PIXELS} "
        "(MAX_IMAGE_PIXELS)): scored without an image",
        "",
        f"in.csv:6: cannot read image folder (as {tmp_path / 'folder'}): not a regular file",  # relative to in.csv
        "in.csv:7: cannot read image /dev/zero: not a regular file",
        "in.csv:8: image empty.jpg not used (no image bytes): scored without an image",
        "in.csv:9: tag 1 is not UTF-8: byte 0xe9 at character 4",
        "in.csv:10: not valid CSV: field larger than field limit (131072)",
        ""]
    assert rows[3]["note"] == "no image given: scored without an image" and rows[3]["image_path"] == ""
    assert [len(r["top_k"]) for r in rows] == [5] * 7 + [0, 0, 5]
    assert rows[7]["tags"] == "caf\udce9" and rows[8]["image_path"] is None  # echoed as given; unknown
    assert [r["image_ok"] for r in rows] == [True] + [False] * 8 + [True]


def test_predict_csv_rows_with_more_fields_are_errors_and_an_unclosed_quote_stops(exported, tmp_path, capsys):
    _, target = exported
    (tmp_path / "a.jpg").write_bytes(jpeg(120))
    (tmp_path / "in.csv").write_text("image_path,tags\na.jpg,dog\na.jpg,dog,hund\na.jpg,cat\n")
    predict.main(["--model", str(target), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    where = str(tmp_path / "in.csv")
    assert [r.get("error", "").replace(where, "in.csv") for r in rows] == [  # "hund" was dropped silently
        "", "in.csv:3: 3 fields, the header names 2 (quote a value that holds a comma)", ""]
    (tmp_path / "q.csv").write_text('image_path,tags\na.jpg,dog\na.jpg,"dog,x\na.jpg,cat\n')  # swallowed a row
    with pytest.raises(SystemExit) as stop:
        predict.main(["--model", str(target), "--input", str(tmp_path / "q.csv"), "--output", str(tmp_path / "q.jsonl")])
    assert stop.value.code == 2 and not (tmp_path / "q.jsonl").exists()
    assert capsys.readouterr().err.strip().endswith(f"{tmp_path / 'q.csv'}:3: not valid CSV: a quoted field opened "
                                                    f"here is never closed")


def test_predict_jsonl_rows_with_bad_values_get_their_own_error(exported, tmp_path):
    _, target = exported
    (tmp_path / "a.jpg").write_bytes(jpeg(120))
    lines = ['{"image_path": "a.jpg", "tags": ["dog", "hund"]}', '{"image_path": "a.jpg", "tags": 5}',
             '{"image_path": "a.jpg", "tags": ["dog", 1]}', "not json", "[1, 2]", '{"image_path": "a.jpg"}',
             '{"image_path": 5, "tags": "dog"}', '{"image_path": "", "tags": null}', "",
             '{"image_path": "a.jpg", "tags": ["ok", "\\ud800"]}', '{"image_path": "a.jpg", "tags": "dog,cat"}',
             '{"image_path": "a.jpg", "tags": "dog", "tags": "cat"}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    predict.main(["--model", str(target), "--input", str(tmp_path / "in.jsonl"), "--output",
                  str(tmp_path / "out.jsonl"), "--no-progress"])
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    where = str(tmp_path / "in.jsonl")
    assert [r.get("error", "").replace(where, "in.jsonl") for r in rows] == [
        "",
        "in.jsonl:2: tags must be a comma-separated string or a list of strings, got int 5",
        "in.jsonl:3: tags must be a list of strings, got int 1 at position 1",
        "in.jsonl:4: not JSON: Expecting value (column 1)",
        "in.jsonl:5: expected a JSON object, got list [1, 2]",
        "in.jsonl:6: expected keys ['image_path', 'tags'], got ['image_path']",
        "in.jsonl:7: image_path must be a string, got int 5",
        "",
        "in.jsonl:10: tag 2 is not valid Unicode: lone surrogate U+D800 at character 1",
        "",
        "in.jsonl:12: not one JSON object: key 'tags' given twice"]  # json.loads would keep "cat" silently
    assert [len(r["top_k"]) for r in rows] == [5] + [0] * 6 + [5, 0, 5, 0]
    assert all(r["classes"] == [] and r["needs_review"] for r in rows if not r["top_k"])  # not scored
    assert rows[1]["tags"] == 5 and rows[6]["image_path"] == 5 and rows[7]["tags"] == []
    assert rows[8]["tags"] == ["ok", "\ud800"] and rows[9]["tags"] == ["dog", "cat"]


def test_predict_says_which_keys_and_columns_it_did_not_read(exported, tmp_path):
    """A misspelt `Caption` or an extra `url` column is scored without them, and the row says so."""
    _, target = exported
    (tmp_path / "in.jsonl").write_text('{"image_path": "", "tags": "dog", "Caption": "a dog"}\n'
                                       '{"image_path": "", "tags": "dog", "text": "a dog"}\n'
                                       '{"image_path": "", "Tags": "dog"}\n'
                                       '{"image_path": "", "tags": "dog", "\\uff54\\uff45\\uff58\\uff54": "a dog"}\n'
                                       '{"image_path": "", "tags": "dog", "image_id": "x\\ud800"}\n'
                                       '{"image_path": "", "tags": "dog", ' + ", ".join(f'"k{i}": 1' for i in range(30))
                                       + '}\n')
    (tmp_path / "in.csv").write_text("image_path,tags,url\n,dog,http://127.0.0.1:9/1.jpg\n")
    for name in ("in.jsonl", "in.csv"):
        predict.main(["--model", str(target), "--input", str(tmp_path / name), "--output", str(tmp_path / "out.jsonl"),
                      "--no-progress"])
        rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        unread = [[w for w in r.get("warnings", []) if w.startswith("not read")] for r in rows]
        known = "not read (the inputs are image_path, tags, image_id, text, caption): "
        if name == "in.csv":
            assert unread == [[known + "'url'"]] and rows[0]["top_k"]  # scored all the same
            continue
        many = known + ", ".join(f"'k{i}'" for i in range(10)) + " and 20 more"  # not 30 names on every row
        assert unread == [[known + "'Caption' (did you mean 'caption'?)"], [], [],
                          [known + "'\uff54\uff45\uff58\uff54' (did you mean 'text'?)"], [], [many]]
        assert [bool(r["top_k"]) for r in rows] == [True, True, False, True, False, True]
        assert rows[2]["error"].endswith("expected keys ['image_path', 'tags'], got ['Tags', 'image_path'] "
                                         "('Tags' may be 'tags')")
        assert rows[4]["error"].endswith(":5: image_id is not valid Unicode: lone surrogate U+D800 at character 2")


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "argument --batch-size: expected a whole number of at least 1, got '0'"),
    (["--review-margin", "nan"], "argument --review-margin: expected a finite number of at least 0.0, got 'nan'"),
    (["--input", "{tmp}/missing.csv", "--tags", "dog"], "--tags: for one photo; a batch (--input) gives each "
                                                        "photo's in its rows"),
    (["--review-margin", "-1"], "argument --review-margin: expected a finite number of at least 0.0, got '-1'"),
    (["--input", "{tmp}/no-tags.csv"], "error: {tmp}/no-tags.csv:1: expected a header with image_path,tags; "
                                       "got ['image_path']"),
    (["--input", "{tmp}/missing.csv"], "error: {tmp}/missing.csv: No such file or directory"),
    (["--input", "{tmp}/TAGS.csv"], "error: {tmp}/TAGS.csv:1: expected a header with image_path,tags; got "
                                    "['image_path', 'TAGS'] ('TAGS' may be 'tags')"),
    (["--input", "{tmp}/huge-header.csv"], "error: {tmp}/huge-header.csv:1: not a valid CSV header: field larger "
                                           "than field limit"),
    (["--model", "{tmp}/no-model", "--input", "{tmp}/no-tags.csv"], "error: {tmp}/no-model: no such model folder"),
])
def test_predict_whole_input_problems_stop_with_one_line(exported, tmp_path, capsys, args, message):
    _, target = exported
    (tmp_path / "no-tags.csv").write_text("image_path\na.jpg\n")
    (tmp_path / "TAGS.csv").write_text("image_path,TAGS\na.jpg,dog\n")
    (tmp_path / "huge-header.csv").write_text("image_path,tags," + "x" * 200_000 + "\na.jpg,dog,1\n")
    flags = {"--model": str(target), "--input": str(tmp_path / "in.csv"), "--output": str(tmp_path / "out.jsonl")}
    given = [a.format(tmp=tmp_path) for a in args]
    flags.update(zip(given[::2], given[1::2]))  # a flag given twice is refused
    argv = [item for flag in flags.items() for item in flag]
    with pytest.raises(SystemExit) as stop:
        predict.main(argv)
    said = stop.value.code if isinstance(stop.value.code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert said.startswith(message.format(tmp=tmp_path)) or said.endswith(message.format(tmp=tmp_path)), said
    assert not (tmp_path / "out.jsonl").exists()


def test_most_specific_confident_classes_by_hand():
    from app.serving.specific import specific_classes

    # classes: 0 Animal, 1 Dog (under Animal), 2 Cat (under Animal), 3 Car
    ancestors = np.zeros((4, 4), np.float32)
    ancestors[1, 0] = ancestors[2, 0] = 1.0
    thresholds = tf.constant([0.5, 0.4, 0.6, 0.5])
    scores = tf.constant([[0.9, 0.8, 0.1, 0.7],     # Dog and Car; Animal is implied by Dog
                          [0.9, 0.2, 0.3, 0.1],     # only Animal is confident: it is shown
                          [0.1, 0.1, 0.1, 0.1],     # nothing confident: review
                          [0.9, 0.42, 0.1, 0.1]])   # Dog just over its threshold: review
    out = specific_classes(scores, thresholds, tf.constant(ancestors), k=2, margin=0.05)
    assert out["indices"].numpy().tolist() == [[1, 3], [0, -1], [-1, -1], [1, -1]]
    assert out["count"].numpy().tolist() == [2, 1, 0, 1]
    assert out["needs_review"].numpy().tolist() == [False, False, True, True]
    rare = specific_classes(tf.constant([[6.6e-5, 0.9], [0.0011, 0.9], [0.5, 0.9]]), tf.constant([0.0012, 0.5]),
                            tf.zeros((2, 2)), k=1, margin=0.05)  # a tuned threshold far under 0.5
    assert rare["needs_review"].numpy().tolist() == [False, True, False]  # 18x under it is no borderline case
    assert rare["review_indices"].numpy().tolist() == [[-1], [0], [-1]]
    floor = specific_classes(tf.constant([[0.0, 0.9], [1e-9, 0.9], [1.0, 0.9]]), tf.constant([0.0, 0.5]),
                             tf.zeros((2, 2)), k=1, margin=0.05)  # a threshold of 0: the class is always confident
    assert floor["needs_review"].numpy().tolist() == [False, False, False]


def test_predict_oid_csv_then_evaluate_scores_like_run_mode(exported, tiny_world, tmp_path):
    """The scoring loop: predict writes Open Images predictions, evaluate's CSV mode scores them."""
    from urllib.parse import unquote_plus

    from app.evaluation.run_mode import evaluate_run

    sources, data_dir = tiny_world
    run_dir, target = exported
    truth = [json.loads(line) for line in (sources.images.parent / "truth.jsonl").read_text().splitlines()]
    with open(tmp_path / "test.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "image_path", "tags"])
        for t in truth:
            if t["split"] == "test":
                writer.writerow([t["image_id"], str(sources.images / f"{t['image_id']}.jpg"),
                                 ",".join(unquote_plus(tag) for tag in t["tags"])])
    done = subprocess.run([sys.executable, "app/predict.py", "--model", str(target), "--input", str(tmp_path / "test.csv"),
                           "--format", "oid-csv", "--min-score", "0", "--output", str(tmp_path / "p.csv"),
                           "--no-progress"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    scored = subprocess.run([sys.executable, "app/evaluate.py", "--predictions", str(tmp_path / "p.csv"), "--labels",
                             str(sources.oid.human_labels["test"]), "--hierarchy", str(run_dir / "hierarchy.json"),
                             "--json"], capture_output=True, text=True, timeout=180)
    assert scored.returncode == 0, scored.stderr[-2000:]
    in_run_mode = evaluate_run(run_dir, data_dir, "test").summary["run"]["map"]
    assert json.loads(scored.stdout)["map"] == pytest.approx(in_run_mode, abs=2e-3)
