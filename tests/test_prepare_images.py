import csv
import logging
import shutil
from pathlib import Path
from urllib.parse import unquote_plus

import pytest
import tensorflow as tf

from app import download as download_cli
from app import prepare as prepare_cli
from app.sources import oid
from app.records import schema
from app.records.dataset import DatasetInfo
from app.downloader.images import md5_base64
from app.downloader.manifest import OK, read_manifest
from photo_server import PhotoServer, serve_world


@pytest.fixture
def world(tmp_path):
    from app.demo.world import WorldConfig, write_world

    return write_world(tmp_path / "raw", WorldConfig(train_size=20, validation_size=6, test_size=6, extra_yfcc=6,
                                                      image_size=96, seed=8))


def _shard_images(data_dir: Path, splits: tuple = oid.SPLITS) -> dict:
    out = {}
    for split in splits:
        for batch in tf.data.TFRecordDataset(DatasetInfo.load(data_dir).shard_files(split)).batch(64):
            parsed = schema.parse_batch(batch, ["image_id", "image"])
            out.update(zip(parsed["image_id"].numpy().astype(str), parsed["image"].numpy()))
    return out


def _tagged_flickr_ids(world) -> set:
    """Independently of app/: photos whose YFCC100M (or, if absent there, extra) tags are not all digits."""
    def has_tags(field: str) -> bool:
        return any(t.strip() and not t.strip().isdigit() for t in map(unquote_plus, field.split(",")))

    in_yfcc, tagged = set(), set()
    for line in world.yfcc.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        in_yfcc.add(int(fields[1]))
        if has_tags(fields[10]):
            tagged.add(int(fields[1]))
    for line in world.extra_tags.read_text(encoding="utf-8").splitlines():
        photo, tags = line.split("\t")
        if int(photo) not in in_yfcc and has_tags(tags):
            tagged.add(int(photo))
    return tagged


def test_prepare_keeps_every_photo_downloaded_in_shards_and_counts_those_without(tmp_path, world, capsys):
    oid_dir = tmp_path / "oid"
    shutil.copytree(world.oid.classes.parent, oid_dir)
    gone = {"1": "404", "2": "removed"}
    photos = serve_world(oid_dir, world.images, lambda image_id: gone.get(image_id[-1], "ok"))
    images = tmp_path / "images"
    with PhotoServer(photos) as server:
        download_cli.main(["--oid-dir", str(oid_dir), "--out", str(images), "--max-side", "48", "--only-tagged",
                           "--yfcc", str(world.yfcc), "--extra-tags", str(world.extra_tags), "--shard-photos", "5",
                           "--proxy", server.url, "--no-progress", "--retries", "0"])
    rows = {r.image_id: r for m in sorted(images.glob("manifest-*.csv")) for _, r in read_manifest(m)}
    oid_rows = {r.image_id: r for split in oid.SPLITS for r in oid.read_images(oid_dir / _name(oid_dir, split), _Bad())}
    tagged = {i for i, r in oid_rows.items() if r.flickr_id in _tagged_flickr_ids(world)}
    assert set(rows) == tagged and 0 < len(tagged) < len(oid_rows)
    ok = {i for i, r in rows.items() if r.status == OK}
    assert {i for i in tagged if i[-1] not in gone} == ok

    capsys.readouterr()
    stats = prepare_cli.main(["--oid-dir", str(oid_dir), "--yfcc", str(world.yfcc), "--extra-tags", str(world.extra_tags),
                              "--images", str(images), "--out", str(tmp_path / "shards"), "--no-progress",
                              "--tag-threshold", "1"])
    stored = _shard_images(tmp_path / "shards")
    assert {i for i, data in stored.items() if data} == ok and len(stored) == len(oid_rows)
    for data in filter(None, stored.values()):
        assert max(tf.io.decode_jpeg(data).shape[:2]) == 48
    assert stats["bad_rows"]["total"] == 0
    assert sum(stats["splits"][split]["with_image"] for split in oid.SPLITS) == len(ok)
    assert sum(stats["splits"][split]["without_image"] for split in oid.SPLITS) == len(oid_rows) - len(ok)
    yfcc_only = stats["splits"]["yfcc"]["without_image"]  # not downloaded here (test_download_yfcc.py does)
    without = stats["image_folder"]["without_image"]["by_reason"]
    assert without == {k: v for k, v in {"not_downloaded": len(oid_rows) - len(tagged) + yfcc_only,
                                         "download_http_404": sum(i[-1] == "1" for i in tagged),
                                         "download_unavailable": sum(i[-1] == "2" for i in tagged)}.items() if v}
    assert "photos without an image" in capsys.readouterr().out


def _name(oid_dir: Path, split: str) -> str:
    return oid.find_first(oid_dir, oid.IMAGE_FILES, split).name


class _Bad:
    def add(self, *args):
        raise AssertionError(f"bad row in the test world: {args}")


