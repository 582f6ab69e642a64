"""The joined Open Images + YFCC100M dataset as a TensorFlow Datasets builder.

    import tensorflow_datasets as tfds
    from app.records.tfds_builder import ContextualOpenImages

    builder = ContextualOpenImages(data_dir="~/tensorflow_datasets")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="data/sources"))
    train = builder.as_dataset(split="train")  # or tfds.load("contextual_open_images", ...)

The manual folder holds the user's sources, by their real names: `oid/` (the Open Images files that
`prepare.py --oid-dir` finds), `yfcc100m_dataset` (plain, gzip or bz2; or a name starting so),
and, optional, `yfcc100m_autotags`, `extra_tags.tsv` and `images/` (photos as `app/download.py`
writes them). The demo world's `raw/` folder (`prepare.py --demo` keeps it in the dataset folder)
has this layout.

Examples are the records of `prepare.py`: the builder runs the very same streaming join
(`app.records.builder.prepare_dataset`) into a dataset folder under TFDS's download folder, then yields that
folder's records split by split (key: `image_id`). Splits: train, validation, test, and `yfcc`
(the weakly labelled YFCC100M photos). The fields are the records' fields, typed for TFDS's tools
(`tfds.show_examples`, `tfds.as_dataframe`, `as_supervised=True`): `image` is a `tfds.features.Image`
(the photo's encoded bytes as prepared; a 1x1 black JPEG for a photo without one, which
`image_present` marks False), and the class-id lists (`label_ids`, `verified_pos`, `verified_neg`,
`machine_ids`, `autotag_ids`) are sequences of `tfds.features.ClassLabel` named by the class display
names. Supervised keys: `({"image", "image_present", "tags", "language"}, "label_ids")`, the classes
with a positive target. The class MIDs, hierarchy and vocabulary of the run are in the builder's
`metadata` (`classes`, `vocabulary_size`) and in that prepared folder.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from pathlib import Path
from typing import Iterator, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from app.config import PrepareConfig
from app.sources import oid
from app.records import schema
from app.records.dataset import DatasetInfo
from app.records.builder import prepare_dataset
from app.sources.oid_yfcc import OidYfccFiles
from app.sources.photo import ALL_SPLITS
from app.errors import InputError

PREPARED = "prepared"  # the dataset folder inside TFDS's download folder


def _find(folder: Path, stem: str) -> Optional[Path]:
    """`folder/stem`, or the first file whose name starts with it (`yfcc100m_dataset.bz2`), or None."""
    if (folder / stem).is_file():
        return folder / stem
    return next(iter(sorted(p for p in folder.glob(f"{stem}*") if p.is_file())), None)


def manual_sources(manual_dir: str | Path) -> OidYfccFiles:
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
    return OidYfccFiles(oid=oid.OidPaths.find(root / "oid"), yfcc=yfcc, autotags=_find(root, "yfcc100m_autotags"),
                   extra_tags=_find(root, "extra_tags"), images=images if images.is_dir() else None)


CLASS_ID_LISTS = ("label_ids", "verified_pos", "verified_neg", "machine_ids", "autotag_ids")
INPUTS = ("image", "image_present", "tags", "language")
CITATION = """@misc{litschel2020contextualised,
  author = {Litschel, Kieran},
  title = {Contextualised Image Classifiers},
  year = {2020},
  howpublished = {\\url{https://github.com/KieranLitschel/Contextualised-Image-Classifiers}}
}
@article{kuznetsova2020openimages,
  author = {Kuznetsova, Alina and Rom, Hassan and Alldrin, Neil and Uijlings, Jasper and Krasin, Ivan and
            Pont-Tuset, Jordi and Kamali, Shahab and Popov, Stefan and Malloci, Matteo and Kolesnikov, Alexander
            and Duerig, Tom and Ferrari, Vittorio},
  title = {The Open Images Dataset V4: Unified image classification, object detection, and visual
           relationship detection at scale},
  journal = {International Journal of Computer Vision},
  volume = {128},
  pages = {1956--1981},
  year = {2020}
}
@article{thomee2016yfcc100m,
  author = {Thomee, Bart and Shamma, David A. and Friedland, Gerald and Elizalde, Benjamin and Ni, Karl and
            Poland, Douglas and Borth, Damian and Li, Li-Jia},
  title = {{YFCC100M}: The New Data in Multimedia Research},
  journal = {Communications of the ACM},
  volume = {59},
  number = {2},
  pages = {64--73},
  year = {2016}
}"""
LICENSE = ("Mixed; each source keeps its own terms. Open Images annotations (labels, classes, hierarchy): "
           "CC BY 4.0 (Google). Photos: each under the Creative Commons licence its Flickr owner chose (Open "
           "Images lists them as CC BY 2.0); check a photo's licence before redistributing it. YFCC100M metadata "
           "(user tags, autotags): the Yahoo Webscope terms under which it is distributed.")


def _features() -> tfds.features.FeaturesDict:
    """The record schema (`app.records.schema.FEATURE_SPEC`) as TFDS features: `image` an Image, class-id
    lists sequences of ClassLabel (named in `_split_generators`), other lists 1-D tensors."""
    features = {}
    for name, spec in schema.FEATURE_SPEC.items():
        if name == "image":
            features[name] = tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
        elif name in CLASS_ID_LISTS:
            features[name] = tfds.features.Sequence(tfds.features.ClassLabel())
        elif isinstance(spec, tf.io.RaggedFeature):
            features[name] = tfds.features.Tensor(shape=(None,), dtype=spec.dtype)
        else:
            features[name] = tfds.features.Tensor(shape=(), dtype=spec.dtype)
    features["image_present"] = tfds.features.Tensor(shape=(), dtype=tf.bool)
    return tfds.features.FeaturesDict(features)


def class_label_names(classes: list) -> list:
    """ClassLabel names for `(mid, name)` classes: the display name, with the MID where a name repeats."""
    counts = collections.Counter(name for _, name in classes)
    return [name if counts[name] == 1 else f"{name} ({mid})" for mid, name in classes]


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
            supervised_keys=({name: name for name in INPUTS}, "label_ids"),
            homepage="https://storage.googleapis.com/openimages/web/challenge2019.html",
            citation=CITATION,
            license=LICENSE,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        sources = manual_sources(dl_manager.manual_dir)
        folder = Path(dl_manager.download_dir) / PREPARED
        prepare_dataset(sources, folder, self.prepare_config, progress=False)
        info = DatasetInfo.load(folder)
        names = class_label_names(info.classes)
        for name in CLASS_ID_LISTS:
            self.info.features[name].feature.names = names
        self.info.metadata.update(classes=[mid for mid, _ in info.classes], vocabulary_size=info.vocab.size,
                                  prepare_config=dataclasses.asdict(self.prepare_config),
                                  fingerprint=info.fingerprint)
        return {split: self._generate_examples(info.shard_files(split)) for split in ALL_SPLITS
                if info.shard_files(split)}

    def _generate_examples(self, shards: list) -> Iterator[tuple[str, dict]]:
        for shard in shards:
            for serialized in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
                example = decode_example(serialized)
                yield example["image_id"].decode(), tfds_example(example)


def decode_example(serialized: bytes) -> dict:
    """One shard record as numpy values by feature name (lists 1-D, as TFDS yields them)."""
    parsed = tf.io.parse_single_example(serialized, schema.FEATURE_SPEC)
    return {name: value.numpy() for name, value in parsed.items()}


@functools.lru_cache(maxsize=1)
def missing_image() -> bytes:
    """The stand-in for a photo without an image (`image_present` False): a 1x1 black JPEG."""
    return tf.io.encode_jpeg(tf.zeros([1, 1, 3], tf.uint8)).numpy()


def tfds_example(record: dict) -> dict:
    """A decoded record as the builder's features take it: the stand-in image where there is none."""
    present = len(record["image"]) > 0
    return {**record, "image": record["image"] if present else missing_image(), "image_present": present}
