"""A stand-in for TensorFlow Serving's request handling, run as a fresh process by the tests:
`python tests/tf_serving_rules.py REQUESTS_DIR` (the model server itself cannot be installed here).

It reads the requests that the test wrote with `app.serving.client` and answers them the way TF
Serving does, by its documented rules, with TensorFlow and `tensorflow_serving.apis` only (no
project code):
  - `models.config` (the `--model_config_file`) is a `ModelServerConfig` text protobuf; each model's
    newest numbered folder under its `base_path` is served.
  - REST `*.json` (`POST /v1/models/NAME:predict`): `signature_name`, then either `instances` (row
    form: one object per example, each input's values stacked along a new batch dimension, which
    requires every example's value to have one shape) or `inputs` (columnar form: each input given
    whole, batch first). A `{"b64": ...}` object is binary data (base64).
  - gRPC `*.pb`: a serialised `PredictRequest`; each input is `tf.make_ndarray` of its TensorProto.
Each answer is written beside the request as `NAME.out.json`: `{"outputs": {...}}` or `{"error": ...}`.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2


def served_models(config_file: Path) -> dict:
    """`{name: loaded SavedModel}` of the newest version of each configured model."""
    config = text_format.Parse(config_file.read_text(), model_server_config_pb2.ModelServerConfig())
    models = {}
    for entry in config.model_config_list.config:
        assert entry.model_platform == "tensorflow", entry
        versions = [p for p in Path(entry.base_path).iterdir() if p.name.isdigit()]
        models[entry.name] = tf.saved_model.load(str(max(versions, key=lambda p: int(p.name))))
    return models


def json_value(value):
    """A JSON value with `{"b64": ...}` objects turned into bytes."""
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise ValueError(f"an object in a tensor value must be {{'b64': ...}}: {value}")
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [json_value(v) for v in value]
    return value


def rest_inputs(body: dict, specs: dict) -> dict:
    """The signature's input tensors from a REST predict body (row or columnar form)."""
    if ("instances" in body) == ("inputs" in body):
        raise ValueError("a predict body has exactly one of 'instances' and 'inputs'")
    if "inputs" in body:
        columns = body["inputs"]
    else:
        columns = {name: [row[name] for row in body["instances"]] for name in specs}
    tensors = {}
    for name, spec in specs.items():
        values = np.array(json_value(columns[name]), dtype=object if spec.dtype == tf.string else None)
        if values.dtype == object and values.ndim != spec.shape.rank:  # examples of different shapes
            raise ValueError(f"input {name}: the examples' values do not have one shape")
        tensors[name] = tf.constant(values.tolist() if values.size else [], dtype=spec.dtype, shape=values.shape)
    return tensors


def grpc_inputs(request: predict_pb2.PredictRequest) -> dict:
    return {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}


def answer(models: dict, path: Path) -> dict:
    """Runs one request file against the served models."""
    if path.suffix == ".pb":
        request = predict_pb2.PredictRequest.FromString(path.read_bytes())
        model, signature_name = models[request.model_spec.name], request.model_spec.signature_name
        inputs = grpc_inputs(request)
    else:
        body = json.loads(path.read_text())
        model_name, _ = path.stem.split(".", 1)  # NAME.anything.json: POST /v1/models/NAME:predict
        model, signature_name = models[model_name], body.get("signature_name", "serving_default")
        inputs = rest_inputs(body, model.signatures[signature_name].structured_input_signature[1])
    outputs = model.signatures[signature_name or "serving_default"](**inputs)
    return {name: [v.decode() if isinstance(v, bytes) else v for v in value.numpy().ravel().tolist()]
            for name, value in outputs.items()}


def main(folder: Path) -> None:
    models = served_models(folder / "models.config")
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*.pb")):
        if path.name.endswith(".out.json"):
            continue
        try:
            result = {"outputs": answer(models, path)}
        except (ValueError, tf.errors.InvalidArgumentError) as error:
            result = {"error": str(error).splitlines()[0]}
        path.with_name(path.name.rsplit(".", 1)[0] + ".out.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
