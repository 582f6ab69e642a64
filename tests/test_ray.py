"""Download, prepare and pseudo-label on a real Ray cluster on 127.0.0.1 (a head and 2 worker nodes of
1 CPU each, `tests/ray_cluster.py`), each against the in-process result; a worker node killed with
`kill -9` mid-job; a shard that fails every attempt; an address that does not answer; a re-run; two
jobs on one folder. One cluster for the module (about 30 s to start on 2 idle cores), tiny inputs."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import download as download_cli
from app import prepare, pseudo_label, train
from app.downloader.manifest import OK, DownloadLock, read_manifest
from app.downloader.images import verify_image
from photo_server import PhotoServer, serve_world
from ray_cluster import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[1]
DOWNLOAD = ["--max-side", "48", "--workers", "2", "--retries", "1", "--timeout", "5", "--no-progress"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """The cluster, and its token in this process's environment for the drivers run here."""
    nodes = LocalCluster(tmp_path_factory.mktemp("ray"), workers=2, cpus=1)
    saved = {key: os.environ.get(key) for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update({key: nodes.env[key] for key in saved})
    try:
        yield nodes
    finally:
        nodes.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from app.demo.world import WorldConfig, write_world

    return write_world(tmp_path_factory.mktemp("ray-world") / "raw",
                       WorldConfig(train_size=24, validation_size=6, test_size=6, extra_yfcc=30, image_size=48, seed=4))


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    """An Open Images folder whose URLs point at the photo server (photos ending in 0 or 1: 404), the
    photos to serve, and the in-process download of them."""
    oid_dir = tmp_path_factory.mktemp("ray-oid") / "oid"
    shutil.copytree(world.oid.classes.parent, oid_dir)
    photos = serve_world(oid_dir, world.images, lambda image_id: "404" if image_id[-1] in "01" else "ok")
    reference = oid_dir.parent / "reference"
    with PhotoServer(photos) as server:
        download_cli.main(["--oid-dir", str(oid_dir), "--out", str(reference), "--proxy", server.url, *DOWNLOAD])
    return oid_dir, photos, reference


@pytest.fixture(scope="module")
def prepared(world, tmp_path_factory):
    """The world prepared in process (2 shards per split), and a small tags teacher trained on it."""
    root = tmp_path_factory.mktemp("ray-prepared")
    prepare.main(_prepare_argv(world, root / "data"))
    train.main(["--data", str(root / "data"), "--model", "tags", "--out", str(root / "teacher"), "--epochs", "1",
                "--embedding-dim", "8", "--hidden-units", "16", "--no-progress"])
    return root / "data", root / "teacher"


def _prepare_argv(world, out: Path) -> list:
    return ["--oid-dir", str(world.oid.classes.parent), "--yfcc", str(world.yfcc), "--autotags", str(world.autotags),
            "--extra-tags", str(world.extra_tags), "--images", str(world.images), "--out", str(out),
            "--records-per-shard", "16", "--tag-threshold", "1", "--bucket-photos", "8", "--no-progress"]


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _jpegs(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.jpg")}


def _final_rows(folder: Path) -> dict:
    """`{image id: (status, reason)}` of every manifest, and every image's `ok` rows."""
    final, oks = {}, collections.Counter()
    for manifest in sorted(p for p in folder.glob("manifest*.csv") if p.is_file()):
        for _, row in read_manifest(manifest):
            final[row.image_id] = (row.status, row.reason)
            oks[row.image_id] += row.status == OK
    return final, oks


def test_download_on_the_cluster_equals_in_process_and_a_rerun_skips_every_shard(cluster, served, tmp_path):
    oid_dir, photos, reference = served
    out = tmp_path / "images"
    argv = ["--oid-dir", str(oid_dir), "--out", str(out), "--ray", cluster.address, "--shard-photos", "4", *DOWNLOAD]
    with PhotoServer(photos) as server:
        summary = download_cli.main(argv + ["--proxy", server.url])
        requests = sum(server.counts.values())
        again = download_cli.main(argv + ["--proxy", server.url])
        assert sum(server.counts.values()) == requests  # nothing requested again
    shards = -(-len(photos) // 4)
    assert summary.shards == {"done": shards} and again.shards == {"skipped": shards}
    assert (again.skipped_ok, again.skipped_permanent) == (summary.ok, summary.failed) and again.ok == again.failed == 0
    assert _jpegs(out) == _jpegs(reference) and summary.ok == len(_jpegs(reference))
    final, oks = _final_rows(out)
    assert final == _final_rows(reference)[0] and set(oks.values()) <= {0, 1}
    assert sorted(p.name for p in out.glob("manifest-*.csv")) == [f"manifest-{i:05d}.csv" for i in range(shards)]


def test_pseudo_label_on_the_cluster_equals_in_process(cluster, prepared, tmp_path):
    data, teacher = prepared
    argv = ["--teacher", str(teacher), "--data", str(data), "--top-k", "1", "--no-progress"]
    here = pseudo_label.main(argv + ["--out", str(tmp_path / "here")])
    spread = pseudo_label.main(argv + ["--out", str(tmp_path / "spread"), "--ray", cluster.address])
    assert spread == here and 0 < here["kept"] <= here["scored"] == 30
    assert _files(tmp_path / "spread") == _files(tmp_path / "here")


def _dataset(folder: Path) -> dict:
    """A dataset's records as a multiset per split, and its other files byte for byte."""
    import tensorflow as tf

    records = collections.defaultdict(list)
    for shard in folder.glob("*.tfrecord"):
        records[shard.name.split("-")[0]] += [bytes(r) for r in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator()]
    files = {name: (folder / name).read_bytes() for name in ("vocab.tsv", "classes.csv", "hierarchy.json", "stats.json")}
    return {"records": {split: sorted(split_records) for split, split_records in records.items()}, **files}


def test_a_shard_that_fails_every_attempt_is_named_and_the_exit_status_says_so(cluster, served, tmp_path, capsys):
    oid_dir, photos, reference = served
    out = tmp_path / "images"
    (out / "manifest-00001.csv").mkdir(parents=True)  # shard 00001 cannot write its manifest
    with PhotoServer(photos) as server:
        with pytest.raises(SystemExit) as stop:
            download_cli.main(["--oid-dir", str(oid_dir), "--out", str(out), "--ray", cluster.address,
                               "--shard-photos", "12", "--shard-retries", "1", "--proxy", server.url, *DOWNLOAD])
    assert stop.value.code == 1
    captured = capsys.readouterr()
    assert "shards: 2 done, 1 failed" in captured.out and "failed, shard_error: 12" in captured.out
    assert "e.g. shard 00001: IsADirectoryError" in captured.out
    assert captured.err.strip() == ("error: 1 shards failed every attempt (00001); run the same command again to "
                                    "retry them")
    final, _ = _final_rows(out)
    assert len(final) == len(photos) - 12 and not list((out / ".shards" / "download").glob("00001.json"))


def test_an_address_that_does_not_answer_is_one_line_and_writes_nothing(tmp_path, capsys):
    started = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        download_cli.main(["--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path / "out"),
                           "--ray", f"127.0.0.1:{free_port()}", "--connect-timeout", "1"])
    assert stop.value.code == 2 and time.monotonic() - started < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ray cluster at 127.0.0.1:") and "does not answer" in err[0]
    assert os.listdir(tmp_path) == []


def test_two_jobs_writing_one_folder_are_refused(served, tmp_path, capsys):
    oid_dir, _, _ = served
    with DownloadLock(tmp_path / "images"):
        with pytest.raises(SystemExit) as stop:
            download_cli.main(["--oid-dir", str(oid_dir), "--out", str(tmp_path / "images"), *DOWNLOAD])
    assert stop.value.code == 2
    assert f"error: {tmp_path / 'images'}: in use by another download (pid {os.getpid()})" in capsys.readouterr().err
    assert os.listdir(tmp_path / "images") == [".download.lock"]


def test_kill_9_of_a_worker_node_mid_download(cluster, served, tmp_path):
    oid_dir, photos, reference = served
    out = tmp_path / "images"
    with PhotoServer(photos, delay=0.4) as server:
        driver = subprocess.Popen([sys.executable, "app/download.py", "--oid-dir", str(oid_dir), "--out", str(out),
                                   "--ray", cluster.address, "--shard-photos", "3", "--proxy", server.url, *DOWNLOAD,
                                   "--workers", "1"], cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for(lambda: cluster.runs(0, ("download_shard",)), driver, 90)
            cluster.kill_worker(0)
            output, _ = driver.communicate(timeout=120)
        finally:
            driver.kill()
    assert driver.returncode == 0, output
    final, oks = _final_rows(out)
    assert final == _final_rows(reference)[0] and set(oks.values()) <= {0, 1}
    assert _jpegs(out) == _jpegs(reference)
    for data in _jpegs(out).values():
        verify_image(data)
    assert len(list((out / ".shards" / "download").glob("*.json"))) == -(-len(photos) // 3)


def _wait_for(condition, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"the job ended first: {process.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout}s")


def test_prepare_on_the_cluster_equals_in_process_despite_a_worker_node_killed_mid_job(cluster, world, prepared,
                                                                                         tmp_path):
    data, _ = prepared
    driver = subprocess.Popen([sys.executable, "app/prepare.py", *_prepare_argv(world, tmp_path / "spread"),
                               "--ray", cluster.address], cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: cluster.runs(1, ("count_span", "scan_span", "join_buckets")), driver, 120)
        cluster.kill_worker(1)
        output, _ = driver.communicate(timeout=180)
    finally:
        driver.kill()
    assert driver.returncode == 0, output
    assert _dataset(tmp_path / "spread") == _dataset(data)
    assert len(list((tmp_path / "spread").glob("yfcc-*.tfrecord"))) > 2  # written by several tasks
