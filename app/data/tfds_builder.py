"""The joined Open Images + YFCC100M dataset as a TensorFlow Datasets builder.

    import tensorflow_datasets as tfds
    from app.data.tfds_builder import ContextualOpenImages

    builder = ContextualOpenImages(data_dir="~/tensorflow_datasets")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="data/sources"))
    train = builder.as_dataset(split="train")  # or tfds.load("contextual_open_images", ...)

The manual folder holds the user's sources, by their real names: `oid/` (the Open Images files that
`prepare.py --oid-dir` finds), `yfcc100m_dataset` (plain, gzip or bz2; or a name starting so),
and, optional, `yfcc100m_autotags`, `extra_tags.tsv` and `images/` (photos as `app/download.py`
writes them). The demo world's `raw/` folder (`prepare.py --demo` keeps it in the dataset folder)
has this layout.

Examples are the records of `prepare.py`, field for field: the builder runs the very same streaming
join (`app.data.join.prepare`) into a dataset folder under TFDS's download folder, then yields that
folder's records split by split (key: `image_id`). Splits: train, validation, test, and `yfcc`
(the weakly labelled YFCC100M photos). The class list, hierarchy and vocabulary of the run are in
the builder's `metadata` (`classes`, `vocabulary_size`) and in that prepared folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from app.config import PrepareConfig
from app.data import oid, records
from app.data.dataset import DatasetInfo
from app.data.join import SPLITS, prepare_dataset
from app.data.sources import Sources
from app.errors import InputError

PREPARED = "prepared"  # the dataset folder inside TFDS's download folder


def _find(folder: Path, stem: str) -> Optional[Path]:
    """`folder/stem`, or the first file whose name starts with it (`yfcc100m_dataset.bz2`), or None."""
    if (folder / stem).is_file():
        return folder / stem
    return next(iter(sorted(p for p in folder.glob(f"{stem}*") if p.is_file())), None)


def manual_sources(manual_dir: str | Path) -> Sources:
    """The prepare sources in a manual folder (see the module docstring).

    Raises:
        InputError: the folder lacks `oid/` or a YFCC100M file.
    """
    root = Path(manual_dir)
    yfcc = _find(root, "yfcc100m_dataset")
    if not (root / "oid").is_dir() or yfcc is None:
        raise InputError(f"{root}: a TFDS manual folder needs oid/ (the Open Images files) and yfcc100m_dataset; "
                         f"see {ContextualOpenImages.__name__}.MANUAL_DOWNLOAD_INSTRUCTIONS")
    images = root / "images"
    return Sources(oid=oid.OidPaths.find(root / "oid"), yfcc=yfcc, autotags=_find(root, "yfcc100m_autotags"),
                   extra_tags=_find(root, "extra_tags"), images=images if images.is_dir() else None)


def _features() -> tfds.features.FeaturesDict:
    """The record schema (`app.data.records.FEATURE_SPEC`) as TFDS features, list features 1-D."""
    def vector(dtype):
        return tfds.features.Tensor(shape=(None,), dtype=dtype)

    def scalar(dtype):
        return tfds.features.Tensor(shape=(), dtype=dtype)

    return tfds.features.FeaturesDict({
        name: (vector(spec.dtype) if isinstance(spec, tf.io.RaggedFeature) else scalar(spec.dtype))
        for name, spec in records.FEATURE_SPEC.items()})


class ContextualOpenImages(tfds.core.GeneratorBasedBuilder):
    """Open Images challenge-2019 photos with their YFCC100M user tags, labels expanded the challenge way.

    Args:
        prepare_config: the join's options (vocabulary, targets, `yfcc` split size, shard layout).
        **kwargs: `data_dir` and the other arguments of a TFDS builder.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The records of app/prepare.py."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put the sources in the manual folder: oid/ with the Open Images files by their real names
    (images, human- and machine-verified labels per split; the class list and hierarchy are optional),
    yfcc100m_dataset (plain, .gz or .bz2), and optionally yfcc100m_autotags, extra_tags.tsv and images/.
    """

    def __init__(self, *, prepare_config: Optional[PrepareConfig] = None, **kwargs):
        self.prepare_config = prepare_config or PrepareConfig()
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__.split("\n\n")[0] + "\n" + self.__doc__.split("\n")[0],
            features=_features(),
            homepage="https://storage.googleapis.com/openimages/web/challenge2019.html",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        sources = manual_sources(dl_manager.manual_dir)
        folder = Path(dl_manager.download_dir) / PREPARED
        prepare_dataset(sources, folder, self.prepare_config, progress=False)
        info = DatasetInfo.load(folder)
        self.info.metadata.update(classes=[mid for mid, _ in info.classes], vocabulary_size=info.vocab.size,
                                  prepare_config=dataclasses.asdict(self.prepare_config),
                                  fingerprint=info.fingerprint)
        return {split: self._generate_examples(info.shard_files(split)) for split in SPLITS
                if info.shard_files(split)}

    def _generate_examples(self, shards: list) -> Iterator[tuple[str, dict]]:
        for shard in shards:
            for serialized in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
                example = decode_example(serialized)
                yield example["image_id"].decode(), example


def decode_example(serialized: bytes) -> dict:
    """One shard record as numpy values by feature name (lists 1-D, as TFDS yields them)."""
    parsed = tf.io.parse_single_example(serialized, records.FEATURE_SPEC)
    return {name: value.numpy() for name, value in parsed.items()}
