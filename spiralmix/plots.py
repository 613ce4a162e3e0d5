"""Matplotlib figures from plain tensors: no Lightning, no logging, no files.

Colours are shared by every figure: class 0 and p → 0 are blue, class 1 and p → 1 are
red, and p = 0.5 (no preference: uncertainty) is white. With K > 2 classes each class has
its own colour (:func:`class_colors`) that fades to white where the model is unsure.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import (  # noqa: E402
    BoundaryNorm,
    LinearSegmentedColormap,
    Normalize,
    to_hex,
    to_rgb,
)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

CMAP = "RdBu_r"
CLASS_COLORS = ("#2166ac", "#b2182b")
LEVELS = [i / 20 for i in range(21)]
# Tableau's ten categorical colours, told apart also by most colour-blind readers.
MANY_CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


def class_colors(n_classes: int = 2) -> tuple[str, ...]:
    """One colour per class: blue and red for two, Tableau's categorical ones up to ten,
    and beyond that as many evenly spaced hues, alternately darker and lighter."""
    if n_classes == 2:
        return CLASS_COLORS
    if n_classes <= len(MANY_CLASS_COLORS):
        return MANY_CLASS_COLORS[:n_classes]
    hues = [colorsys.hls_to_rgb(c / n_classes, 0.4 + 0.2 * (c % 2), 0.8) for c in range(n_classes)]
    return tuple(to_hex(rgb) for rgb in hues)


def _points(
    ax, X: torch.Tensor, y: torch.Tensor, size: float = 8, edge: bool = False, n_classes: int = 2
) -> None:
    for label, color in enumerate(class_colors(n_classes)):
        pts = X[y == label]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=size,
            c=color,
            label=f"class {label}",
            edgecolors="black" if edge else "none",
            linewidths=0.4,
        )


def _square(ax, grid: torch.Tensor | None = None) -> None:
    ax.set_aspect("equal")
    if grid is not None:
        ax.set_xlim(float(grid[:, 0].min()), float(grid[:, 0].max()))
        ax.set_ylim(float(grid[:, 1].min()), float(grid[:, 1].max()))
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")


def data_figure(X: torch.Tensor, y: torch.Tensor, title: str, n_classes: int = 2) -> Figure:
    """Scatter plot of points X (N, 2) coloured by label y (N,) in 0..n_classes-1."""
    fig = Figure(figsize=(4.6, 4.2), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    _points(ax, X, y, size=6, n_classes=n_classes)
    _square(ax)
    ax.legend(loc="upper right", fontsize=8, markerscale=2)
    ax.set_title(title, fontsize=10)
    return fig


def draw_boundary(
    ax,
    grid: torch.Tensor,
    p: torch.Tensor,
    X: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
):
    """Filled contour of p (R²,) of class 1 over a square grid (R², 2) on ``ax``, optionally
    with points; returns the contour for a colour bar. For K-class p (R², K), a class map
    (see :class:`ClassMapPanel`), and None: its legend is the class colours."""
    R = int(round(len(grid) ** 0.5))
    if p.ndim == 2:
        ax.imshow(class_map_rgb(p.reshape(R, R, -1)), origin="lower", extent=_extent(grid),
                  interpolation="bilinear", aspect="equal")  # fmt: skip
        if X is not None:
            _points(ax, X, y, size=10, edge=True, n_classes=p.shape[-1])
        _square(ax, grid)
        return None
    gx, gy = grid[:, 0].reshape(R, R), grid[:, 1].reshape(R, R)
    mappable = ax.contourf(gx, gy, p.reshape(R, R), levels=LEVELS, cmap=CMAP, vmin=0, vmax=1)
    if X is not None:
        _points(ax, X, y, size=10, edge=True)
    _square(ax, grid)
    return mappable


# Figures redrawn at every evaluation are built once; later renders paste the static part
# (axes, ticks, labels, colour bar), drawn once, and draw only what changes on top of it.
# A full matplotlib draw costs ~0.1 s, ten times as much; a sweep renders thousands.


def _extent(grid: torch.Tensor) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) of a square grid (R², 2), for imshow."""
    return (float(grid[:, 0].min()), float(grid[:, 0].max()),
            float(grid[:, 1].min()), float(grid[:, 1].max()))  # fmt: skip


