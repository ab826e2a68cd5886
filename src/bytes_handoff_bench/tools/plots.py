"""Every chart of the tools, in one style: comparison bars, ratio heatmaps, line panels.

The tools (``report``, ``matrix``, ``cost_curve``) turn their results into the plain
structures below and get a matplotlib ``Figure`` back; :func:`save` writes it. Nothing
else in the project draws. The style:

* a figure is a grid of panels, each sized by what it shows, plus a fixed allowance
  for the heading, the legend and a colorbar (:func:`new_figure`); constrained
  layout; saved at :data:`DPI`;
* the heading (the figure's ``suptitle``): what is compared, on what, then notes
  (how many runs, what the marks mean), wrapped to the figure's width;
* every panel has a title, ending in "lower is better" or "higher is better" where
  one is (:class:`Panel`), and both axes are labelled, with units;
* every number on an axis, a bar or a cell is formatted by :mod:`.formats`
  (thousands separators, never an exponent such as ``1.37e+03``), on linear and log
  axes alike (:func:`number_axis`); byte sizes in binary units (:func:`bytes_axis`);
* one color per implementation, the same in every chart (:func:`implementation_color`).

Figures are plain ``matplotlib.figure.Figure`` objects, not pyplot's: no global
state, nothing to close, and the caller (a test) can read their titles and labels
back. Importing this module selects the ``Agg`` backend, once for every chart (files
only, never a window); the tools import it only when they draw, so that they run
without matplotlib (no chart then).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullLocator

from bytes_handoff_bench.names import REPORT_ORDER
from bytes_handoff_bench.tools.formats import format_bytes, format_ratio, format_tick

matplotlib.use("Agg")

#: Every chart's resolution (dots per inch).
DPI = 110
#: Font sizes: the heading and panel titles, axis labels, ticks and legends, the figures
#: written on bars and cells.
TITLE_SIZE = 10
LABEL_SIZE = 9
TICK_SIZE = 8
NOTE_SIZE = 7
#: What a figure adds to its panels (inches): a margin, a line of heading, a row of
#: legend, a colorbar.
MARGIN_INCHES = 0.6
HEADING_LINE_INCHES = 0.22
LEGEND_ROW_INCHES = 0.3
COLORBAR_INCHES = 0.9
#: Characters of heading per inch of figure width (wrapping).
CHARS_PER_INCH = 11
#: Legend entries per row.
LEGEND_COLUMNS = 4
#: A line panel's values axis turns logarithmic when its values span more than this.
LOG_SPREAD = 20.0

Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class Panel:
    """What one panel says: its title, its axes' labels (with units), and which way is
    better (``None``: neither; the title then says nothing of it)."""

    title: str
    xlabel: str
    ylabel: str
    better: Better | None = "lower"

    @property
    def full_title(self) -> str:
        return f"{self.title}, {self.better} is better" if self.better else self.title


# -- the style ---------------------------------------------------------------------------------


def implementation_color(name: str) -> str:
    """One matplotlib color per implementation, the same in every chart."""
    order: list[str] = list(REPORT_ORDER)
    index = order.index(name) if name in order else len(order) + sum(map(ord, name))
    return f"C{index % 10}"


def new_figure(
    nrows: int,
    ncols: int,
    panel_size: tuple[float, float],
    heading: Sequence[str],
    *,
    legend_entries: int = 0,
    colorbar: bool = False,
) -> tuple[Figure, Any]:
    """A figure of ``nrows`` x ``ncols`` panels of ``panel_size`` inches (``axes[row][col]``),
    with room for ``heading`` (its lines wrapped to the width, set as the suptitle), a
    legend of ``legend_entries`` below the panels and a colorbar."""
    width = ncols * panel_size[0] + MARGIN_INCHES + (COLORBAR_INCHES if colorbar else 0.0)
    lines = wrap_lines(heading, int(width * CHARS_PER_INCH))
    legend_rows = -(-legend_entries // LEGEND_COLUMNS)
    height = (
        nrows * panel_size[1]
        + HEADING_LINE_INCHES * (len(lines) + 1)
        + LEGEND_ROW_INCHES * legend_rows
        + MARGIN_INCHES / 2
    )
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.suptitle("\n".join(lines), fontsize=TITLE_SIZE)
    return fig, axes


def wrap_lines(lines: Sequence[str], width: int) -> list[str]:
    """Each line broken at spaces so that it fits ``width`` characters (empty ones dropped)."""
    out: list[str] = []
    for line in lines:
        if line:
            out += textwrap.wrap(line, width=width, break_long_words=False) or [line]
    return out


def label(ax: Axes, panel: Panel) -> None:
    """The panel's title and axis labels, in the house sizes."""
    ax.set_title(panel.full_title, fontsize=TITLE_SIZE)
    ax.set_xlabel(panel.xlabel, fontsize=LABEL_SIZE)
    ax.set_ylabel(panel.ylabel, fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)


