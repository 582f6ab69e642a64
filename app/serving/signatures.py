"""A SavedModel for TensorFlow Serving: raw tags and image bytes in, scores and top-k out.

All preprocessing is in the graph and is the run's own `ContextualPreprocessor`
(`app.model.preprocessor`), the object the tf.data pipeline used in training: tag cleaning, the tag
limit, padding, vocabulary lookup, image decoding and resizing, image presence; ResNet
preprocessing is inside the Keras model itself.

Signatures:
    serving_default(tags: string [batch, None], image_bytes: string [batch][, text: string [batch]]
                    [, language: string [batch]])
        Tags as users write them, padded with "" to a common length (empty tags are dropped).
    serve_yfcc(tags: string [batch], image_bytes: string [batch][, text][, language])
        One comma-separated, percent-encoded YFCC100M tag field per photo.
`text: string [batch]` (each photo's free text, such as a caption; "" for none) is an input only of
models that read text (`--text-input text|both`), before `language`.
`language` (each photo's tag language, as `app.text.language.detect_language` gives it on the
cleaned tags: `en`, `de`, ..., `un`) is an input only of models whose vocabulary is normalised per
language (`--tag-normalization snowball`, see `app.text.stemming`).
Outputs (`*_mids` are the class ids: Open Images MIDs, or a collection's own ids; the names are
kept from Open Images): scores [batch, classes]; top_k_scores, top_k_mids, top_k_names [batch, k]
(the k highest scores); classes_mids, classes_names, classes_scores [batch, k] (the most specific
confident classes, parents implied, padded with "" and 0; see app/serving/specific.py),
classes_count and needs_review [batch]; review_mids, review_names, review_scores,
review_thresholds [batch, k]: the classes whose score lies within the review margin of their
threshold, closest first (padded with "" and 0; none when needs_review comes from no confident
class alone); unknown_tags [batch, None]: the cleaned tags the model cannot use (out of its
vocabulary, or every tag for a model that reads none), padded with "";
image_ok [batch] and image_error [batch]: "" where the photo was decoded, else
why not (no bytes, not JPEG/PNG, over `MAX_IMAGE_PIXELS`, corrupt or truncated); such a photo is
scored without its image: with the model's `image_present` input at 0 (models trained with
`--image-presence`), or else as if it had a black image; the rest of the batch as usual. Tags and
image_bytes with different batch sizes fail the request. A tags-only model reads no image: image_ok
is False only where the bytes are empty.
    embed(the inputs of serving_default), only for runs with an embedding head (`train.py --embedding-head`)
        Outputs: embedding [batch, dim] (unit rows in the text encoder's space: score any class name,
        tag or query by its cosine), image_ok, image_error. assets.extra/embedding.json names the
        encoder and the calibration `sigmoid(scale * cosine + bias)` of class scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import tensorflow as tf

from app.sources.hierarchy import Hierarchy
from app.model.preprocess import clean_tags, split_yfcc_tags
from app.model.preprocessor import PREPROCESSOR, SERVING_TAGS, SERVING_YFCC_TAGS
from app.fileio import atomic_output, atomic_write_json
from app.runs.embedding_head import EmbeddingHead, has_embedding_head
from app.runs.rundir import RunDir
from app.runs.trained import TrainedRun
from app.model.word_vectors import NEIGHBOURS
from app.serving.extend import extend_run
from app.serving.specific import ancestor_matrix, at_indices, specific_classes

CLASSES_ASSET = "assets.extra/classes.csv"  # the output classes, beside the SavedModel (TF Serving ignores it)
EXTENSION_ASSET = "assets.extra/extended_vocabulary.json"  # words added after training (export --extend-vocabulary)
INPUTS_ASSET = f"assets.extra/{PREPROCESSOR}"  # the model's inputs (`ContextualPreprocessor.get_config`)
EMBEDDING_ASSET = "assets.extra/embedding.json"  # the embed signature's encoder and calibration


class _Untracked:
    """Holds the Keras model outside the SavedModel's object graph (see ServingModule)."""

    def __init__(self, model):
        self.model = model


