"""What `pip install .` installs: every package folder, and a working demo from outside the repository."""

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[1]


def test_setup_installs_every_package_folder(monkeypatch):
    given = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: given.update(kwargs))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"))
    folders = {".".join(path.parent.relative_to(ROOT).parts) for top in ("app", "tuning")
               for path in (ROOT / top).rglob("*.py") if "__pycache__" not in path.parts}
    assert folders <= set(given["packages"]), sorted(folders - set(given["packages"]))


def test_a_plain_install_prepares_the_demo_outside_the_repository(tmp_path):
    source = tmp_path / "src"  # a copy: building in place would leave build/ and egg-info in the repository
    source.mkdir()
    shutil.copy(ROOT / "setup.py", source)
    for top in ("app", "tuning"):
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(source)], check=True, capture_output=True, timeout=300)
    shutil.rmtree(source)
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "app.prepare", "--demo", "--demo-size", "300", "--out", "demo",
                           "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prepared demo" in done.stdout and (tmp_path / "demo" / "dataset.json").exists()
    assert str(site) in subprocess.run([sys.executable, "-c", "import app.demo.world; print(app.demo.world.__file__)"],
                                       cwd=tmp_path, env=env, capture_output=True, text=True).stdout
