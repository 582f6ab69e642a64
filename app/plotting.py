"""Matplotlib without a display, and figures saved atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from app.fileio import atomic_output  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Lays out, saves (atomically) and closes a figure."""
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
