import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from app.data.preprocess import decode_images
from app.data.tags import OOV_ID, clean_tags
from app.evaluation.scoring import TrainedModel
from app.serving.signatures import directory_size, export
from app.training.run import RunOptions, train

TRICKY = [
    ["dog", "hund", "2009"],
    ["Café", "caf\u00e9", "a,b", "%2C"],
    ["123", "456"],             # digits only: dropped
    ["zzzz-unknown", "qqq"],    # all unknown
    [],                         # no tags
    [f"tag{i}" for i in range(10000)],  # far over the limit
]


@pytest.fixture(scope="module")
def exported(tiny_world, tmp_path_factory):
    _, data_dir = tiny_world
    root = tmp_path_factory.mktemp("serving")
    config = RunConfig(data=DataConfig(tag_limit=10, tag_threshold=2),
                       model=ModelConfig(model="contextual", embedding_dim=16, hidden_units=32, image_size=32),
                       train=TrainConfig(epochs=1, batch_size=32))
    train(data_dir, root / "run", config, RunOptions(progress=False))
    return root / "run", export(root / "run")


def jpeg(value: int, size=40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_export_layout_and_versioning(exported):
    run_dir, target = exported
    assert target == run_dir / "serving" / "1" and (target / "saved_model.pb").exists()
    again = export(run_dir)
    assert again.name == "2"
    shutil.rmtree(again)
    weights = sum(w.numpy().nbytes for w in TrainedModel(run_dir).model.weights)
    assert directory_size(target) < 1.5 * weights  # each variable stored once, not twice


def test_signature_matches_the_python_model(exported):
    run_dir, target = exported
    run = TrainedModel(run_dir)
    loaded = tf.saved_model.load(str(target))
    images = [jpeg(40 * i) for i in range(len(TRICKY))]
    width = max(len(t) for t in TRICKY)
    padded = tf.constant([t + [""] * (width - len(t)) for t in TRICKY])
    out = loaded.signatures["serving_default"](tags=padded, image_bytes=tf.constant(images))
    # the reference: Python tag cleaning and vocabulary, the training pipeline's image decoding
    index = {t: i + 2 for i, t in enumerate(run.tags.vocab.tokens)}
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


def test_bad_image_bytes_fall_back_per_example(exported):
    _, target = exported
    out = tf.saved_model.load(str(target)).signatures["serving_default"](
        tags=tf.constant([["dog"], ["dog"], ["dog"]]), image_bytes=tf.constant([jpeg(10), b"garbage", b""]))
    assert out["image_ok"].numpy().tolist() == [True, False, False]
    assert np.all(np.isfinite(out["scores"].numpy()))


def test_saved_model_cli_show_and_run(exported):
    _, target = exported
    cli = shutil.which("saved_model_cli") or "saved_model_cli"
    show = subprocess.run([cli, "show", "--dir", str(target), "--all"], capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr[-1000:]
    assert "signature_def['serving_default']" in show.stdout and "signature_def['serve_yfcc']" in show.stdout
    run = subprocess.run([cli, "run", "--dir", str(target), "--tag_set", "serve", "--signature_def", "serve_yfcc",
                          "--input_exprs", "tags=['dog,hund'];image_bytes=['']"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-1000:]
    assert "top_k_names" in run.stdout


def test_predict_cli_single_and_streaming_batch(exported, tmp_path):
    run_dir, target = exported
    (tmp_path / "a.jpg").write_bytes(jpeg(120))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "in.csv").write_text('image_path,tags\na.jpg,"dog,hund,2009"\nb.jpg,\nmissing.jpg,cat\n')
    done = subprocess.run([sys.executable, "app/predict.py", "--model", str(target), "--input", str(tmp_path / "in.csv"),
                           "--output", str(tmp_path / "out.jsonl"), "--batch-size", "2", "--review-below", "0.99",
                           "--no-progress"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["image_path"] for r in rows] == ["a.jpg", "b.jpg", "missing.jpg"]
    assert rows[0]["tags"] == ["dog", "hund", "2009"] and len(rows[0]["top_k"]) == 5
    assert [r["image_ok"] for r in rows] == [True, False, False] and "error" in rows[2]
    assert all(r["needs_review"] for r in rows)  # nothing scores 0.99 after one epoch
    single = subprocess.run([sys.executable, "app/predict.py", "--model", str(run_dir), "--image",
                             str(tmp_path / "a.jpg"), "--tags", "dog,hund"], capture_output=True, text=True, timeout=180)
    assert single.returncode == 0, single.stderr[-2000:]
    assert json.loads(single.stdout)["top_k"][0]["mid"].startswith("/m/")
