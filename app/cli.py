"""Shared command-line helpers: logging set-up, quiet TensorFlow start-up, one-line input errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from app.errors import InputError

INPUT_ERROR_EXIT = 2


def setup_logging(verbose: bool = False) -> None:
    """Logs `HH:MM:SS level message` to stderr and silences TensorFlow's C++ start-up chatter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def input_errors() -> Iterator[None]:
    """Turns bad input into one line `error: file:line: what` on stderr and exit code 2, no traceback.

    Catches `InputError` and the operating system's file errors (a missing file, a folder where a
    file was expected, no permission); any other exception is a bug and keeps its traceback.
    """
    try:
        yield
    except InputError as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err))


def _fail(message: str) -> None:
    print("error: " + " ".join(message.split("\n")), file=sys.stderr)
    raise SystemExit(INPUT_ERROR_EXIT)
