"""Requests for a model exported by `app/export.py` and served by TensorFlow Serving.

    from app.serving.client import Photo, grpc_request, rest_body

    photos = [Photo(["dog", "beach"], open("a.jpg", "rb").read()), Photo([], b"")]
    requests.post("http://localhost:8501/v1/models/contextual:predict", json=rest_body(photos))
    stub.Predict(grpc_request(photos, model_name="contextual"), 10.0)  # a PredictionServiceStub

TF Serving needs every input of a batch to have one shape, while photos have different numbers of
tags: `serving_default` takes `tags` as `[batch, None]`, padded with "" (the signature drops empty
tags), so `padded_tags` pads each photo's list to the batch's longest. `serve_yfcc` takes one
YFCC100M tag field (comma-separated, percent-encoded) per photo. Image bytes travel as
`{"b64": ...}` in JSON; "" (no bytes) scores the photo without its image. `embed` (exports of runs
with an embedding head) takes the inputs of `serving_default` and returns each photo's `embedding`. A model whose vocabulary
is normalised per language (`--tag-normalization snowball`) also needs each photo's `language`,
and a model that reads free text (`--text-input text|both`) each photo's `text` ("" for none).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Optional, Sequence

SIGNATURES = ("serving_default", "serve_yfcc", "embed")
LIST_TAGS = ("serving_default", "embed")  # signatures that take a padded tag list per photo


@dataclass
class Photo:
    """One photo to score.

    Args:
        tags: the user tags as written (`serving_default`), or one YFCC100M tag field (`serve_yfcc`).
        image: the encoded JPEG or PNG bytes, or b"" for none.
        language: the tags' language code, for models normalised per language.
        text: the photo's free text (a caption), for models that read text.
    """

    tags: Sequence[str] | str
    image: bytes = b""
    language: Optional[str] = None
    text: Optional[str] = None


def padded_tags(photos: Sequence[Photo]) -> list:
    """Each photo's tag list padded with "" to the longest (the `[batch, None]` shape of `serving_default`)."""
    width = max((len(p.tags) for p in photos), default=0)
    return [list(p.tags) + [""] * (width - len(p.tags)) for p in photos]


def _columns(photos: Sequence[Photo], signature: str) -> dict:
    """The signature's inputs as Python lists (image bytes as bytes), batch first."""
    if signature not in SIGNATURES:
        raise ValueError(f"signature must be one of {SIGNATURES}. Received: signature={signature!r}")
    if signature == "serve_yfcc" and not all(isinstance(p.tags, str) for p in photos):
        raise ValueError("serve_yfcc takes one YFCC100M tag field (a string) per photo")
    if signature in LIST_TAGS and any(isinstance(p.tags, str) for p in photos):
        raise ValueError(f"{signature} takes a list of tags per photo (serve_yfcc takes a tag field)")
    columns = {"tags": padded_tags(photos) if signature in LIST_TAGS else [p.tags for p in photos],
               "image_bytes": [p.image for p in photos]}
    if any(p.text is not None for p in photos):  # a photo without text has "" (the model reads none)
        columns["text"] = [p.text or "" for p in photos]
    languages = [p.language for p in photos]
    if any(language is not None for language in languages):
        if None in languages:
            raise ValueError("give every photo a language, or none")
        columns["language"] = languages
    return columns


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def rest_body(photos: Sequence[Photo], signature: str = "serving_default", columnar: bool = False) -> dict:
    """The JSON body of a REST `:predict` request.

    Args:
        photos: the batch.
        signature: `serving_default`, `serve_yfcc`, or `embed` (the photos' vectors in the text encoder's
            space; exports of runs with an embedding head).
        columnar: the columnar form (`"inputs"`: one list per input) instead of the row form
            (`"instances"`: one object per photo).

    Returns:
        A dict for `json.dumps`.
    """
    columns = _columns(photos, signature)
    columns["image_bytes"] = [_b64(image) for image in columns["image_bytes"]]
    if columnar:
        return {"signature_name": signature, "inputs": columns}
    return {"signature_name": signature,
            "instances": [{name: values[i] for name, values in columns.items()} for i in range(len(photos))]}


def grpc_request(photos: Sequence[Photo], model_name: str = "contextual", signature: str = "serving_default",
                 version: Optional[int] = None):
    """A gRPC `PredictRequest` (needs `tensorflow-serving-api`).

    Args:
        photos: the batch.
        model_name: the model's name in the server's model config.
        signature: `serving_default`, `serve_yfcc` or `embed`.
        version: a model version (default: the server's latest).

    Returns:
        A `tensorflow_serving.apis.predict_pb2.PredictRequest`.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for name, values in _columns(photos, signature).items():
        matrix = name == "tags" and signature in LIST_TAGS  # [batch, longest tag list]
        shape = [len(photos), len(values[0]) if photos else 0] if matrix else [len(photos)]
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string, shape=shape))
    return request


def model_config(models: dict) -> str:
    """A TF Serving `--model_config_file` (text protobuf) serving each `{name: base_path}`.

    `base_path` is the folder that holds the numbered versions (`app/export.py`'s `--out`), as the
    server's container sees it.
    """
    entries = "".join(f'  config {{\n    name: "{name}"\n    base_path: "{path}"\n    model_platform: "tensorflow"\n  }}\n'
                      for name, path in models.items())
    return f"model_config_list {{\n{entries}}}\n"