def _probability_image(ax, R: int, extent: tuple[float, float, float, float]):
    """An R × R image of p(class 1) in LEVELS bands (set its data to draw), white at 0.5."""
    return ax.imshow(
        np.full((R, R), 0.5), origin="lower", extent=extent, cmap=CMAP,
        norm=BoundaryNorm(LEVELS, 256), interpolation="bilinear", aspect="equal",
    )  # fmt: skip


class _LiveFigure:
    def __init__(self, fig: Figure) -> None:
        self.fig = fig
        self.canvas = FigureCanvasAgg(fig)
        self.dynamic: list = []  # artists that change or lie on top of those that do, in order
        self._background = None

    def _pixels(self) -> np.ndarray:
        """The figure as an RGB image, (H, W, 3) uint8."""
        if self._background is None:
            for artist in self.dynamic:
                artist.set_visible(False)
            self.canvas.draw()
            self._background = self.canvas.copy_from_bbox(self.fig.bbox)
            for artist in self.dynamic:
                artist.set_visible(True)
        self.canvas.restore_region(self._background)
        renderer = self.canvas.get_renderer()
        for artist in self.dynamic:
            artist.draw(renderer)
        return self._buffer()

    def _buffer(self) -> np.ndarray:
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


class BoundaryPanel(_LiveFigure):
    """Predicted probability of class 1 over a fixed grid (R², 2) in LEVELS bands, with a
    colour bar and optionally points X (N, 2), y (N,) on top."""

    def __init__(
        self, grid: torch.Tensor, X: torch.Tensor | None = None, y: torch.Tensor | None = None
    ) -> None:
        super().__init__(Figure(figsize=(5.0, 4.2), dpi=90))
        ax = self.fig.add_subplot()
        self.R = int(round(len(grid) ** 0.5))
        extent = _extent(grid)
        self.image = _probability_image(ax, self.R, extent)
        if X is not None:
            _points(ax, X, y, size=16, edge=True)
            ax.set_xlim(extent[:2])
            ax.set_ylim(extent[2:])
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        self.fig.colorbar(self.image, ax=ax, label="p(class 1)", ticks=[0, 0.25, 0.5, 0.75, 1])
        # A figure-level title: an axes title moves itself when drawn on its own.
        self.title = self.fig.text(0.45, 0.975, "", ha="center", va="top", fontsize=10)
        self.fig.subplots_adjust(left=0.12, right=0.95, bottom=0.11, top=0.92)
        # The image covers the frame's inner edge: draw points and frame again on top.
        self.dynamic = [self.image, *ax.collections, *ax.spines.values(), self.title]

    def render(self, p: torch.Tensor, title: str) -> np.ndarray:
        self.image.set_data(p.reshape(self.R, self.R).numpy())
        self.title.set_text(title)
        return self._pixels()


def probability_map(
    grid: torch.Tensor,
    p: torch.Tensor,
    title: str,
    X: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
) -> np.ndarray:
    """One RGB image (H, W, 3) of probabilities on a grid (R², 2), drawn as the learned maps
    are: p of class 1 (R²,) by :class:`BoundaryPanel`, class probabilities (R², K) by
    :class:`ClassMapPanel`; e.g. the true posterior beside a model's map, in its colours."""
    panel = BoundaryPanel(grid, X, y) if p.ndim == 1 else ClassMapPanel(grid, p.shape[-1], X, y)
    return panel.render(p.float(), title)


