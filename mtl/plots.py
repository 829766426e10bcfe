"""Figures every part of mtl shares: an annotated heatmap, and saving a figure to disk and dashboards.

Built with matplotlib's object API on the Agg canvas: no display and no pyplot state, so it is safe
in training processes and tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["heatmap", "log_figure", "new_figure", "signed_heatmap"]

#: Heatmaps annotate every cell's value up to this many cells.
MAX_ANNOTATED_CELLS = 400


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _array(values: Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().double().numpy() if isinstance(values, Tensor) else np.asarray(values, float)


def heatmap(
    values: Tensor | np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    colorbar_label: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    fmt: str = "{:.2f}",
) -> Figure:
    """A rows x columns heatmap of ``values`` with a colorbar, each cell annotated up to 400 cells.

    ``vmin``/``vmax`` default to the data's range; `signed_heatmap` draws signed values such as task
    affinities on a diverging map centred on 0.
    """
    data = _array(values)
    if data.ndim != 2 or data.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"Expected a 2-D array of shape ({len(row_labels)}, {len(col_labels)}) (one row per row label and one "
            f"column per column label), but got {data.shape}."
        )
    rows, cols = data.shape
    # Room for the row labels and the colorbar's label besides the cells (long labels, few columns).
    label_width = 0.07 * max((len(str(label)) for label in row_labels), default=0)
    figure = new_figure(min(3.0 + 0.6 * cols + label_width, 24), min(1.5 + 0.5 * rows, 16))
    axes = figure.add_subplot()
    low = float(np.nanmin(data)) if vmin is None else vmin
    high = float(np.nanmax(data)) if vmax is None else vmax
    image = axes.imshow(data, cmap=cmap, vmin=low, vmax=max(high, low + 1e-12), aspect="auto")
    figure.colorbar(image, ax=axes, label=colorbar_label)
    axes.set_xticks(
        range(cols), list(col_labels), rotation=45 if cols > 8 else 0, ha="right" if cols > 8 else "center"
    )
    axes.set_yticks(range(rows), list(row_labels))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if rows * cols <= MAX_ANNOTATED_CELLS:
        for r in range(rows):
            for c in range(cols):
                # Dark text on light cells and light on dark ones, whatever the colour map (a diverging
                # map is lightest in the middle of its range).
                red, green, blue, _ = image.cmap(image.norm(data[r, c]))
                colour = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
                axes.text(c, r, fmt.format(data[r, c]), ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    return figure


def signed_heatmap(
    values: Tensor | np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], **kwargs: Any
) -> Figure:
    """`heatmap` of signed values (e.g. task affinities): the diverging ``RdBu`` map centred on 0, with a
    range symmetric about it, so that the sign reads from the colour. ``kwargs`` go to `heatmap`."""
    data = _array(values)
    bound = max(float(np.nanmax(np.abs(data))), 1e-12) if data.size else 1.0
    return heatmap(data, row_labels, col_labels, cmap="RdBu", vmin=-bound, vmax=bound, **kwargs)


def log_figure(
    figure: Figure, path: str | Path, key: str, loggers: Iterable[Any] = (), step: int | None = None
) -> Path:
    """Save ``figure`` as an image at ``path`` and log it under ``key`` to the W&B and TensorBoard loggers.

    Call on the global-zero rank only. Returns the path written.
    """
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, figure, global_step=step)
    return path