class LogTicks(LogFormatter):
    """matplotlib's choice of which ticks of a log axis to label, labelled by ``format_tick``
    (``100``, ``2.5``, ``1,000``: no ``10^3`` and no ``1e+03``)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return format_tick(x) if super().__call__(x, pos) else ""


def number_axis(axis: Axis) -> None:
    """Tick labels by ``format_tick``, on a linear or a log axis (on a log axis also the
    minor ticks matplotlib labels: an axis over less than a decade or two). Set the
    axis's scale first: a new scale brings its own formatters."""
    if axis.get_scale() == "log":
        axis.set_major_formatter(LogTicks(labelOnlyBase=False))
        axis.set_minor_formatter(LogTicks(labelOnlyBase=False))
    else:
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: format_tick(v)))


def bytes_axis(axis: Axis, sizes: Sequence[int]) -> None:
    """A tick at each of ``sizes``, labelled ``64 B``, ``16 KiB``, on a log-2 axis (set the
    scale first)."""
    axis.set_major_locator(FixedLocator(list(sizes)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: format_bytes(round(v))))


def legend(fig: Figure, handles: Mapping[str, Any], title: str | None = None) -> None:
    """One legend for the figure, below its panels (``new_figure``'s ``legend_entries``)."""
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=min(len(handles), LEGEND_COLUMNS),
            fontsize=TICK_SIZE,
            title=title,
            title_fontsize=TICK_SIZE,
        )


def hide_unused(axes: Any, used: int, ncols: int) -> None:
    """Hide the panels of the grid past the first ``used``."""
    for index in range(used, len(axes) * ncols):
        axes[index // ncols][index % ncols].set_visible(False)


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at the house resolution."""
    fig.savefig(path, dpi=DPI)
    return path


# -- bars ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar: its name on the axis, its value (``None``: n/a, drawn as 0), its error bar
    (0: none) and the text above it."""

    name: str
    value: float | None
    error: float
    text: str
    color: str


@dataclass(frozen=True)
class Level:
    """A horizontal line across a panel: dashed (a reference) or dotted (a floor)."""

    value: float
    dotted: bool = False


@dataclass(frozen=True)
class BarPanel:
    panel: Panel
    bars: Sequence[Bar]
    levels: Sequence[Level] = ()


def bar_chart(rows: Sequence[Sequence[BarPanel]], heading: Sequence[str]) -> Figure:
    """Panels of bars, one row per ``rows`` item; each panel its own value axis (the rows'
    scales may differ by orders of magnitude). Each bar's text stands above its error bar."""
    bars = max((len(p.bars) for row in rows for p in row), default=1)
    # Wide enough for eight bars' texts (a value, a ratio and its interval).
    fig, axes = new_figure(len(rows), len(rows[0]), (max(6.0, 1.2 * bars), 3.9), heading)
    for r, row in enumerate(rows):
        for c, content in enumerate(row):
            ax = axes[r][c]
            errors = [b.error for b in content.bars]
            drawn = ax.bar(
                range(len(content.bars)),
                [b.value or 0.0 for b in content.bars],
                yerr=errors if any(errors) else None,
                capsize=4,
                color=[b.color for b in content.bars],
            )
            for level in content.levels:
                ax.axhline(
                    level.value,
                    color="0.2" if level.dotted else "0.4",
                    linestyle=":" if level.dotted else "--",
                    linewidth=1.0 if level.dotted else 0.8,
                )
            for x, (rect, bar) in enumerate(zip(drawn, content.bars, strict=True)):
                ax.annotate(  # above the error bar, not under it
                    bar.text,
                    (x, rect.get_height() + bar.error),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=NOTE_SIZE,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5},
                )
            names = [b.name for b in content.bars]
            ax.set_xticks(range(len(names)), names, rotation=25, ha="right")  # flat: no room
            label(ax, content.panel)
            number_axis(ax.yaxis)
            ax.grid(axis="y", alpha=0.3)
            ax.margins(y=0.25)
    return fig


