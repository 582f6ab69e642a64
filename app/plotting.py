"""Matplotlib without a display, and figures saved atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from app.fileio import atomic_output  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Lays out, saves (atomically) and closes a figure.

    The saved image grows to hold every title, label and annotation, so none is cut at the edge.
    """
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
