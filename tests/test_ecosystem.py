"""The project's artifacts used by the TensorFlow ecosystem's own tools, each in a fresh process, as a
user would: Keras (`keras.saving.load_model` after `import app`), TensorBoard (`EventAccumulator`),
TF Serving (REST and gRPC requests answered by its documented rules). TFDS, KerasTuner and pip are
checked in test_tfds_builder.py, test_tuning.py and test_packaging.py."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from app.config import TrainConfig
from app.runs.trained import TrainedRun
from app.serving.client import Photo, grpc_request, model_config, padded_tags, rest_body
from app.training.callbacks import read_history
from photos import jpeg

ROOT = Path(__file__).resolve().parents[1]
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def python(code: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300) -> str:
    """Runs `code` in a fresh interpreter and returns its stdout (fails the test on a non-zero exit)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env or QUIET,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_keras_loads_the_model_after_import_app(contextual_export):
    run_dir, _ = contextual_export
    out = python(f"""
        import json, sys
        import app
        assert "tensorflow" not in sys.modules  # registering the layers does not import TensorFlow
        import keras, numpy as np
        model = keras.saving.load_model({str(run_dir / "model.keras")!r})
        inputs = {{name: np.zeros([2] + list(t.shape[1:]), t.dtype) for name, t in model.input.items()}}
        inputs["tag_ids"][0, :3] = [2, 3, 4]
        print(json.dumps(np.asarray(model(inputs)).tolist()))
        import tensorflow as tf  # docs/ecosystem.md: raw tags and image bytes through the run's preprocessor
        from app.model.preprocessor import ContextualPreprocessor
        preprocess = ContextualPreprocessor.load({str(run_dir)!r})
        raw, error = preprocess({{"tags": tf.ragged.constant([["dog", "beach"]]), "image": tf.constant([{jpeg(40)!r}])}})
        print(json.dumps([np.asarray(model(raw)).tolist(), error.numpy()[0].decode()]))
        """)
    import keras

    model = keras.saving.load_model(run_dir / "model.keras")
    inputs = {name: np.zeros([2] + list(t.shape[1:]), t.dtype) for name, t in model.input.items()}
    inputs["tag_ids"][0, :3] = [2, 3, 4]
    assert {"tag_ids", "image"} <= set(inputs)  # the custom image and tag layers are both in the model
    ids_scores, (raw_scores, error) = map(json.loads, out.splitlines()[-2:])
    np.testing.assert_allclose(ids_scores, np.asarray(model(inputs)), rtol=1e-5, atol=1e-6)
    assert error == "" and np.array(raw_scores).shape == (1, len(TrainedRun(run_dir).classes))


def test_tensorboard_reads_keras_layout_runs(contextual_export):
    run_dir, _ = contextual_export
    out = python(f"""
        import json
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.util.tensor_util import make_ndarray
        scalars = {{}}
        for run in ("train", "validation"):
            events = EventAccumulator({str(run_dir / "logs")!r} + "/" + run, size_guidance={{"tensors": 0}})
            events.Reload()
            scalars[run] = {{tag: [float(make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
                            for tag in events.Tags()["tensors"]}}
        print(json.dumps(scalars))
        """)
    scalars = json.loads(out)
    history = read_history(run_dir / "history.csv")
    assert {"epoch_loss", "epoch_map"} <= set(scalars["validation"])
    assert {"epoch_loss", "epoch_learning_rate", "epoch_examples_per_second"} <= set(scalars["train"])
    assert scalars["train"]["epoch_loss"] == pytest.approx([row["loss"] for row in history], rel=1e-6)
    assert scalars["validation"]["epoch_loss"] == pytest.approx([row["val_loss"] for row in history], rel=1e-6)
    assert scalars["validation"]["epoch_map"] == pytest.approx([row["val_map"] for row in history], rel=1e-6)
    assert scalars["train"]["epoch_learning_rate"] == pytest.approx([TrainConfig().learning_rate] * len(history))
    assert all(speed > 0 for speed in scalars["train"]["epoch_examples_per_second"])


