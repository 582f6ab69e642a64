import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from app import download as download_cli
from app.downloader.download import DownloadConfig, DownloadItem, download
from app.downloader.fetch import FetchConfig
from app.downloader.images import md5_base64, verify_image
from app.downloader.manifest import FAILED, OK, ManifestError, ManifestRow, ManifestWriter, read_manifest
from photo_server import PhotoServer, serve_world

ROOT = Path(__file__).resolve().parents[1]
FAST = DownloadConfig(max_side=48, workers=4, fetch=FetchConfig(timeout=0.4, retries=2, backoff=0.01))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from app.demo.world import WorldConfig, write_world

    return write_world(tmp_path_factory.mktemp("download") / "raw",
                       WorldConfig(train_size=16, validation_size=6, test_size=6, extra_yfcc=6, image_size=96, seed=5))


@pytest.fixture(scope="module")
def photos(world):
    return {p.name: p.read_bytes() for p in sorted(world.images.glob("*.jpg"))}


def _last_rows(folder: Path, name: str = "manifest.csv") -> dict:
    return {row.image_id: row for _, row in read_manifest(folder / name)}


def _jpegs(folder: Path) -> dict:
    return {p.stem: p.read_bytes() for p in folder.rglob("*.jpg")}


def test_every_failure_is_recorded_by_reason_and_never_stored(tmp_path, photos):
    names = list(photos)
    served = dict(photos, **{"cut-jpeg.jpg": photos[names[0]][:-300]})
    cases = {  # behaviour, photo, expected reason ("" = ok), expected requests (retries=2)
        "ok": ("ok", names[1], "", 1), "404": ("404", names[2], "http_404", 1), "410": ("410", names[3], "http_410", 1),
        "flaky": ("flaky", names[4], "", 2), "slow": ("slow", names[5], "timeout", 3),
        "cut": ("cut", names[6], "incomplete_body", 3), "wrong": ("wrong", names[7], "md5_mismatch", 1),
        "removed": ("removed", names[8], "unavailable", 1), "html": ("html", names[9], "not_an_image", 1),
        "truncjpeg": ("ok", "cut-jpeg.jpg", "truncated", 1), "nourl": ("ok", names[10], "no_url", 0),
    }
    with PhotoServer(served, slow_s=1.2) as server:
        items = [DownloadItem(key, "" if key == "nourl" else f"{server.url}/{how}/x/{name}",
                              None if key == "html" else md5_base64(served[name]))
                 for key, (how, name, _, _) in cases.items()]
        summary = download(items, tmp_path, FAST, progress=False)
        requests = {key: server.requests_for(f"/{how}/x/{name}") for key, (how, name, _, _) in cases.items()}
        assert server.requests_for("photo_unavailable.png") == 0
    rows = _last_rows(tmp_path)
    assert {key: rows[key].reason for key in cases} == {key: case[2] for key, case in cases.items()}
    assert requests == {key: case[3] for key, case in cases.items()}
    assert summary.ok == 2 and summary.failed == 9 and summary.failures.counts["timeout"] == 1
    stored = _jpegs(tmp_path)
    assert set(stored) == {"ok", "flaky"} == {key for key, row in rows.items() if row.status == OK}
    for key, data in stored.items():
        assert verify_image(data).format == "JPEG" and rows[key].md5_verified
        assert max(Image.open(tmp_path / rows[key].path).size) == 48 == max(rows[key].width, rows[key].height)
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / ".partial").exists()


def test_rerun_requests_nothing_for_ok_or_gone_photos_and_retries_the_rest(tmp_path, photos):
    names = list(photos)
    with PhotoServer(photos) as server:
        items = [DownloadItem("a", f"{server.url}/ok/x/{names[0]}", md5_base64(photos[names[0]])),
                 DownloadItem("b", f"{server.url}/404/x/{names[1]}"),
                 DownloadItem("c", f"{server.url}/e503/x/{names[2]}"),
                 DownloadItem("d", f"{server.url}/ok/x/{names[3]}")]
        download(items, tmp_path, FAST, progress=False)
        (tmp_path / _last_rows(tmp_path)["d"].path).unlink()  # an ok photo whose file was lost
        again = download(items, tmp_path, FAST, progress=False)
        assert [server.requests_for(f"/x/{n}") for n in names[:4]] == [1, 1, 6, 2]
        assert (again.skipped_ok, again.skipped_permanent, again.ok, again.failed) == (1, 1, 1, 1)
        download(items, tmp_path, DownloadConfig(**{**vars(FAST), "retry_permanent": True}), progress=False)
        assert [server.requests_for(f"/x/{n}") for n in names[:4]] == [1, 2, 9, 2]
    assert {k: r.status for k, r in _last_rows(tmp_path).items()} == {"a": OK, "b": FAILED, "c": FAILED, "d": OK}


