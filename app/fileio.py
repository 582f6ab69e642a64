"""Atomic file writes: a reader never sees a half-written output.

Every output is written under a unique temporary name beside its target (so that concurrent
writers never share one), flushed, given the normal umask permissions (not the 0600 that
`mkstemp` creates) and renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

TEMP_MARK = ".tmp"
# What some reader of a text file takes for the end of a line (Python's str.splitlines: all of
# these), or of a field (tab): a field written into a line-based file must hold none of them raw.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
FIELD_BREAKS = "\t" + LINE_BREAKS


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def temp_path(path: str | Path, tmp_dir: str | Path | None = None) -> Path:
    """A unique, not yet existing name beside `path` (or in `tmp_dir`, on the same file system),
    keeping its suffix (Keras, matplotlib and `np.save` insist on one). Names start with `.` and
    contain `.tmp`, so readers skip them."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=tmp_dir or path.parent, prefix=f".{path.stem}.{os.getpid()}.",
                                suffix=f"{TEMP_MARK}{path.suffix}")
    os.close(fd)
    os.unlink(name)
    return Path(name)


@contextlib.contextmanager
def atomic_output(path: str | Path, tmp_dir: str | Path | None = None) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it into place when the block succeeds.

    Args:
        path: the final file.
        tmp_dir: write the temporary file there instead (same file system as `path`).

    Yields:
        Where to write. It is removed if the block fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, tmp_dir)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yields a new empty folder beside `target` to write into; swaps it in whole when the block succeeds.

    Args:
        target: the final folder (any folder there is replaced, see `swap_in_folder`).

    Yields:
        The temporary folder (its name starts with `.` and holds `.tmp`). It is removed if the block
        fails; one that a killed process left behind is never read as `target`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    tmp.mkdir()
    try:
        yield tmp
        swap_in_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def folder_lock(target: str | Path, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Holds the lock of the folder `target` (the file `.NAME.lock` beside it) for one writer at a time.

    Args:
        target: the folder written.
        busy: makes the error raised when another process holds the lock, from that process's pid.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise busy(handle.read().strip() or "?") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def remove_stale_folders(target: str | Path) -> None:
    """Deletes the temporary folders that killed writers of `target` left beside it (`atomic_folder`,
    `swap_in_folder`); call it while holding `folder_lock(target)`."""
    target = Path(target)
    mine = re.compile(rf"\.{re.escape(target.stem)}\.\d+\.\w+{re.escape(TEMP_MARK + target.suffix)}"  # temp_path's
                      rf"|\.{re.escape(target.name)}\.old-\d+")  # swap_in_folder's; never another target's
    for stale in target.parent.iterdir():
        if mine.fullmatch(stale.name) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def swap_in_folder(new: str | Path, target: str | Path) -> None:
    """Puts the finished folder `new` at `target` (a sibling), replacing any folder there; readers
    see the old folder or the new one, never a mix."""
    new, target = Path(new), Path(target)
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def read_folder_marker(folder: str | Path, name: str, version: int, what: str, unfinished: str, remedy: str,
                       error: type = ValueError) -> dict:
    """The completion marker of a folder written whole (a JSON object with its `format`, written last).

    Args:
        folder: the folder.
        name: the marker's file name.
        version: the format this version reads.
        what: what the folder is, for messages (`dataset`).
        unfinished: why a folder can lack its marker, for messages.
        remedy: what to do about a folder that cannot be read.
        error: the exception raised.

    Raises:
        error: `FOLDER: no WHAT folder there`, `FOLDER: incomplete WHAT (no NAME: UNFINISHED)`, `NAME: not
            JSON`, or `FOLDER: WHAT format N, this version reads V`; each with `; REMEDY`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise error(f"{folder}: no {what} folder there; {remedy}")
    path = folder / name
    if not path.is_file():
        raise error(f"{folder}: incomplete {what} (no {name}: {unfinished}); {remedy}")
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise error(f"{path}: not a valid {name} ({err}); {remedy}") from None
    found = marker.get("format") if isinstance(marker, dict) else None
    if found != version:
        raise error(f"{folder}: {what} format {found}, this version reads {version}; {remedy}")
    return marker


def atomic_write_bytes(path: str | Path, data: bytes, tmp_dir: str | Path | None = None) -> None:
    """Writes `data` to `path` atomically (the temporary file in `tmp_dir` if given)."""
    with atomic_output(path, tmp_dir) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def remove_stale_temps(folder: str | Path, older_than: float = 0.0) -> int:
    """Deletes temporary files that a killed writer left in `folder`: call it while holding the
    folder's lock, so that no live writer owns them, or give `older_than` (seconds untouched) where
    no lock is held. Returns how many were removed."""
    removed, now = 0, time.time()
    for stale in Path(folder).glob(f".*{TEMP_MARK}*"):
        try:
            if stale.is_file() and now - stale.stat().st_mtime >= older_than:
                stale.unlink()
                removed += 1
        except FileNotFoundError:  # removed meanwhile by another process
            pass
    return removed


class RepeatedKeyError(ValueError):
    """A JSON object that names one key twice."""


def json_loads_unique(text: str | bytes):
    """`json.loads`, refusing an object with a key given twice (json.loads keeps the last one silently).

    Raises:
        json.JSONDecodeError: not JSON.
        RepeatedKeyError: `key 'id' given twice`.
    """
    return json.loads(text, object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RepeatedKeyError(f"key {key!r} given twice")
        out[key] = value
    return out


def _real(path: str | Path) -> Path:
    """`path` with `..`, symbolic links and `~` resolved (as far as it exists)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _same_file(a: Path, b: Path) -> bool:
    """Whether two existing paths are one file (a hard link, a bind mount: same device and inode)."""
    try:
        first, second = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def refuse_output_over_inputs(output: str | Path | None, inputs: dict, inside: str = "new",
                              own_mark: str | None = None) -> None:
    """Refuses, before anything is written, an output that would overwrite or destroy an input.

    Paths are compared after resolving `~`, `..` and symbolic links, and existing files by device
    and inode (a hard link is the same file). Always refused: an output that is an input, and an
    output that holds an input. An output inside an input folder is refused as `inside` says.

    Args:
        output: the output file or folder (None: stdout, nothing to check).
        inputs: `{what it is (e.g. "--input"): path or None}`.
        inside: `never` (a folder of its own, such as a dataset), `new` (only as a new path, or
            replacing an earlier output that holds `own_mark`: never a part of the input) or `any`
            (a folder that is only added to).
        own_mark: a file that marks an earlier output of the same command.

    Raises:
        InputError: `output: the output is/holds/lies inside the input NAME (path) ...`.
    """
    from app.errors import InputError

    if output is None:
        return
    out = _real(output)
    earlier = bool(own_mark) and (out / own_mark).is_file()
    refuse_inside = inside == "never" or (inside == "new" and out.exists() and not earlier)
    for name, given in inputs.items():
        if given is None:
            continue
        used = _real(given)
        why = None
        if out == used or _same_file(out, used):
            why = "is"
        elif used.is_relative_to(out):
            why = "holds"
        elif refuse_inside and out.is_relative_to(used):
            why = "lies inside" if inside == "never" else "would replace a part of"
        if why:
            shown = "" if str(used) == str(given) else f", that is {used}"
            raise InputError(f"{output}: the output {why} the input {name} ({given}{shown}): it would be "
                             f"overwritten or destroyed; choose another output")