def map_pixels(
    grid: torch.Tensor,
    p: torch.Tensor,
    X: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    scale: int = 4,
) -> np.ndarray:
    """A probability map as a bare RGB image (H, W, 3) uint8, one grid point a ``scale`` ×
    ``scale`` block, north up, in the colours of :class:`BoundaryPanel` (p (R²,) of class 1)
    or :class:`ClassMapPanel` (p (R², K)), with points X (N, 2), y (N,) as dots ringed in
    black. No axes or text, so no matplotlib drawing: about a millisecond, where a figure
    costs a hundred; for the many members of an ensemble whose figures are not drawn.
    """
    R = int(round(len(grid) ** 0.5))
    if p.ndim == 1:
        bands = BoundaryNorm(LEVELS, 256)(p.double().numpy())
        rgb = matplotlib.colormaps[CMAP](bands)[..., :3].reshape(R, R, 3)
    else:
        rgb = class_map_rgb(p.reshape(R, R, -1))
    image = (np.asarray(rgb) * 255).round().astype(np.uint8)[::-1]  # row 0 is the top
    image = image.repeat(scale, 0).repeat(scale, 1)
    if X is not None:
        left, right, bottom, top = _extent(grid)
        size = R * scale
        cols = ((X[:, 0].numpy() - left) / (right - left) * (size - 1)).round().astype(int)
        rows = ((top - X[:, 1].numpy()) / (top - bottom) * (size - 1)).round().astype(int)
        colors = np.array([to_rgb(c) for c in class_colors_of(p)])
        fills = (np.zeros((1, 3)), colors[y.long().numpy()])  # a black disc, the class inside
        for fill, radius in zip(fills, (3, 2)):
            fill = (fill * 255).round().astype(np.uint8)
            for dr in range(-radius, radius + 1):
                for dc in range(-radius, radius + 1):
                    if dr * dr + dc * dc <= radius * radius + 1:
                        image[(rows + dr).clip(0, size - 1), (cols + dc).clip(0, size - 1)] = fill
    return image


def class_colors_of(p: torch.Tensor) -> tuple[str, ...]:
    """The class colours of probabilities p: (R²,) of class 1, or (R², K)."""
    return class_colors(2 if p.ndim == 1 else p.shape[-1])


def class_map_rgb(p: torch.Tensor) -> np.ndarray:
    """Colours (..., 3) in [0, 1] for class probabilities p (..., K): the most probable
    class's colour, faded to white in proportion to how far its probability is from
    certainty towards chance (1/K: white)."""
    K = p.shape[-1]
    colors = torch.tensor([to_rgb(c) for c in class_colors(K)], dtype=torch.float32)  # (K, 3)
    confidence, label = p.float().max(-1)
    strength = ((confidence - 1 / K) / (1 - 1 / K)).clamp(0, 1).unsqueeze(-1)
    return (1 - strength * (1 - colors[label])).numpy()


class ClassMapPanel(_LiveFigure):
    """Decision map for K > 2 classes over a fixed grid (R², 2): each point in the colour
    of its most probable class, fading to white where the model is unsure; a legend of the
    classes, a bar of the fading, and optionally points X (N, 2), y (N,) on top."""

    def __init__(
        self,
        grid: torch.Tensor,
        n_classes: int,
        X: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> None:
        super().__init__(Figure(figsize=(5.0, 4.2), dpi=90))
        ax = self.fig.add_subplot()
        self.R = int(round(len(grid) ** 0.5))
        extent = _extent(grid)
        self.image = ax.imshow(np.ones((self.R, self.R, 3)), origin="lower", extent=extent,
                               interpolation="bilinear", aspect="equal")  # fmt: skip
        if X is not None:
            _points(ax, X, y, size=16, edge=True, n_classes=n_classes)
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        handles = [
            Patch(color=c, label=f"class {k}") for k, c in enumerate(class_colors(n_classes))
        ]
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.8)
        fading = LinearSegmentedColormap.from_list("fading", ["white", "black"])
        bar = ScalarMappable(Normalize(1 / n_classes, 1), fading)
        self.fig.colorbar(bar, ax=ax, label="top-label confidence (white: unsure)")
        self.title = self.fig.text(0.45, 0.975, "", ha="center", va="top", fontsize=10)
        self.fig.subplots_adjust(left=0.12, right=0.95, bottom=0.11, top=0.92)
        self.dynamic = [self.image, *ax.collections, ax.get_legend(), *ax.spines.values(),
                        self.title]  # fmt: skip

    def render(self, p: torch.Tensor, title: str) -> np.ndarray:
        """p: (R², K) class probabilities on the grid."""
        self.image.set_data(class_map_rgb(p.reshape(self.R, self.R, -1)))
        self.title.set_text(title)
        return self._pixels()


