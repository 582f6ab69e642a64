"""What pip installs: every package folder; a wheel whose commands work from outside the repository."""

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


def test_a_wheel_installs_elsewhere_and_its_commands_run(tmp_path):
    """`pip wheel .`, installed into another folder: a console script prepares the demo outside the
    repository (exit status 0, as `python app/prepare.py`), and `python -m` finds the commands."""
    source = tmp_path / "src"  # a copy: building in place would leave build/ and egg-info in the repository
    source.mkdir()
    shutil.copy(ROOT / "setup.py", source)
    for top in ("app", "tuning"):
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    shutil.rmtree(source)
    wheel, = (tmp_path / "dist").glob("contextual_image_classifier-*.whl")
    site = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True,
                   timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([str(site / "bin" / "cic-prepare"), "--demo", "--demo-size", "60", "--out", "demo",
                           "--no-progress"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prepared demo" in done.stdout and (elsewhere / "demo" / "dataset.json").exists()
    for module in ("app.train", "tuning.search"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
    assert str(site) in subprocess.run([sys.executable, "-c", "import app.demo.world; print(app.demo.world.__file__)"],
                                       cwd=elsewhere, env=env, capture_output=True, text=True).stdout