def test_tf_serving_answers_the_clients_rest_and_grpc_requests(contextual_export, tmp_path):
    _, export_dir = contextual_export
    photos = [Photo(["dog", "Beach", "sea"], jpeg(30)), Photo([], jpeg(200)), Photo(["tree"], b"")]
    requests = tmp_path / "requests"
    requests.mkdir()
    (requests / "models.config").write_text(model_config({"contextual": str(export_dir.parent)}))
    (requests / "contextual.row.json").write_text(json.dumps(rest_body(photos)))
    (requests / "contextual.columnar.json").write_text(json.dumps(rest_body(photos, columnar=True)))
    yfcc = [Photo("dog,sea", jpeg(30)), Photo("", b"")]
    (requests / "contextual.yfcc.json").write_text(json.dumps(rest_body(yfcc, "serve_yfcc")))
    ragged = {"instances": [{"tags": ["dog", "sea"], "image_bytes": {"b64": ""}}, {"tags": ["tree"], "image_bytes": {"b64": ""}}]}
    (requests / "contextual.unpadded.json").write_text(json.dumps(ragged))  # why the client pads
    (requests / "grpc.pb").write_bytes(grpc_request(photos, "contextual").SerializeToString())
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "tf_serving_rules.py"), str(requests)], cwd=tmp_path,
                          env=QUIET, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = {p.name.split(".out")[0]: json.loads(p.read_text()) for p in requests.glob("*.out.json")}
    assert answers["contextual.unpadded"] == {"error": "input tags: the examples' values do not have one shape"}
    signatures = tf.saved_model.load(str(export_dir)).signatures
    expected = signatures["serving_default"](tags=tf.constant([["dog", "Beach", "sea"], ["", "", ""], ["tree", "", ""]]),
                                             image_bytes=tf.constant([p.image for p in photos]))
    for name in ("contextual.row", "contextual.columnar", "grpc"):
        outputs = answers[name]["outputs"]
        np.testing.assert_allclose(outputs["scores"], expected["scores"].numpy().ravel(), rtol=1e-5, atol=1e-6)
        assert outputs["top_k_mids"] == [m.decode() for m in expected["top_k_mids"].numpy().ravel()], name
        assert outputs["image_ok"] == [True, True, False], name
    expected_yfcc = signatures["serve_yfcc"](tags=tf.constant(["dog,sea", ""]), image_bytes=tf.constant([jpeg(30), b""]))
    np.testing.assert_allclose(answers["contextual.yfcc"]["outputs"]["scores"], expected_yfcc["scores"].numpy().ravel(),
                               rtol=1e-5, atol=1e-6)
    assert padded_tags([Photo(["a"]), Photo(["b", "c"])]) == [["a", ""], ["b", "c"]]


def test_client_bodies_carry_languages_and_refuse_mixed_input():
    photos = [Photo(["hund"], b"\xff\xd8", "de"), Photo([], b"", "un")]
    row = rest_body(photos)
    assert row["instances"][0] == {"tags": ["hund"], "image_bytes": {"b64": "/9g="}, "language": "de"}
    assert rest_body(photos, columnar=True)["inputs"]["language"] == ["de", "un"]
    assert rest_body(photos, columnar=True)["inputs"]["tags"] == [["hund"], [""]]
    request = grpc_request(photos, "m", version=3)
    assert request.model_spec.version.value == 3 and tf.make_ndarray(request.inputs["tags"]).shape == (2, 1)
    with pytest.raises(ValueError, match="every photo a language"):
        rest_body([Photo(["a"], b"", "en"), Photo(["b"])])
    with pytest.raises(ValueError, match="serve_yfcc takes one YFCC100M tag field"):
        rest_body([Photo(["a"])], "serve_yfcc")
    with pytest.raises(ValueError, match="serving_default takes a list"):
        grpc_request([Photo("a,b")])
