"""Figures of the quality report, for the card: where people would rather look than read.

Imported only when figures are asked for, since it imports matplotlib (the ``figures`` extra).
Each figure is drawn from a ``QualityReport`` alone (its histograms and counts, collected by the
report's one pass), never from the data again. Figures are drawn on matplotlib's Agg canvas (no
display, no pyplot state) in matplotlib's default style (whatever the user's matplotlibrc says),
and saved as PNG without a software or time stamp: the same report draws the same bytes.
"""

from __future__ import annotations

import io

import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .card import FIGURE_PATHS, CardFigure
from .lineage import ERROR_KINDS
from .report import Distribution, QualityReport

__all__ = ["draw_figures"]

_DPI = 100
_WIDTH = 8.0  # inches: 800 pixels
_ROWS, _SEEDS = "C0", "C1"  # the colours of generated rows and of seeds, in every figure


def draw_figures(report: QualityReport) -> list[CardFigure]:
    """The report's figures, in the order the card shows them (``card.FIGURE_PATHS``)."""
    rows, lengths, errors = FIGURE_PATHS
    with matplotlib.style.context("default"):
        return [
            CardFigure(rows, _rows_title(report), _rows(report)),
            CardFigure(lengths, _lengths_title(report), _lengths(report)),
            CardFigure(errors, "Rows with an error, by kind", _errors(report)),
        ]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI, metadata={"Software": None})
    return out.getvalue()


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


# -- rows per seed --------------------------------------------------------------------------------


def _rows_title(report: QualityReport) -> str:
    target = f" against the multiplier ({report.multiplier})" if report.multiplier else ""
    return f"Rows per seed{target}"


def _rows(report: QualityReport) -> bytes:
    fig = Figure(figsize=(_WIDTH, 3.6), layout="constrained")
    ax = fig.add_subplot()
    every, clean = report.rows_per_seed, report.clean_rows_per_seed
    if every is None or every.histogram is None:
        _empty(ax, "No row is linked to a seed (`source_index`)")
        return _png(fig)
    edges = every.histogram.edges
    half = 0.4 * (edges[1] - edges[0])
    centres = [c for c, _ in _bins(edges)]
    ax.bar(
        centres, every.histogram.counts, width=-half, align="edge", color=_ROWS, label="all rows"
    )
    if clean is not None and clean.histogram is not None:
        ax.bar(
            centres,
            clean.histogram.counts,
            width=half,
            align="edge",
            color="C2",
            label="rows without error",
        )
    if report.multiplier:
        ax.axvline(
            report.multiplier, color="k", linestyle="--", label=f"multiplier {report.multiplier}"
        )
    ax.set_xlabel("rows of a seed" + _beyond(every))
    ax.set_ylabel("seeds")
    ax.set_xlim(min(0, edges[0]) - 0.5, max(centres[-1], report.multiplier or 0) + 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    missing = f"; {report.seeds_without_rows} without any row" if report.seeds_without_rows else ""
    ax.set_title(f"Rows per seed: {report.linked_seeds} seeds{missing}")
    fig.legend(loc="outside right upper")
    return _png(fig)


def _bins(edges: tuple[int, ...]) -> list[tuple[float, float]]:
    """The centre and the drawn left edge of each bin of counts: a bin of one count is drawn
    centred on it."""
    width = edges[1] - edges[0]
    return [(e + (width - 1) / 2, e - 0.5 if width == 1 else e) for e in edges[:-1]]


def _beyond(*drawn: Distribution) -> str:
    """The x label's note when the last bin (shared by ``drawn``) also holds the tail."""
    edges = drawn[0].histogram.edges if drawn[0].histogram else ()
    tail = any(d.max >= edges[-1] for d in drawn) if edges else False
    return f" (the last bin: {edges[-2]} and more)" if tail else ""


# -- lengths --------------------------------------------------------------------------------------


def _lengths_title(report: QualityReport) -> str:
    return "Lengths of each generated column, generated rows against their seeds"


def _lengths(report: QualityReport) -> bytes:
    columns: dict[str, dict[str, dict[str, Distribution]]] = {}
    for x in report.lengths:
        if x.column not in report.generated_columns:
            continue  # a passthrough column is the seeds' own
        measures = columns.setdefault(x.column, {"chars": {}, "turns": {}})
        measures["chars"][x.of] = x.chars
        if x.turns is not None:
            measures["turns"][x.of] = x.turns
    panels = [
        (column, measure, by_side)
        for column, measures in columns.items()
        for measure, by_side in measures.items()
        if by_side
    ]
    cols = 2 if any(m == "turns" for _, m, _ in panels) else 1
    rows = max(1, len(columns))
    fig = Figure(figsize=(_WIDTH, 0.6 + 2.4 * rows), layout="constrained")
    if not panels:
        _empty(fig.add_subplot(), "No generated column holds text")
        return _png(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, column in enumerate(columns):
        for c in range(cols):
            measure = "chars" if c == 0 else "turns"
            by_side = columns[column][measure]
            if by_side:
                _length_panel(axes[r][c], column, measure, by_side)
            else:
                axes[r][c].set_axis_off()
    fig.suptitle(_lengths_title(report))
    return _png(fig)


def _length_panel(ax: Axes, column: str, measure: str, by_side: dict[str, Distribution]) -> None:
    """The share of values in each bin: seeds and rows differ in number by the multiplier."""
    sides = (("rows", "generated rows", _ROWS, "-"), ("seeds", "seeds", _SEEDS, "--"))
    edges: list[float] = []
    whole = False  # bins of one count each
    for side, label, colour, style in sides:  # seeds dashed over rows: both show where equal
        d = by_side.get(side)
        if d is None or d.histogram is None:
            continue
        shares = [100 * n / d.count for n in d.histogram.counts]
        whole = d.histogram.edges[1] - d.histogram.edges[0] == 1
        edges = [left for _, left in _bins(d.histogram.edges)]
        edges.append(edges[-1] + d.histogram.edges[-1] - d.histogram.edges[-2])
        ax.stairs(
            shares,
            edges,
            color=colour,
            linestyle=style,
            linewidth=1.6,
            label=f"{label} ({d.count})",
        )
    if whole:
        ax.set_xlim(edges[0] - 0.5, edges[-1] + 0.5)  # a span of whole numbers, for the ticks
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    unit = "characters" if measure == "chars" else "turns"
    ax.set_title(f"{column}: {unit}", fontsize="medium")
    ax.set_xlabel(unit + _beyond(*by_side.values()))
    ax.set_ylabel("% of values")
    ax.legend(fontsize="small")


# -- errors ---------------------------------------------------------------------------------------


def _errors(report: QualityReport) -> bytes:
    kinds = [*ERROR_KINDS, *sorted(k for k in report.errors_by_kind if k not in ERROR_KINDS)]
    counts = [report.errors_by_kind.get(k, 0) for k in kinds]
    fig = Figure(figsize=(_WIDTH, 0.8 + 0.4 * len(kinds)), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.barh(kinds, counts, color="C3")
    ax.bar_label(bars, padding=3)
    ax.invert_yaxis()  # in the order of the card's table of kinds
    ax.set_xlabel("rows (a row can have more than one kind)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.1)
    if report.error_rows:
        share = 100 * report.error_rows / report.rows
        ax.set_title(f"Rows with an error: {report.error_rows} of {report.rows} ({share:.1f}%)")
    else:
        ax.set_title(f"No row has an error ({report.rows} rows)")
    return _png(fig)
