"""mAP with an input withheld: the same photos scored without their image, or without their tags.

"Image withheld" gives every photo of the split empty image bytes, as serving gets them for a photo
without an image: a model trained with `--image-presence` sees `image_present = 0`, others a black
image. "Tags withheld" gives every photo an empty tag list. A model that does not use the withheld
input keeps its scores; late fusion is recombined from its parts' withheld scores with the same λ.
Baselines that do not read the photo (machine labels, most likely) are left out.
"""

from __future__ import annotations

from typing import Optional, Sequence

from app.records.dataset import DatasetInfo
from app.evaluation import baselines
from app.evaluation.metrics import sparse_mean_average_precision
from app.evaluation.scoring import apply_floor
from app.evaluation.truth import SplitTruth

WITHHELD = {"image withheld": "image", "tags withheld": "tags"}
KEY = "withheld"


def withheld_slices(models: Sequence, info: DatasetInfo, split: str, truth: SplitTruth, protocol: str,
                    floor: float, systems: dict, fusion_weight: Optional[float]) -> tuple:
    """The `withheld` slice group of a `RunEvaluation`.

    Args:
        models: the `TrainedModel`s scored (the run and those compared with it).
        info: the dataset.
        split: the split scored.
        truth: the split's ground truth (`app.evaluation.truth.load_truth`).
        protocol: `challenge` or `study`.
        floor: scores under this are zeroed.
        systems: `{name: scores at the verified pairs}` with every input, for models that do not
            use the withheld one.
        fusion_weight: λ of the late fusion when there is one.

    Returns:
        `({"withheld": {label: {system: mAP}}}, {"withheld": {label: photos}})`.
    """
    slices = {}
    for label, what in WITHHELD.items():
        scores = {}
        for model in models:
            uses = model.preprocessor.uses_image if what == "image" else model.preprocessor.uses_tags
            scores[model.name] = (apply_floor(model.score(info, split, truth, withhold=(what,)), floor) if uses
                                  else systems[model.name])
        _add_fusion(scores, models, fusion_weight)
        slices[label] = {name: sparse_mean_average_precision(truth.pairs, s, protocol) for name, s in scores.items()}
    return {KEY: slices}, {KEY: {label: truth.num_images for label in WITHHELD}}


def _add_fusion(scores: dict, models: Sequence, weight: Optional[float]) -> None:
    kinds = {model.config.model.model: model.name for model in models}
    if weight is not None and "tags" in kinds and "image" in kinds:
        scores[baselines.late_fusion_name(weight)] = baselines.late_fusion(scores[kinds["image"]],
                                                                           scores[kinds["tags"]], weight)