class ServingModule(tf.Module):
    """The exported graph around a trained run's Keras model.

    Args:
        run: the trained model.
        top_k: how many top (and how many specific) classes to return.
        review_margin: a class score this close to its threshold makes the photo need review.
    """

    def __init__(self, run: TrainedRun, top_k: int = 5, review_margin: float = 0.05):
        super().__init__(name="contextual_classifier")
        # The SavedModel tracks the model's tf.Variables directly, and not the Keras model: tracked
        # through the Keras model, TF1-style loaders (TF Serving, `saved_model_cli run`) cannot find
        # them (keras-team/keras#20095), and tracked both ways each is stored twice
        # (keras-team/keras#23553, as in `ExportArchive`).
        self.model_variables = [w.value for w in run.model.weights]
        self._keras = _Untracked(run.model)
        self.preprocessor = run.preprocessor
        self.top_k = min(top_k, len(run.classes))
        mids = [mid for mid, _ in run.classes]
        self.mids = tf.constant(mids + [""])  # index -1: no class
        self.names = tf.constant([name for _, name in run.classes] + [""])
        self.thresholds = tf.constant(run.thresholds, tf.float32)
        self.ancestors = tf.constant(ancestor_matrix(Hierarchy.from_json(run.run.hierarchy_path, mids), mids))
        self.review_margin = review_margin
        padded = lambda tags: tf.RaggedTensor.from_tensor(tags, padding="")  # noqa: E731
        self.serving_default = self._signature(padded, SERVING_TAGS)
        self.serve_yfcc = self._signature(split_yfcc_tags, SERVING_YFCC_TAGS)
        self.embed, self.embedding_record = None, None
        if has_embedding_head(run.run):
            head = EmbeddingHead.load(run.run, run.model)
            self.embedding_record = {**head.record, "calibration": vars(head.calibration)}
            self.embedding_variables = [w.value for w in head.model.weights]
            self._embedding = _Untracked(head.model)
            self.embed = self._signature(padded, SERVING_TAGS, self.embed_photos)

    def _signature(self, split: Callable, tags: tf.TensorSpec,
                   method: Callable | None = None) -> tf.types.experimental.PolymorphicFunction:
        """A signature on the preprocessor's serving inputs: `tags` (made ragged by `split`),
        `image_bytes`, `text` if the model reads free text, and `language` if it is needed; `method`
        (default `predict`) computes the outputs."""
        names = [spec.name for spec in self.preprocessor.serving_inputs(tags)]
        method = method or self.predict

        def serve(*args):
            raw = dict(zip(names, args))
            return method(split(raw.pop("tags")), raw.pop("image_bytes"), **raw)

        return tf.function(serve, input_signature=self.preprocessor.serving_inputs(tags))

    def _inputs(self, tags: tf.RaggedTensor, image_bytes: tf.Tensor, language: tf.Tensor | None,
                text: tf.Tensor | None) -> tuple[dict, tf.Tensor, tf.Tensor]:
        """The model inputs of raw photos, each photo's image error, and the checked image bytes."""
        image_bytes = _same_batch(tags.nrows(), image_bytes)
        raw = {"tags": tags, "image": image_bytes}
        if language is not None:
            raw["language"] = language
        if text is not None:
            raw["text"] = _same_batch(tags.nrows(), text, "text")
        inputs, image_error = self.preprocessor(raw)
        return inputs, image_error, image_bytes

    def embed_photos(self, tags: tf.RaggedTensor, image_bytes: tf.Tensor, language: tf.Tensor | None = None,
                     text: tf.Tensor | None = None) -> dict:
        """The photos' unit vectors in the text encoder's space (the run's embedding head)."""
        inputs, image_error, image_bytes = self._inputs(tags, image_bytes, language, text)
        model = self._embedding.model
        dim = model.output.shape[-1]
        if "tag_ids" in inputs and "word_vectors" in [layer.name for layer in model.layers]:
            # words added after training (export --extend-vocabulary) are beyond the head's table: unknown
            rows = model.get_layer("word_vectors").input_dim
            inputs["tag_ids"] = tf.where(inputs["tag_ids"] >= rows, tf.ones_like(inputs["tag_ids"]), inputs["tag_ids"])
        embedding = tf.cond(tf.shape(image_bytes)[0] > 0,
                            lambda: tf.cast(model({k: v for k, v in inputs.items() if k in model.input},
                                                  training=False), tf.float32),
                            lambda: tf.zeros([0, dim], tf.float32))
        return {"embedding": embedding, "image_ok": tf.equal(image_error, ""), "image_error": image_error}

    def predict(self, tags: tf.RaggedTensor, image_bytes: tf.Tensor, language: tf.Tensor | None = None,
                text: tf.Tensor | None = None) -> dict:
        """Scores ragged raw tags and encoded images (one row of each per photo), with each photo's
        language where the vocabulary is normalised per language, and its free text where the model
        reads it."""
        inputs, image_error, image_bytes = self._inputs(tags, image_bytes, language, text)
        # An empty batch skips the model: some oneDNN kernels (AVX-512 BatchNorm) reject 0 images.
        scores = tf.cond(tf.shape(image_bytes)[0] > 0,
                         lambda: tf.cast(self._keras.model(inputs, training=False), tf.float32),
                         lambda: tf.zeros([0, self.thresholds.shape[0]], tf.float32))
        top = tf.math.top_k(scores, k=self.top_k)
        shown = specific_classes(scores, self.thresholds, self.ancestors, self.top_k, self.review_margin)
        review = shown["review_indices"]
        return {"scores": scores, "top_k_scores": top.values, "top_k_mids": tf.gather(self.mids, top.indices),
                "top_k_names": tf.gather(self.names, top.indices),
                "classes_mids": at_indices(self.mids, shown["indices"]),
                "classes_names": at_indices(self.names, shown["indices"]), "classes_scores": shown["scores"],
                "classes_count": shown["count"], "needs_review": shown["needs_review"],
                "review_mids": at_indices(self.mids, review), "review_names": at_indices(self.names, review),
                "review_scores": tf.where(review >= 0, tf.gather(scores, tf.maximum(review, 0), batch_dims=1), 0.0),
                "review_thresholds": tf.where(review >= 0, tf.gather(self.thresholds, tf.maximum(review, 0)), 0.0),
                "unknown_tags": self._unknown_tags(tags, language).to_tensor(""),
                "image_ok": tf.equal(image_error, ""), "image_error": image_error}

    def _unknown_tags(self, tags: tf.RaggedTensor, language: tf.Tensor | None) -> tf.RaggedTensor:
        """The tags the model cannot use: those out of its vocabulary, or all of them when it reads none."""
        lookup = self.preprocessor.tags
        return lookup.unknown(tags, language) if lookup is not None else clean_tags(tags)


