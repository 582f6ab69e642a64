"""A predictor: a trained run or an exported SavedModel as one callable over raw photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

MODEL_INPUTS = {"tag_ids": "tags", "text_ids": "text", "image": "image"}  # model input -> the raw input it reads


@dataclass
class Predictor:
    """Scores raw photos: `predictor(tags lists, image bytes list[, texts list]) -> outputs dict`.

    Args:
        score: the callable.
        class_ids: the class ids in output order (Open Images MIDs, or a collection's own ids).
        reads: the raw inputs the model reads (`tags`, `text`, `image`); None for an export from a
            version that did not record them.
        embed: the `embed` signature the same way (`{"embedding": [photos, dim], ...}`), for a model with an
            embedding head; else None.
        embedding_record: the head's record (encoder, calibration), with `embed`.
    """

    score: Callable[..., dict]
    class_ids: list
    reads: Optional[frozenset]
    embed: Optional[Callable[..., dict]] = None
    embedding_record: Optional[dict] = None

    def __call__(self, tags: list, images: list, texts: list | None = None) -> dict:
        return self.score(tags, images, texts)

    @property
    def open_images_ids(self) -> bool:
        """The class ids are Open Images MIDs (`/m/...`)."""
        return all(class_id.startswith("/m/") for class_id in self.class_ids)


def load_predictor(path: Path, review_margin: float | None = None) -> Predictor:
    """The predictor of a run folder or a SavedModel.

    Args:
        path: a run folder (its newest export, or the model in process if it has none) or a
            SavedModel version folder.
        review_margin: for a run folder without an export (an export has its own, set by
            `app/export.py --review-margin`).

    Raises:
        FileNotFoundError: `path` is no folder.
        ValueError: an export from an older version, or a review margin for an export.
        RunError: a run folder that is not finished, or whose files were edited.
    """
    import tensorflow as tf

    from app.config import read_json
    from app.sources.oid import read_classes
    from app.serving.signatures import CLASSES_ASSET, EMBEDDING_ASSET, INPUTS_ASSET, ServingModule, latest_export
    from app.runs.rundir import RunDir

    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model folder (a run folder or a SavedModel version folder)")
    # A run folder is checked (finished, its files as it wrote them) even when an export of it is used.
    export = path if (path / "saved_model.pb").exists() else latest_export(RunDir(path).require_complete())
    if export is not None:
        if review_margin is not None:
            raise ValueError(f"{export} is an export: its review margin was set by app/export.py --review-margin")
        if not (export / CLASSES_ASSET).exists():
            raise ValueError(f"{export}: an export from an older version (no specific classes); re-export the run "
                             f"with python app/export.py")
        module = tf.saved_model.load(str(export))
        signature = module.signatures["serving_default"]
        class_ids = [m for m, _ in read_classes(export / CLASSES_ASSET, any_id=True)]
        config = read_json(export / INPUTS_ASSET) if (export / INPUTS_ASSET).exists() else None
        has_head = "embed" in module.signatures and (export / EMBEDDING_ASSET).is_file()
        embed = _scorer(module.signatures["embed"], module) if has_head else None
        record = read_json(export / EMBEDDING_ASSET) if has_head else None
    else:  # a run folder that was never exported: the same module, in process
        from app.runs.trained import TrainedRun

        run = TrainedRun(path)
        # Keep the module itself: its tf.function holds it only weakly.
        module = ServingModule(run, review_margin=0.05 if review_margin is None else review_margin)
        signature, class_ids = module.serving_default.get_concrete_function(), [m for m, _ in run.classes]
        config = run.preprocessor.get_config()
        embed = _scorer(module.embed.get_concrete_function(), module) if module.embed is not None else None
        record = module.embedding_record
    reads = frozenset(MODEL_INPUTS[name] for name in config["inputs"] if name in MODEL_INPUTS) if config else None
    return Predictor(_scorer(signature, module), class_ids, reads, embed, record)


def with_open_vocabulary(predictor: Predictor, vocabulary) -> Predictor:
    """`predictor` whose outputs also hold `vocabulary`'s (`app.serving.open_vocabulary.OpenVocabulary`)."""
    import dataclasses

    def score(tags: list, images: list, texts: list | None = None) -> dict:
        outputs = predictor.score(tags, images, texts)
        outputs.update(vocabulary.outputs(predictor.embed(tags, images, texts)["embedding"], tags))
        return outputs

    return dataclasses.replace(predictor, score=score)


def _scorer(signature, module) -> Callable[..., dict]:
    """The signature as a function of Python lists, with each photo's language where it is an input."""
    import tensorflow as tf

    # By the specs' names: an export's signature takes keywords, the in-process function positions.
    inputs = {spec.name for spec in tf.nest.flatten(signature.structured_input_signature)}
    wants_language, wants_text = "language" in inputs, "text" in inputs

    def predict(tags: list, images: list, texts: list | None = None, module=module) -> dict:
        width = max([len(t) for t in tags] + [1])
        padded = tf.constant([t + [""] * (width - len(t)) for t in tags], tf.string)
        extra = {"language": tf.constant(tag_languages(tags), tf.string)} if wants_language else {}
        if wants_text:  # a model that reads no text ignores it
            extra["text"] = tf.constant(texts or [""] * len(tags), tf.string)
        out = signature(tags=padded, image_bytes=tf.constant(images, tf.string), **extra)
        return {k: v.numpy() for k, v in out.items()}

    return predict


def tag_languages(tags: list) -> list:
    """Each photo's tag language, as prepare detects it: pycld2 on the cleaned tags, `un` when unsure."""
    from app.text.language import detect_language
    from app.text.tags import clean_tags

    return [detect_language(clean_tags(t)) for t in tags]