def _set_md5(csv_path: Path, image_id: str, md5: str) -> None:
    with open(csv_path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    at = rows[0].index("OriginalMD5")
    for row in rows:
        if row[0] == image_id:
            row[at] = md5
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def test_truncated_jpeg_with_matching_md5_is_counted_and_not_stored(tmp_path, world):
    from app.config import PrepareConfig
    from app.records.join import prepare_dataset

    train = [r.image_id for r in oid.read_images(world.oid.images["train"], _Bad())]
    cut, missing = train[0], train[1]
    path = world.images / f"{cut}.jpg"
    path.write_bytes(path.read_bytes()[:-200])
    _set_md5(world.oid.images["train"], cut, md5_base64(path.read_bytes()))
    (world.images / f"{missing}.jpg").unlink()
    stats = prepare_dataset(world, tmp_path / "shards", PrepareConfig(tag_threshold=1), progress=False)
    bad = stats["bad_rows"]
    assert bad["by_reason"] == {"image_truncated": 1, "image_missing": 1}
    assert cut in bad["examples"]["image_truncated"][0] and "end-of-image" in bad["examples"]["image_truncated"][0]
    stored = _shard_images(tmp_path / "shards")
    assert stored[cut] == b"" and stored[missing] == b""
    for data in filter(None, stored.values()):
        tf.io.decode_jpeg(data)  # every stored image decodes
    assert stats["image_folder"]["without_image"]["by_reason"] == {"image_truncated": 1, "image_missing": 1}


def test_full_human_labels_win_over_the_boxable_subset_and_the_choice_is_logged(tmp_path, world, caplog):
    oid_dir = world.oid.classes.parent
    boxable = oid_dir / "train-annotations-human-imagelabels-boxable.csv"
    lines = boxable.read_text().splitlines(keepends=True)
    (oid_dir / "train-annotations-human-imagelabels.csv").write_text("".join(lines))
    labelled = sorted({line.split(",")[0] for line in lines[1:]})
    subset = set(labelled[: len(labelled) // 2])
    boxable.write_text(lines[0] + "".join(line for line in lines[1:] if line.split(",")[0] in subset))
    assert oid.OidPaths.find(oid_dir).human_labels["train"].name == "train-annotations-human-imagelabels.csv"
    with caplog.at_level(logging.INFO, logger="prepare"):
        stats = prepare_cli.main(["--oid-dir", str(oid_dir), "--yfcc", str(world.yfcc), "--out",
                                  str(tmp_path / "shards"), "--no-progress", "--tag-threshold", "1"])
    assert stats["splits"]["train"]["with_verified_labels"] == len(labelled) > len(subset)
    logged = [r.getMessage() for r in caplog.records if r.name == "prepare"]
    assert any(m.startswith("train: human-verified labels from") and m.endswith("imagelabels.csv") for m in logged)
    assert any(m.startswith("validation:") and "boxable subset" in m for m in logged)


def test_manifest_rows_are_checked_and_the_last_row_of_a_photo_wins(tmp_path):
    from app.badrows import BadRows
    from app.records.image_folder import ImageFolder
    from app.downloader.manifest import FAILED, ManifestRow, ManifestWriter

    good = tmp_path / "aa" / "aa00000000000001.jpg"
    good.parent.mkdir()
    good.write_bytes(tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)).numpy())
    with ManifestWriter(tmp_path / "manifest.csv") as writer:
        writer.write(ManifestRow("aa00000000000001", FAILED, "timeout"))
        writer.write(ManifestRow("aa00000000000001", OK, path="aa/aa00000000000001.jpg"))
        writer.write(ManifestRow("bb00000000000002", OK, path="../../etc/passwd"))
        writer.write(ManifestRow("cc00000000000003", FAILED, "unavailable"))
    bad = BadRows()
    folder = ImageFolder(tmp_path, bad)
    photos = [oid.OidImage(i, "", 1, "", "", 0.0, 0) for i in ("aa00000000000001", "bb00000000000002",
                                                                "cc00000000000003")]
    assert [bool(data) for data in folder.iter_load(photos, bad, workers=2)] == [True, False, False]
    assert bad.counts == {"manifest_bad_line": 1} and "outside the images folder" in bad.examples["manifest_bad_line"][0]
    assert folder.without.counts == {"not_downloaded": 1, "download_unavailable": 1}
    assert folder.without.examples["download_unavailable"][0].startswith(f"{tmp_path / 'manifest.csv'}:5:")


def test_an_image_path_that_is_a_folder_is_a_counted_bad_image(tmp_path, world, capsys):
    train = [r.image_id for r in oid.read_images(world.oid.images["train"], _Bad())]
    (world.images / f"{train[0]}.jpg").unlink()
    (world.images / f"{train[0]}.jpg").mkdir()  # a folder where the photo should be
    stats = prepare_cli.main(["--oid-dir", str(world.oid.images["train"].parent), "--yfcc", str(world.yfcc),
                              "--images", str(world.images), "--out", str(tmp_path / "d"), "--no-progress",
                              "--tag-threshold", "1"])
    assert stats["bad_rows"]["by_reason"]["image_unreadable"] == 1
    assert train[0] in stats["bad_rows"]["examples"]["image_unreadable"][0]
    assert _shard_images(tmp_path / "d")[train[0]] == b""  # kept as a tags-only record
    with pytest.raises(SystemExit):
        prepare_cli.main(["--oid-dir", str(world.oid.images["train"].parent), "--yfcc", str(world.yfcc),
                          "--images", str(world.yfcc), "--out", str(tmp_path / "e"), "--no-progress"])
    assert "--images must be a folder" in capsys.readouterr().err
