"""`download.py --yfcc-split N`: the photos of prepare's weakly labelled yfcc split, from their
YFCC100M download URLs, as prepare then uses them."""

import shutil

import pytest

from app import download as download_cli
from app import prepare as prepare_cli
from app.downloader.manifest import OK, read_manifest
from photo_server import PhotoServer
from test_prepare_images import _shard_images


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from app.demo.world import WorldConfig, write_world

    return write_world(tmp_path_factory.mktemp("yfcc-download") / "raw",
                       WorldConfig(train_size=12, validation_size=4, test_size=4, extra_yfcc=8, image_size=64, seed=9))


def yfcc_only_photos(world) -> dict:
    """Independently of app/: `{key: (download URL name, JPEG)}` of the YFCC100M photos outside Open Images."""
    oid_urls = "".join(p.read_text() for p in world.oid.classes.parent.glob("*-images-*rotation.csv"))
    out = {}
    for line in world.yfcc.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if f"/{fields[1]}_" not in oid_urls and fields[-1] == "0":
            out[f"yfcc-{fields[1]}"] = (fields[16].rsplit("/", 1)[-1], (world.images / f"yfcc-{fields[1]}.jpg").read_bytes())
    return out


def test_the_yfcc_split_is_downloaded_and_prepare_stores_its_photos(world, tmp_path):
    oid_dir = tmp_path / "oid"
    shutil.copytree(world.oid.classes.parent, oid_dir)
    expected = yfcc_only_photos(world)
    gone = sorted(expected)[0]
    served = {name: jpeg for key, (name, jpeg) in expected.items() if key != gone}  # the server 404s the rest
    images = tmp_path / "images"
    argv = ["--oid-dir", str(oid_dir), "--out", str(images), "--yfcc", str(world.yfcc), "--no-progress",
            "--retries", "0"]
    with PhotoServer(served) as server:
        summary = download_cli.main(argv + ["--yfcc-split", "8", "--proxy", server.url])
        rows = {row.image_id: row for _, row in read_manifest(images / "manifest.csv")}
        assert set(rows) == set(expected) and len(expected) == 8
        assert {k for k, r in rows.items() if r.status == OK} == set(expected) - {gone}
        assert rows[gone].reason == "http_404" and summary.ok == 7
        for key, row in rows.items():
            if row.status == OK:  # small enough: kept byte for byte, in 100 folders by the id's last digits
                assert row.path == f"yfcc-{key[-2:]}/{key}.jpg" and (images / row.path).read_bytes() == expected[key][1]
        before = server.requests_for(expected[sorted(expected)[1]][0])
        download_cli.main(argv + ["--yfcc-split", "8", "--proxy", server.url])  # a re-run requests no ok photo
        assert server.requests_for(expected[sorted(expected)[1]][0]) == before

    stats = prepare_cli.main(["--oid-dir", str(oid_dir), "--yfcc", str(world.yfcc), "--autotags", str(world.autotags),
                              "--images", str(images), "--out", str(tmp_path / "shards"), "--no-progress",
                              "--tag-threshold", "1"])
    stored = {k: v for k, v in _shard_images(tmp_path / "shards", ("yfcc",)).items()}
    assert set(stored) == set(expected)
    assert {k: v for k, v in stored.items() if v} == {k: v[1] for k, v in expected.items() if k != gone}
    assert stats["splits"]["yfcc"]["with_image"] == 7 and stats["splits"]["yfcc"]["without_image"] == 1


def test_a_smaller_split_downloads_the_photos_prepare_selects(world, tmp_path):
    oid_dir = world.oid.classes.parent
    served = {name: jpeg for name, jpeg in yfcc_only_photos(world).values()}
    with PhotoServer(served) as server:
        download_cli.main(["--oid-dir", str(oid_dir), "--out", str(tmp_path / "images"), "--yfcc", str(world.yfcc),
                           "--yfcc-split", "3", "--proxy", server.url, "--no-progress"])
    downloaded = {row.image_id for _, row in read_manifest(tmp_path / "images" / "manifest.csv")}
    prepare_cli.main(["--oid-dir", str(oid_dir), "--yfcc", str(world.yfcc), "--out", str(tmp_path / "shards"),
                      "--no-progress", "--yfcc-split-size", "3", "--tag-threshold", "1"])
    assert downloaded == set(_shard_images(tmp_path / "shards", ("yfcc",))) and len(downloaded) == 3


def test_yfcc_split_flags_are_checked(world, capsys):
    for extra in (["--yfcc-split", "3"], ["--yfcc-split", "3", "--yfcc", str(world.yfcc), "--only-tagged"],
                  ["--yfcc-split", "0", "--yfcc", str(world.yfcc)]):
        with pytest.raises(SystemExit):
            download_cli.main(["--oid-dir", str(world.oid.classes.parent), "--out", "x"] + extra)
        assert "--yfcc-split" in capsys.readouterr().err
