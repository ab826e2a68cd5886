"""The charts' one style (``tools/plots.py``), read back from the figures the tools build:
a heading, a title on every panel (saying which way is better), both axes labelled, and
every number on them formatted for people (no exponent, no ``10^3``). No pixels compared."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bytes_handoff_bench.tools import cost_curve, matrix, plots, report
from bytes_handoff_bench.tools.artifacts import Stat
from bytes_handoff_bench.tools.formats import format_tick, format_value

#: An exponent (``1.37e+03``) or matplotlib's math text (``$\\mathdefault{10^{3}}$``).
NOT_FOR_PEOPLE = re.compile(r"\d[eE][+-]?\d|\$")


# -- the number formats -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tick", "text"),
    [
        (1370.0, "1,370", "1,370"),
        (1_580_031.0, "1,580,031", "1,580,031"),
        (0.00012, "0.00012", "0.000120"),
        (2.5, "2.5", "2.50"),
        (100.0, "100", "100.0"),
    ],
)
def test_one_number_format_for_ticks_and_labels(value: float, tick: str, text: str) -> None:
    assert format_tick(value) == tick
    assert format_value(value) == text


@pytest.mark.parametrize(
    ("low", "high", "among"),
    [(0.5, 3000.0, "1,000"), (20.0, 90.0, "40"), (1e-4, 1e7, "10,000")],
)
def test_a_log_axis_is_labelled_by_the_same_format(low: float, high: float, among: str) -> None:
    fig = Figure()
    ax = fig.subplots()
    ax.plot([low, high], [low, high])
    ax.set_yscale("log")
    plots.number_axis(ax.yaxis)
    fig.draw_without_rendering()
    labels = [t.get_text() for t in [*ax.get_yticklabels(), *ax.get_yticklabels(minor=True)]]
    shown = [label for label in labels if label]
    assert shown, labels  # matplotlib still chooses which ticks get a label
    assert not [label for label in shown if NOT_FOR_PEOPLE.search(label)], shown
    assert among in shown


def test_headings_wrap_to_the_figure_and_panels_say_which_way_is_better() -> None:
    assert plots.wrap_lines(["a b c d", "", "e"], 3) == ["a b", "c d", "e"]
    assert plots.Panel("ns/B", "x (s)", "y (ns/B)").full_title == "ns/B, lower is better"
    assert plots.Panel("MiB/s", "x", "y", "higher").full_title == "MiB/s, higher is better"
    assert plots.Panel("cells", "x", "y", None).full_title == "cells"
    assert plots.implementation_color("handoff") == plots.implementation_color("handoff")
    assert plots.implementation_color("handoff") != plots.implementation_color("raw_copy")


# -- every chart --------------------------------------------------------------------------------


def comparison() -> Figure:
    cells = [
        report.CellSummary(
            impl,
            scenario,
            {
                "cpu_ns_per_byte": Stat(ns * scale, ns * scale / 20, 3),
                "mib_per_sec": Stat(1369.46 / ns, 10.0, 3),
            },
            Path(impl),
        )
        for impl, ns in (("handoff", 1.0), ("manual_vec", 2.0), ("floor", 0.5))
        for scenario, scale in (("fragmented", 1000.0), ("coalesced", 1.0))
    ]
    return report.comparison_figure(cells, "stream_x")


def heatmap() -> Figure:
    grids: dict[str, list[list[float | None]]] = {
        "raw_copy": [[0.5, 8.0], [0.125, None]],
        "manual_vec": [[1.5, None], [None, 1.0]],
    }
    return matrix.heatmap_figure(grids, [1, 4], [64, 1024], "handoff", ["title", "w"], False)


def lines() -> Figure:
    series = {
        "handoff": {(1, 64): Stat(2.0, 0.1, 3), (1, 1024): Stat(2000.0, 10.0, 3)},
        "raw_copy": {(1, 64): Stat(1.0, 0.0, 1), (4, 64): Stat(3.0, 0.0, 1)},
    }
    heading = ["title", "headline", "workload"]
    impls = ["handoff", "raw_copy"]
    return matrix.lines_figure(series, [1, 4], [64, 1024], impls, heading, True, "handoff")


def curve(tmp_path: Path) -> Figure:
    args = ["--rates", "100,200", "--results-dir", str(tmp_path)]
    plan = cost_curve.make_plan(cost_curve.build_parser().parse_args(args), "python")

    def point(impl: str, rate: float, p99: float, behind: int = 0) -> cost_curve.Point:
        return cost_curve.Point(impl, rate, 1, rate, 0.1, 1.0, p99 / 2, p99, 0.0, 0.0, behind, [])

    points = [
        point("handoff", 100, 5), point("handoff", 200, 8),
        point("raw_copy", 100, 5), point("raw_copy", 200, 9000, behind=1),
    ]  # fmt: skip
    knees = cost_curve.mark_knees(points, plan.p99_bound_ms)
    return cost_curve.cost_curve_figure(plan, points, knees, "TCP split: coalesced")


def panels_of(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize(
    ("build", "count"),
    [
        (lambda _tmp: comparison(), 4),
        (lambda _tmp: heatmap(), 2),
        (lambda _tmp: lines(), 2),
        (curve, 3),
    ],
    ids=["comparison", "ratio_heatmap", "ns_per_byte", "cost_curve"],
)
def test_every_chart_has_a_heading_titled_panels_and_labelled_axes(
    tmp_path: Path, build: Callable[[Path], Figure], count: int
) -> None:
    fig = build(tmp_path)
    assert isinstance(fig, Figure)
    assert fig.get_suptitle().strip()
    panels = panels_of(fig)
    assert len(panels) == count
    fig.draw_without_rendering()  # the tick labels are set when the figure is drawn
    for ax in panels:
        title = ax.get_title()
        assert title.endswith(("lower is better", "higher is better")), title
        assert ax.get_xlabel() and ax.get_ylabel(), title
        texts = [
            t.get_text()
            for axes in (ax, *ax.child_axes)  # a secondary axis (cost curve: MiB/s on top)
            for t in (
                *axes.get_xticklabels(),
                *axes.get_yticklabels(),
                *axes.get_yticklabels(minor=True),
                *axes.texts,
                axes.xaxis.get_offset_text(),  # ScalarFormatter's "1e7" beside the axis
                axes.yaxis.get_offset_text(),
            )
        ]
        assert not [t for t in texts if NOT_FOR_PEOPLE.search(t)], texts
        for child in ax.child_axes:
            assert child.get_xlabel() or child.get_ylabel()
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    for bar in bars:
        assert bar.get_ylabel()
    assert plots.DPI == 110


def test_a_chart_is_written_at_the_house_resolution(tmp_path: Path) -> None:
    path = plots.save(heatmap(), tmp_path / "chart.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # pHYs: pixels per metre, 110 dpi = 4331 px/m.
    assert b"pHYs" in data and (4331).to_bytes(4, "big") in data
