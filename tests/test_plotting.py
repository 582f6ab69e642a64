"""Saved figures keep every title and label inside the image."""

import numpy as np
from matplotlib import image as mpimg

from app.plotting import plt, save_figure
from tuning.plots import heatmap, pooling


def test_a_title_wider_than_the_figure_is_saved_whole(tmp_path):
    fig, ax = plt.subplots(figsize=(3, 2))
    title = ax.set_title("a title far wider than the three inches of this figure, " * 2)
    fig.canvas.draw()
    title_px = title.get_window_extent().width
    save_figure(fig, tmp_path / "wide.png", dpi=100)
    assert mpimg.imread(tmp_path / "wide.png").shape[1] >= title_px  # not cut at 300 px


def test_search_plots_show_a_std_scale_from_zero(tmp_path, monkeypatch):
    rows = [dict(tag_limit=20, tag_threshold=20, pooling="max", mean_map=0.8, std_map=0.0, runs=3),
            dict(tag_limit=2, tag_threshold=80, pooling="avg", mean_map=0.7, std_map=0.0, runs=3),
            dict(tag_limit=10, tag_threshold=40, pooling="max", mean_map=0.75, std_map=0.0, runs=1)]
    captured = {}
    original = plt.Figure.colorbar

    def keep_colorbar(fig, mappable, **kwargs):
        captured["limits"], captured["cells"] = mappable.get_clim(), mappable.get_array()
        return original(fig, mappable, **kwargs)

    monkeypatch.setattr(plt.Figure, "colorbar", keep_colorbar)  # matplotlib's own, only observed
    heatmap(tmp_path, rows, "std")
    assert captured["limits"][0] == 0.0 and captured["limits"][1] > 0.0
    assert int(np.isfinite(np.ma.filled(captured["cells"], np.nan)).sum()) == 2  # one run has no std: a blank cell
    pooling(tmp_path, rows)
    assert (tmp_path / "heatmap_std.png").stat().st_size and (tmp_path / "pooling.png").stat().st_size