# -- ratio heatmaps -----------------------------------------------------------------------------


def ratio_heatmaps(
    panels: Sequence[tuple[Panel, Sequence[Sequence[float | None]]]],
    columns: Sequence[str],
    rows: Sequence[str],
    colorbar_label: str,
    heading: Sequence[str],
) -> Figure:
    """One panel per grid of ratios (``grid[row][column]``, ``None``: n/a, grey), each cell
    written in it. A diverging scale, log-symmetric about 1.00x and shared by the panels:
    blue below 1.00x, red above."""
    values = [v for _, grid in panels for row in grid for v in row if v]
    spread = max([1.25, *(max(v, 1 / v) for v in values)])
    norm = LogNorm(vmin=1 / spread, vmax=spread)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")  # grey: n/a
    ncols = min(3 if len(columns) <= 4 else 2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    size = (max(3.4, 0.8 * len(columns) + 1.6), max(2.6, 0.5 * len(rows) + 1.5))
    fig, axes = new_figure(nrows, ncols, size, heading, colorbar=True)
    image = None
    for index, (panel, grid) in enumerate(panels):
        ax = axes[index // ncols][index % ncols]
        data = np.ma.masked_invalid(
            np.array([[math.nan if v is None else v for v in row] for row in grid], dtype=float)
        )
        image = ax.imshow(data, cmap=cmap, norm=norm, origin="lower", aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                strong = value is not None and abs(math.log(value)) > 0.55 * math.log(spread)
                ax.text(
                    j,
                    i,
                    format_ratio(value),
                    ha="center",
                    va="center",
                    fontsize=TICK_SIZE,
                    color="white" if strong else "black",
                )
        ax.set_xticks(range(len(columns)), list(columns))
        ax.set_yticks(range(len(rows)), list(rows))
        label(ax, panel)
    hide_unused(axes, len(panels), ncols)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.9)
        bar.set_label(colorbar_label, fontsize=LABEL_SIZE)
        ticks = [
            t for t in (0.25, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 4.0) if 1 / spread <= t <= spread
        ]
        bar.ax.yaxis.set_major_locator(FixedLocator(ticks))
        bar.ax.yaxis.set_minor_locator(NullLocator())
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_ratio(v)))
        bar.ax.tick_params(labelsize=TICK_SIZE)
    return fig