def test_manifest_survives_a_torn_last_line_and_is_locked(tmp_path):
    path = tmp_path / "manifest.csv"
    with ManifestWriter(path) as writer:
        writer.write(ManifestRow("a", OK, path="a/a.jpg", url="http://h/a,b.jpg", bytes=5, md5_verified=True))
        assert writer.write(ManifestRow("b", FAILED, "http_404", detail="HTTP 404\nNot Found")) == 3
        with pytest.raises(ManifestError, match="in use"):
            ManifestWriter(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("c,ok,,c/c.jpg,http://h/c.j")  # a kill in the middle of a row
    rows = list(read_manifest(path))
    assert [(n, r.image_id, r.url) for n, r in rows] == [(2, "a", "http://h/a,b.jpg"), (3, "b", "")]
    assert rows[1][1].detail == "HTTP 404 Not Found"
    with ManifestWriter(path) as writer:
        assert writer.lines == 3
        writer.write(ManifestRow("c", OK, path="c/c.jpg"))
    assert [r.image_id for _, r in read_manifest(path)] == ["a", "b", "c"]
    path.write_text("id,state\n")
    with pytest.raises(ManifestError, match="expected header"):
        list(read_manifest(path))


def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_result(tmp_path, world):
    shutil.copytree(world.oid.classes.parent, tmp_path / "oid")
    photos = serve_world(tmp_path / "oid", world.images, lambda image_id: "404" if image_id[-1] in "012" else "ok")
    args = ["--oid-dir", str(tmp_path / "oid"), "--max-side", "48", "--workers", "2", "--retries", "1",
            "--timeout", "5", "--no-progress"]
    with PhotoServer(photos) as server:
        download_cli.main(args + ["--out", str(tmp_path / "reference"), "--proxy", server.url])
    reference = _jpegs(tmp_path / "reference")
    assert 10 < len(reference) < len(photos)

    out = tmp_path / "killed"
    with PhotoServer(photos, delay=0.15) as server:
        process = subprocess.Popen([sys.executable, "app/download.py", *args, "--out", str(out), "--proxy", server.url],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_ok_rows(out / "manifest.csv", 4, timeout=30)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        for data in _jpegs(out).values():  # no partial photo, whenever the kill came
            verify_image(data)
        done = _flickr_names(out, {k for k, r in _last_rows(out).items() if r.status == OK})
        assert 4 <= len(done) < len(reference)
        before = {name: server.requests_for(name) for name in done}
        download_cli.main(args + ["--out", str(out), "--proxy", server.url])
        assert {name: server.requests_for(name) for name in done} == before
    assert _jpegs(out) == reference
    assert not list(out.rglob("*.tmp")) and not (out / ".partial").exists()


def _wait_for_ok_rows(path: Path, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().count(",ok,") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path}: fewer than {count} ok rows after {timeout}s")


def _flickr_names(folder: Path, image_ids: set) -> set:
    return {row.url.rsplit("/", 1)[-1] for image_id, row in _last_rows(folder).items() if image_id in image_ids}


def test_cli_help_and_argument_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        download_cli.parse_args(["--help"])
    assert exit_.value.code == 0 and "--max-side" in capsys.readouterr().out
    for argv, message in ((["--shard-photos", "x"], "invalid int"), (["--only-tagged"], "go together"),
                          (["--workers", "0"], "at least 1")):
        with pytest.raises(SystemExit) as exit_:
            download_cli.parse_args(["--oid-dir", "x", "--out", "y", *argv])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_cli_reports_a_missing_oid_folder_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "app.download", "--oid-dir", str(tmp_path), "--out",
                             str(tmp_path / "out"), "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path}: no Open Images image CSV for train")
    assert os.listdir(tmp_path) == []