def reliability_axes(ax, ax_count, edges: torch.Tensor, color: str = CLASS_COLORS[1]):
    """A reliability diagram on ``ax`` (accuracy against confidence, diagonal = calibrated)
    over the share of points per bin on ``ax_count``, empty; returns (line, bars) for
    :func:`set_reliability`. Shared by the live panel and the sweep report. Confidence bins
    start at chance, ``edges[0]`` = 1/K."""
    chance = float(edges[0])
    ax.plot([chance, 1], [chance, 1], color="grey", linestyle="--", linewidth=1,
            label="calibrated")  # fmt: skip
    (line,) = ax.plot([], [], marker="o", markersize=4, color=color, label="model")
    ax.set_xlim(chance, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.grid(True, alpha=0.3)
    width = float(edges[1] - edges[0])
    bars = ax_count.bar(edges[:-1].numpy(), np.zeros(len(edges) - 1), width=width,
                        align="edge", color=color, alpha=0.6)  # fmt: skip
    ax_count.set_ylim(0, 1)
    two = abs(chance - 0.5) < 1e-6
    ax_count.set_xlabel("confidence max(p, 1-p)" if two else "top-label confidence max p_k")
    ax_count.set_ylabel("share")
    return line, bars


def set_reliability(line, bars, stats: dict[str, torch.Tensor]) -> None:
    """Fill a diagram from :func:`reliability_axes` with one member's statistics from
    :func:`spiralmix.metrics.reliability` (count, confidence, accuracy: (n_bins,))."""
    filled = stats["count"] > 0
    line.set_data(stats["confidence"][filled].numpy(), stats["accuracy"][filled].numpy())
    share = stats["count"] / stats["count"].sum()
    for bar, height in zip(bars, share.tolist()):
        bar.set_height(height)


class ReliabilityPanel(_LiveFigure):
    """Reliability diagram (accuracy against confidence per bin) over the share of points
    per bin, for statistics from :func:`spiralmix.metrics.reliability`."""

    def __init__(self, edges: torch.Tensor) -> None:
        super().__init__(Figure(figsize=(4.6, 4.6), dpi=90))
        ax, ax_count = self.fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
        self.line, self.bars = reliability_axes(ax, ax_count, edges)
        ax.legend(loc="upper left", fontsize=8)
        self.title = self.fig.text(0.55, 0.985, "", ha="center", va="top", fontsize=10)
        self.fig.subplots_adjust(left=0.14, right=0.96, bottom=0.1, top=0.93, hspace=0.08)
        self.dynamic = [self.line, *self.bars.patches, self.title]

    def render(self, stats: dict[str, torch.Tensor], title: str) -> np.ndarray:
        set_reliability(self.line, self.bars, stats)
        self.title.set_text(title)
        return self._pixels()


def spectrum_axes(ax, layer: int) -> None:
    """Title and labels of one layer's singular-value panel (live panel and report)."""
    ax.set_title("input" if layer == 0 else f"after hidden layer {layer}", fontsize=9)
    ax.set_xlabel("singular value index")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)


class SpectrumPanel(_LiveFigure):
    """One panel per layer: log10 singular values of each class's centred representation.

    The y-axis spans whole decades and only widens from one render to the next.
    """

    def __init__(self, widths: Sequence[int], n_classes: int = 2) -> None:
        super().__init__(Figure(figsize=(2.4 * len(widths), 2.8), dpi=90))
        axes = self.fig.subplots(1, len(widths), squeeze=False, sharey=True)[0]
        self.axes = axes
        self.lines = []
        for layer, (ax, width) in enumerate(zip(axes, widths)):
            lines = [ax.plot(range(1, width + 1), np.zeros(width), marker=".", color=color,
                             label=f"class {label}")[0]
                     for label, color in enumerate(class_colors(n_classes))]  # fmt: skip
            self.lines.append(lines)
            spectrum_axes(ax, layer)
        axes[0].set_ylabel("log10 singular value")
        axes[0].legend(fontsize=8)
        self.title = self.fig.suptitle("", fontsize=10)
        self.fig.subplots_adjust(left=0.07, right=0.99, bottom=0.17, top=0.8, wspace=0.08)
        self.dynamic = [*(line for lines in self.lines for line in lines), self.title]
        self.limits: tuple[int, int] | None = None  # y-axis limits in decades

    def render(self, spectra: Sequence[torch.Tensor], title: str) -> np.ndarray:
        logs = [sv.clamp_min(1e-8).log10().nan_to_num(-8.0) for sv in spectra]
        for lines, values in zip(self.lines, logs):
            for line, row in zip(lines, values):
                # A class with fewer points than the layer is wide has fewer singular values.
                line.set_data(np.arange(1, len(row) + 1), row.numpy())
        # Whole decades as limits that only widen: the static part is redrawn rarely, and
        # one run's figures keep their scale from step to step once it has settled.
        low = math.floor(min(float(v.min()) for v in logs))
        high = math.ceil(max(float(v.max()) for v in logs))
        if self.limits is not None:
            low, high = min(low, self.limits[0]), max(high, self.limits[1])
        if (low, high) != self.limits:
            self.limits = (low, high)
            self.axes[0].set_ylim(low, high)
            self._background = None
        self.title.set_text(title)
        return self._pixels()