def _same_batch(tag_rows: tf.Tensor, image_bytes: tf.Tensor, name: str = "image_bytes") -> tf.Tensor:
    """`image_bytes` (or another per-photo input `name`), once it is checked to have one entry per row
    of tags (a malformed request)."""
    images = tf.shape(image_bytes, out_type=tf.int64)[0]
    message = tf.strings.format("tags has {} rows but " + name + " has {}: give one " + name + " entry per photo "
                                "('' for none)", (tag_rows, images))
    with tf.control_dependencies([tf.debugging.Assert(tf.equal(tag_rows, images), [message])]):
        return tf.identity(image_bytes)


def next_version(base: Path) -> int:
    """1 + the highest numeric version folder under `base` (TF Serving's layout), or 1."""
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.exists() else []
    return max(versions, default=0) + 1


def export(run_dir: str | Path, out: str | Path | None = None, version: int | None = None, top_k: int = 5,
           review_margin: float = 0.05, new_words: Sequence[str] = (), encoder: Optional[str] = None,
           neighbours: int = NEIGHBOURS) -> Path:
    """Writes `out/VERSION/` (default `run_dir/serving/NEXT/`) atomically and returns it; a failed
    export leaves nothing behind (not even the serving folder it would have made).

    Args:
        new_words: words to add to the model's vocabularies, each placed by its text-encoder vector
            (`app.serving.extend`); what was added is written to `EXTENSION_ASSET`.
        encoder: the encoder spec that places them (only for a run learned from scratch).
        neighbours: the vocabulary words each new word's row is drawn from (`app.model.word_vectors`).
    """
    run = TrainedRun(run_dir)
    base = Path(out) if out else run.run.serving_dir
    made = [folder for folder in (base, *base.parents) if not folder.exists()]
    with run.run.lock():
        version = version or next_version(base)
        target = base / str(version)
        if target.exists():
            raise FileExistsError(f"{target} exists; pick another --version")
        try:
            extension = extend_run(run, new_words, encoder, neighbours) if new_words else None
            served = extension.run if extension else run
            module = ServingModule(served, top_k, review_margin)
            with atomic_output(target) as tmp:
                signatures = {"serving_default": module.serving_default, "serve_yfcc": module.serve_yfcc}
                if module.embed is not None:
                    signatures["embed"] = module.embed
                tf.saved_model.save(module, str(tmp), signatures=signatures)
                (tmp / CLASSES_ASSET).parent.mkdir()
                run.run.copy_classes(tmp / CLASSES_ASSET)
                served.preprocessor.save((tmp / INPUTS_ASSET).parent)  # with the vocabularies it names
                if module.embed is not None:
                    atomic_write_json(tmp / EMBEDDING_ASSET, module.embedding_record)
                if extension:
                    atomic_write_json(tmp / EXTENSION_ASSET, extension.record())
        except BaseException:
            for folder in made:  # innermost first, each only if nothing else was put there
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            raise
    return target


def latest_export(run: RunDir) -> Path | None:
    """The run's newest export (`serving/N/` with the highest N), or None."""
    version = next_version(run.serving_dir) - 1
    return run.serving_dir / str(version) if version else None


def signature_inputs(preprocessor, embed: bool = False) -> str:
    """The signatures and their inputs, for a person: `serving_default(tags [batch, None], ...), ...`
    (and `embed`, which takes serving_default's inputs, for an export with an embedding head)."""
    def listed(tags: tf.TensorSpec) -> str:
        return ", ".join(f"{spec.name} [{', '.join(['batch'] + ['None'] * (len(spec.shape) - 1))}]"
                         for spec in preprocessor.serving_inputs(tags))

    return (f"serving_default({listed(SERVING_TAGS)}), serve_yfcc({listed(SERVING_YFCC_TAGS)})"
            + (f", embed({listed(SERVING_TAGS)}) -> embedding [batch, dim]" if embed else ""))



def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
