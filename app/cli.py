"""Shared command-line helpers: logging set-up and quiet TensorFlow start-up."""

from __future__ import annotations

import logging
import os


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
