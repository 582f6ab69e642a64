"""What a run's model can learn from, checked before training: an input the data cannot feed it is
a warning, a model that would read nothing usable is refused, and random image weights on real
photos are said out loud.

An input is unusable when no train photo has it (`stats.json` counts), or when its vocabulary is
empty (2 ids: padding and unknown; the threshold keeps no tag or word of the train split).
"""

from __future__ import annotations

from app.config import RunConfig
from app.errors import InputError
from app.model.classifier import imagenet_hint
from app.model.preprocessor import ContextualPreprocessor
from app.records.dataset import DatasetInfo

RESERVED_IDS = 2  # padding and unknown: a vocabulary of only these reads nothing


def check_inputs(info: DatasetInfo, config: RunConfig, preprocessor: ContextualPreprocessor,
                 refuse: bool = True) -> list[str]:
    """The warnings of a run whose model reads an input the data cannot feed it.

    Args:
        info: the dataset.
        config: the run's config.
        preprocessor: the model's inputs.
        refuse: raise when the model would read no usable input at all (else it is a warning).

    Raises:
        InputError: the model would read no usable input at all, and `refuse`.
    """
    counts = info.stats.get("splits", {}).get(config.data.train_split, {})
    usable, problems = [], []
    d = config.data
    sides = [("tags", preprocessor.tags, "with_tags", "tag", f"--tag-threshold {d.tag_threshold}"),
             ("text", preprocessor.text, "with_text", "word", f"--text-threshold {d.text_threshold}")]
    for name, lookup, counted, word, flag in sides:
        if lookup is None:
            continue
        if counts.get(counted, 1) == 0:  # (datasets whose stats do not count it are taken as having it)
            problems.append(f"no {config.data.train_split} photo has {name}")
        elif lookup.vocab_size <= RESERVED_IDS:
            problems.append(f"its {word} vocabulary is empty ({flag} keeps no {word} of the train split; lower it)")
        else:
            usable.append(name)
    if preprocessor.uses_image:
        if counts.get("with_image", 1) == 0:
            problems.append(f"no {config.data.train_split} photo has an image")
        else:
            usable.append("image")
    what = f"a {config.model.model} model with --text-input {config.model.text_input} on {info.data_dir}"
    if not usable:
        if refuse:
            raise InputError(f"{what} would read nothing usable: {'; '.join(problems)}")
        return [f"{what} reads nothing usable: {'; '.join(problems)}"]
    return [f"{what}: {problem}, so it learns from its {' and '.join(usable)} alone" for problem in problems]


def random_weights_warning(info: DatasetInfo, config: RunConfig) -> str | None:
    """A warning for a frozen or fine-tuned ResNet50 with random weights on real photos (the demo
    world's drawn photos are learnt from with random features; real ones hardly are)."""
    m = config.model
    if not m.uses_image or m.image_weights != "none" or info.is_demo_world:
        return None
    return (f"the image branch's ResNet50 has random weights (--image-weights none): on real photos its features "
            f"carry little. For ImageNet weights, {imagenet_hint()}")