class BottleneckPanel(_LiveFigure):
    """Verma et al. (2019), Figure 1, for a network whose last hidden layer has 2 units.

    Left: the probability of class 1 over a fixed input grid (R², 2) with the training
    points X (N, 2), y (N,). Right: the classifier's probability over a grid of the 2-D
    hidden space with the training points' hidden codes on top. The hidden codes move at
    each evaluation, and the hidden axes with them, so every render is a full draw (~0.2 s;
    only bottleneck runs pay for it).
    """

    def __init__(self, grid: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__(Figure(figsize=(9.6, 4.4), dpi=90))
        ax_in, self.ax_hidden = self.fig.subplots(1, 2)
        self.R = int(round(len(grid) ** 0.5))
        self.y = y
        extent = _extent(grid)
        self.image_in = _probability_image(ax_in, self.R, extent)
        _points(ax_in, X, y, size=16, edge=True)
        ax_in.set_xlim(extent[:2])
        ax_in.set_ylim(extent[2:])
        ax_in.set_xlabel("$x_1$")
        ax_in.set_ylabel("$x_2$")
        ax_in.set_title("input space", fontsize=9)
        self.image_hidden = _probability_image(self.ax_hidden, self.R, (0, 1, 0, 1))
        _points(self.ax_hidden, torch.zeros(len(y), 2), y, size=16, edge=True)
        self.codes = self.ax_hidden.collections  # one scatter per class
        self.ax_hidden.set_xlabel("$h_1$")
        self.ax_hidden.set_ylabel("$h_2$")
        self.ax_hidden.set_title("hidden space (2-unit bottleneck)", fontsize=9)
        # White rims: well-fitted points sit on the saturated background of their own colour.
        for scatter in (*ax_in.collections, *self.codes):
            scatter.set_edgecolor("white")
            scatter.set_linewidth(0.6)
        self.fig.subplots_adjust(left=0.07, right=0.89, bottom=0.11, top=0.88, wspace=0.25)
        cax = self.fig.add_axes((0.91, 0.11, 0.015, 0.77))
        self.fig.colorbar(self.image_hidden, cax=cax, label="p(class 1)",
                          ticks=[0, 0.25, 0.5, 0.75, 1])  # fmt: skip
        self.title = self.fig.text(0.48, 0.98, "", ha="center", va="top", fontsize=10)

    def render(
        self,
        p: torch.Tensor,
        hidden_grid: torch.Tensor,
        hidden_p: torch.Tensor,
        codes: torch.Tensor,
        title: str,
    ) -> np.ndarray:
        """p (R²,) over the input grid; hidden_p (R², ) over hidden_grid (R², 2), a square
        grid covering codes (N, 2), the training points' hidden codes."""
        self.image_in.set_data(p.reshape(self.R, self.R).numpy())
        R = int(round(len(hidden_grid) ** 0.5))
        extent = _extent(hidden_grid)
        self.image_hidden.set_data(hidden_p.reshape(R, R).numpy())
        self.image_hidden.set_extent(extent)
        for label, scatter in enumerate(self.codes):
            scatter.set_offsets(codes[self.y == label].numpy())
        self.ax_hidden.set_xlim(extent[:2])
        self.ax_hidden.set_ylim(extent[2:])
        self.title.set_text(title)
        self.canvas.draw()
        return self._buffer()