# -- lines --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One line of a panel (an implementation). ``errors``: a sample stdev per point (empty
    or all 0: no error bars). ``fell_behind``: per point, drawn as an ``x`` off the solid
    line (a thin dotted one goes through every point). ``star``: one point marked (a knee).
    ``bold``: the reference, thicker and on top."""

    label: str
    color: str
    xs: Sequence[float]
    ys: Sequence[float]
    errors: Sequence[float] = ()
    fell_behind: Sequence[bool] = ()
    star: tuple[float, float] | None = None
    bold: bool = False


@dataclass(frozen=True)
class LinePanel:
    panel: Panel
    series: Sequence[Series]
    #: A log values axis; ``None``: when the values span more than ``LOG_SPREAD``.
    log_y: bool | None = None
    #: A dashed horizontal bound and its text.
    bound: tuple[float, str] | None = None


def line_chart(
    panels: Sequence[LinePanel],
    heading: Sequence[str],
    *,
    ncols: int,
    panel_size: tuple[float, float],
    byte_sizes: Sequence[int] = (),
    top_axis: tuple[float, str] | None = None,
    dodge: bool = False,
    legend_title: str | None = None,
) -> Figure:
    """Line panels with one legend for all. ``byte_sizes``: a log-2 x axis of byte sizes,
    ticked at those; else a linear numbers axis. ``top_axis``: ``(scale, label)``, the x
    values times ``scale`` along the top. ``dodge``: each series a hair to the side
    (on a log x axis), so that error bars at one x stay apart."""
    labels = {s.label for p in panels for s in p.series}
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = new_figure(nrows, ncols, panel_size, heading, legend_entries=len(labels))
    handles: dict[str, Any] = {}
    for index, content in enumerate(panels):
        ax = axes[index // ncols][index % ncols]
        count = len(content.series)
        for k, series in enumerate(content.series):
            shift = 2 ** (0.03 * (k - (count - 1) / 2)) if dodge else 1.0
            handles.setdefault(series.label, _draw_series(ax, series, shift))
        if byte_sizes:
            ax.set_xscale("log", base=2)
            bytes_axis(ax.xaxis, byte_sizes)
        else:
            number_axis(ax.xaxis)
        ys = [y for s in content.series for y in s.ys if y > 0]
        log = content.log_y
        if log is None:
            log = bool(ys) and max(ys) / min(ys) > LOG_SPREAD
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        number_axis(ax.yaxis)
        if content.bound is not None:
            value, text = content.bound
            ax.axhline(value, color="0.3", linestyle="--", linewidth=0.9)
            ax.annotate(
                text,
                (0.01, value),
                xycoords=("axes fraction", "data"),
                xytext=(0, 3),
                textcoords="offset points",
                fontsize=TICK_SIZE,
                color="0.3",
            )
        label(ax, content.panel)
        ax.grid(alpha=0.3, which="both")
        if top_axis is not None:
            top = ax.secondary_xaxis("top", functions=_scaled(top_axis[0]))
            top.set_xlabel(top_axis[1], fontsize=LABEL_SIZE)
            top.tick_params(labelsize=TICK_SIZE)
            number_axis(top.xaxis)
    hide_unused(axes, len(panels), ncols)
    legend(fig, handles, legend_title)
    return fig


def _scaled(scale: float) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """A secondary axis's functions: ``x * scale`` and back."""
    return (lambda x: x * scale), (lambda y: y / scale)


def _draw_series(ax: Axes, series: Series, shift: float) -> Any:
    """Draw one series; return its legend handle."""
    color = series.color
    behind = list(series.fell_behind) or [False] * len(series.xs)
    errors = list(series.errors) or [0.0] * len(series.xs)
    xs = [x * shift for x in series.xs]
    if any(behind):
        # Solid through the points that kept up; thin and dotted on to those that did not.
        ax.plot(xs, series.ys, color=color, linewidth=0.8, linestyle=":")
        bad = [(x, y) for x, y, b in zip(xs, series.ys, behind, strict=True) if b]
        ax.scatter(
            [x for x, _ in bad], [y for _, y in bad], color=color, marker="x", s=30, zorder=3
        )
    ok = [(x, y, e) for x, y, e, b in zip(xs, series.ys, errors, behind, strict=True) if not b]
    width = 2.6 if series.bold else 1.5
    handle: Any
    if ok:
        ok_errors = [e for _, _, e in ok]
        handle = ax.errorbar(
            [x for x, _, _ in ok],
            [y for _, y, _ in ok],
            yerr=ok_errors if any(ok_errors) else None,
            marker="o",
            markersize=4.5,
            capsize=3,
            elinewidth=1.0,
            linewidth=width,
            zorder=3 if series.bold else 2,
            color=color,
            label=series.label,
        )
    else:
        (handle,) = ax.plot([], [], color=color, linewidth=width, label=series.label)
    if series.star is not None:
        ax.scatter(
            [series.star[0] * shift], [series.star[1]], marker="*", s=160, color=color,
            edgecolors="black", linewidths=0.6, zorder=4,
        )  # fmt: skip
    return handle
