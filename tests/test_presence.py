"""Image presence: what the feature cache stores, what the pipelines feed, and withheld inputs."""


import numpy as np
import tensorflow as tf

from app.records import schema
from app.records.dataset import DatasetInfo, DatasetWriter
from app.records.pipeline import make_dataset
from app.model.preprocess import TagLookup, decode_images
from app.model.preprocessor import ContextualPreprocessor
from app.text.tags import clean_tags
from app.model.classifier import build_backbone
from app.training.features import RECORD_FLOATS, FeatureStore
from photos import jpeg, png, truncated, noisy_jpeg

IMAGES = [jpeg(30), b"", truncated(noisy_jpeg(2)), png(200), b"not an image", jpeg(120)]


def write_photos(folder, base_dir, photos) -> DatasetInfo:
    """A dataset folder of `(raw tags, language, image bytes[, text])` photos (every split the same),
    with the classes, hierarchy and vocabulary of the dataset in `base_dir`."""
    with DatasetWriter(folder) as writer:
        for split in ("train", "validation", "test"):
            recs = [schema.PhotoRecord(f"{i:016x}", i, clean_tags(tags), language, "yfcc", label_ids=[i % 5],
                                        label_targets=[1.0], verified_pos=[i % 5], image=image,
                                        text=text[0] if text else "")
                    for i, (tags, language, image, *text) in enumerate(photos)]
            writer.add_shards(schema.write_shards(recs, writer.path, split, 2))
        writer.copy_metadata(DatasetInfo.load(base_dir))
        writer.write_stats({"splits": {s: {"images": len(photos)} for s in ("train", "validation", "test")}})
        writer.commit()
    return DatasetInfo.load(folder)


def test_presence_is_the_decode_result_in_the_cache_and_both_pipelines(tiny_world, tmp_path):
    _, data_dir = tiny_world
    info = write_photos(tmp_path / "d", data_dir, [(["dog", "hund"], "de", image) for image in IMAGES])
    expected = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    _, errors = decode_images(tf.constant(IMAGES), 32)
    assert [float(e == b"") for e in errors.numpy()] == expected  # serving's image_ok
    backbone = build_backbone(32)
    store = FeatureStore(tmp_path / "cache", info, 32, "none")
    assert store.dir.name.startswith(f"features-v2-{info.fingerprint[:16]}-32-none")  # v1 files held no presence
    store.extract(backbone, zip(info.shard_files("test"), store.files("test")), tf.distribute.get_strategy(), False)
    rows = np.concatenate([np.fromfile(f, np.float32).reshape(-1, RECORD_FLOATS) for f in store.files("test")])
    order = [0, 2, 4, 1, 3, 5]  # records go round-robin into the two shards
    assert rows[:, -1].tolist() == [expected[i] for i in order]
    preprocessor = ContextualPreprocessor(TagLookup(info.vocab), 32, image_presence=True)
    cached = next(iter(make_dataset(info, "test", preprocessor, batch_size=8, feature_files=store.files("test"))))[0]
    decoded = next(iter(make_dataset(info, "test", preprocessor, batch_size=8)))[0]
    assert cached["image_present"].numpy()[:, 0].tolist() == decoded["image_present"].numpy()[:, 0].tolist()
    assert cached["image_present"].shape == (6, 1)
    features = backbone(decoded["image"], training=False).numpy()
    np.testing.assert_allclose(cached["image_features"].numpy(), features, rtol=1e-4, atol=1e-4)


def test_withheld_inputs_are_scored_as_serving_gets_them(tiny_world, tmp_path):
    _, data_dir = tiny_world
    info = write_photos(tmp_path / "d", data_dir, [(["dog", "hund"], "de", image) for image in IMAGES])
    preprocessor = ContextualPreprocessor(TagLookup(info.vocab), 32, image_presence=True)

    def first(**kwargs):
        return next(iter(make_dataset(info, "test", preprocessor, batch_size=8, **kwargs)))[0]

    full, no_image, no_tags = first(), first(withhold=("image",)), first(withhold=("tags",))
    assert full["image_present"].numpy().sum() == 3 and no_image["image_present"].numpy().sum() == 0
    assert no_image["image"].numpy().max() == 0  # no bytes: a black image, as serving decodes ""
    np.testing.assert_array_equal(no_image["tag_ids"], full["tag_ids"])
    assert full["tag_ids"].numpy().max() > 1 and no_tags["tag_ids"].numpy().max() == 0
    np.testing.assert_array_equal(no_tags["image"], full["image"])
