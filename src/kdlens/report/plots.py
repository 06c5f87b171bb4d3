"""Charts for reports: each function takes plain numbers and returns one self-contained SVG string.

The SVG starts at ``<svg`` (no XML declaration, no DOCTYPE, no metadata) so it can be inlined in HTML; it references
nothing outside itself. Text stays text (``svg.fonttype = "none"``) and is XML-escaped by matplotlib's writer; ``$``
is never read as mathtext, so names like ``"cost $5"`` print as given. A fixed ``svg.hashsalt`` makes the output a
pure function of the input, and every ``id`` is prefixed with a hash of the drawing so several plots can share one
HTML page without colliding ids.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: nothing global (the
backend, the figure registry, ``rcParams``) changes, so no figure is left open and a user's notebook backend is
untouched. Style settings apply only inside :func:`matplotlib.rc_context`.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from kdlens.validation import fail

_STYLE = {
    "svg.fonttype": "none",  # text as <text>, selectable and searchable
    "svg.hashsalt": "kdlens",  # clip-path and marker ids derived from content: same input, same bytes
    "text.parse_math": False,  # a `$` in a model name is a dollar sign
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 7.5,
}
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_TAG = re.compile(r"<[^<>]+>")  # user text is escaped, so a raw `<` or `>` only ever delimits a tag


# --- input checks (kdlens.validation's one template: "Expected `x` to be ..., but got ...") ---

def _text(value, name: str) -> str:
    if not isinstance(value, str):
        fail(name, "a str", type(value).__name__, error=TypeError)
    return value


def _names(values, name: str, allow_empty: bool = False) -> list[str]:
    """A list of str labels, non-empty unless ``allow_empty``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        fail(name, "a list of str", type(values).__name__, error=TypeError)
    if len(values) == 0 and not allow_empty:
        fail(name, "non-empty", "an empty list")
    return [_text(v, f"{name}[{i}]") for i, v in enumerate(values)]


def _mapping(value, name: str, what: str) -> Mapping:
    """A non-empty mapping whose keys are str names."""
    if not isinstance(value, Mapping):
        fail(name, f"a dict of {what}", type(value).__name__, error=TypeError)
    if len(value) == 0:
        fail(name, "non-empty", "an empty dict")
    for key in value:
        _text(key, f"{name} key {key!r}")
    return value


def _values(values, name: str, length: int | None = None, per: str = "") -> np.ndarray:
    """Numbers (or None) as a float64 array, shape (len(values),), with NaN where a value is missing."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        fail(name, "a list of numbers or None", type(values).__name__, error=TypeError)
    if length is not None and len(values) != length:
        fail(name, f"one value per {per} ({length})", str(len(values)), verb="have")
    out = np.full(len(values), np.nan)  # (n,)
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            fail(f"{name}[{i}]", "a number or None", repr(v), error=TypeError)
        if math.isinf(out[i]):
            fail(f"{name}[{i}]", "finite", repr(v), "Pass None for a missing value.")
    return out


def _in_unit_interval(values: np.ndarray, name: str) -> None:
    bad = ~np.isnan(values) & ((values < 0) | (values > 1))
    if bad.any():
        fail(name, "values in [0, 1] or None", repr(float(values[bad][0])))


# --- rendering ---

def _to_svg(fig: Figure) -> str:
    """The figure as an inline-ready SVG string with page-unique ids; call inside ``rc_context(_STYLE)``."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=_NO_METADATA)  # constrained layout already fits legends inside
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):].strip()  # drop the XML declaration and DOCTYPE (a reference to an external DTD)
    prefix = "k" + hashlib.sha256(svg.encode()).hexdigest()[:8] + "-"

    def scope(tag: re.Match) -> str:  # rewrite ids and references inside tags only, never in text
        t = tag[0].replace(' id="', f' id="{prefix}').replace("url(#", f"url(#{prefix}")
        return t.replace('href="#', f'href="#{prefix}')

    svg = _TAG.sub(scope, svg)
    svg = svg.replace("<svg ", f'<svg id="{prefix}svg" ', 1)
    # matplotlib's `*{...}` rule would apply to the whole HTML page once inlined: scope it to this drawing.
    return svg.replace('<style type="text/css">*{', f'<style type="text/css">#{prefix}svg *{{', 1)


def _legend_beside(ax, handles, labels) -> None:
    # Explicit handles: matplotlib would silently drop a label starting with "_" when collecting them itself.
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0.0)


def _finish(fig: Figure, ax, title: str, xlabel: str = "", ylabel: str = "") -> str:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _to_svg(fig)


# --- charts ---

def reliability_diagram(curves: dict[str, dict], title: str = "") -> str:
    """Reliability diagrams, one small panel per model on shared axes.

    Each panel draws the accuracy of each confidence bin as a bar, the gap to the bin's mean confidence as a shaded
    bar on top of it (above the bar: over-confident; below its top: under-confident), and the diagonal of perfect
    calibration. Bins whose confidence or accuracy is None (or NaN), or whose count is 0, are skipped.

    Parameters
    ----------
    curves : dict[str, dict]
        ``curves[model] = {"confidence": [...], "accuracy": [...], "count": [...], "edges": [...]}``: mean
        confidence, fraction correct (both in [0, 1] or None, length ``n_bins``), examples (non-negative int,
        length ``n_bins``) and bin edges (non-decreasing, in [0, 1], length ``n_bins + 1``) per bin, as returned
        by ``kdlens.measures.reliability_curve``. Models may use different bins.
    title : str, optional
        Figure title.

    Returns
    -------
    str
        ``<svg ...>...</svg>``, up to 3 panels per row.

    Examples
    --------
    >>> curve = {"confidence": [0.3, None, 0.9], "accuracy": [0.2, None, 0.7], "count": [4, 0, 6],
    ...          "edges": [0.0, 1 / 3, 2 / 3, 1.0]}
    >>> reliability_diagram({"teacher": curve, "student": curve}).startswith("<svg")
    True
    """
    _mapping(curves, "curves", "reliability curves keyed by model name")
    _text(title, "title")
    panels = {name: _check_curve(curve, f"curves[{name!r}]") for name, curve in curves.items()}

    ncols = 2 if len(panels) in (2, 4) else min(len(panels), 3)  # 4 panels as 2 x 2, not 3 + 1
    nrows = math.ceil(len(panels) / ncols)
    size = (4.5, 3.5) if len(panels) == 1 else (0.7 + 2.1 * ncols, 0.6 + 2.1 * nrows)
    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=size, layout="constrained")
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax in axes[len(panels):]:
            ax.remove()
        for i, (name, (confidence, accuracy, count, edges)) in enumerate(panels.items()):
            ax = axes[i]
            keep = ~np.isnan(confidence) & ~np.isnan(accuracy) & (count > 0)  # (n_bins,)
            left, width = edges[:-1][keep], np.diff(edges)[keep]
            ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.45")
            ax.bar(left, accuracy[keep], width, align="edge", color="C0", edgecolor="white", lw=0.4)
            ax.bar(left, confidence[keep] - accuracy[keep], width, bottom=accuracy[keep], align="edge",
                   color="C3", alpha=0.35, edgecolor="C3", lw=0.4)
            ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xticks=[0, 0.5, 1], yticks=[0, 0.5, 1])
            ax.set_title(textwrap.fill(f"{name} (n={int(count.sum())})", 32))  # a long name wraps, not clips
            if i + ncols >= len(panels):  # lowest panel in its column (the grid's last row may be short)
                ax.set_xlabel("confidence")
                ax.tick_params(labelbottom=True)
            if i % ncols == 0:
                ax.set_ylabel("accuracy")
        proxies = [Patch(color="C0"), Patch(facecolor="C3", alpha=0.35, edgecolor="C3")]  # drawn even with no bars
        fig.legend(proxies, ["accuracy", "gap to confidence"], loc="outside lower center", ncols=2, frameon=False)
        if title:
            fig.suptitle(title, fontsize=10)
        return _to_svg(fig)


def _check_curve(curve, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, accuracy, count, edges) of one curve; the first three (n_bins,), edges (n_bins + 1,)."""
    keys = ("confidence", "accuracy", "count", "edges")
    if not isinstance(curve, Mapping):
        fail(name, "a dict with keys " + ", ".join(keys), type(curve).__name__, error=TypeError)
    missing = [k for k in keys if k not in curve]
    if missing:
        fail(name, "a dict with keys " + ", ".join(keys), f"no {', '.join(missing)}",
             "Pass the fields of kdlens.measures.reliability_curve as lists.")
    edges = _values(curve["edges"], f"{name}['edges']")
    if len(edges) < 2 or np.isnan(edges).any() or (np.diff(edges) < 0).any():
        fail(f"{name}['edges']", "at least 2 non-decreasing numbers (n_bins + 1 bin edges)", repr(list(edges)))
    _in_unit_interval(edges, f"{name}['edges']")
    n_bins = len(edges) - 1
    confidence = _values(curve["confidence"], f"{name}['confidence']", n_bins, "bin")
    accuracy = _values(curve["accuracy"], f"{name}['accuracy']", n_bins, "bin")
    count = _values(curve["count"], f"{name}['count']", n_bins, "bin")
    _in_unit_interval(confidence, f"{name}['confidence']")
    _in_unit_interval(accuracy, f"{name}['accuracy']")
    if np.isnan(count).any() or (count < 0).any() or (count != np.round(count)).any():
        fail(f"{name}['count']", "non-negative integers", repr(list(curve["count"])))
    return confidence, accuracy, count, edges


def cka_heatmap(matrix: list[list[float]], teacher_layers: list[str], student_layers: list[str],
                title: str = "") -> str:
    """Heatmap of layer-to-layer similarity (CKA), teacher layers as rows and student layers as columns.

    Parameters
    ----------
    matrix : list of list of float
        Shape (len(teacher_layers), len(student_layers)); ``matrix[i][j]`` compares teacher layer ``i`` with
        student layer ``j``. None (or NaN) cells are drawn grey. Values are annotated with 2 decimals; the colour
        scale is fixed to [0, 1] so heatmaps of different runs compare by eye (debiased CKA slightly below 0 is
        coloured as 0 but printed as computed).
    teacher_layers, student_layers : list of str
        Layer names, e.g. ``model.named_modules()`` names.
    title : str, optional

    Returns
    -------
    str
        ``<svg ...>...</svg>``.

    Examples
    --------
    >>> svg = cka_heatmap([[0.9, 0.2], [0.3, 0.8]], ["layer1", "layer2"], ["block1", "block2"])
    >>> "0.90" in svg
    True
    """
    teacher_layers = _names(teacher_layers, "teacher_layers")
    student_layers = _names(student_layers, "student_layers")
    _text(title, "title")
    if isinstance(matrix, (str, bytes)) or not hasattr(matrix, "__len__"):
        fail("matrix", "a list of rows", type(matrix).__name__, error=TypeError)
    if len(matrix) != len(teacher_layers):
        fail("matrix", f"one row per teacher layer ({len(teacher_layers)})", str(len(matrix)), verb="have")
    values = np.stack([_values(row, f"matrix[{i}]", len(student_layers), "student layer")
                       for i, row in enumerate(matrix)])  # (n_teacher, n_student)

    n_t, n_s = values.shape
    fontsize = 7.0 if max(n_t, n_s) <= 10 else 5.0
    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(min(4.5 + 0.35 * max(n_s - 6, 0), 12), min(3.5 + 0.3 * max(n_t - 6, 0), 12)),
                     layout="constrained")
        ax = fig.add_subplot()
        ax.set_facecolor("0.85")  # shows through missing cells
        mesh = ax.pcolormesh(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0,
                             edgecolors="white", linewidth=0.5)
        for (i, j), v in np.ndenumerate(values):
            label, colour = ("n/a", "black") if np.isnan(v) else (f"{v:.2f}", "white" if v < 0.55 else "black")
            ax.text(j + 0.5, i + 0.5, label, ha="center", va="center", fontsize=fontsize, color=colour)
        ax.set_xticks(np.arange(n_s) + 0.5, student_layers, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticks(np.arange(n_t) + 0.5, teacher_layers)
        ax.invert_yaxis()  # first teacher layer on top
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
        fig.colorbar(mesh, ax=ax, label="CKA", shrink=0.85)
        return _finish(fig, ax, title, "student layer", "teacher layer")


def pareto_scatter(points: dict[str, tuple[float, float]], front: list[str], xlabel: str, ylabel: str,
                   title: str = "") -> str:
    """Scatter of models over two objectives, the Pareto front highlighted and joined by a step line.

    Parameters
    ----------
    points : dict[str, tuple[float, float] | None]
        ``points[model] = (x, y)``, e.g. (parameters in millions, accuracy). A model whose point, or either
        coordinate, is None is left out.
    front : list of str
        Names (keys of ``points``) on the Pareto front; which side is better is the caller's decision, this only
        draws it. Joined in order of increasing x by a post-step line.
    xlabel, ylabel : str
        Axis labels with units, e.g. ``"parameters (M)"``.
    title : str, optional

    Returns
    -------
    str
        ``<svg ...>...</svg>``; every drawn point carries its name.

    Examples
    --------
    >>> svg = pareto_scatter({"teacher": (11.2, 0.93), "tiny": (0.3, 0.81), "small": (1.1, 0.80)},
    ...                      ["tiny", "teacher"], "parameters (M)", "accuracy")
    >>> "tiny" in svg
    True
    """
    _mapping(points, "points", "(x, y) points keyed by model name")
    front = _names(front, "front", allow_empty=True)
    xlabel, ylabel, title = _text(xlabel, "xlabel"), _text(ylabel, "ylabel"), _text(title, "title")
    unknown = [name for name in front if name not in points]
    if unknown:
        fail("front", "only keys of `points`", repr(unknown[0]), f"Known names: {', '.join(points)}.", verb="name")
    xy = {}
    for name, point in points.items():
        if point is not None:
            coords = _values(point, f"points[{name!r}]", 2, "coordinate (x, y)")
            if not np.isnan(coords).any():
                xy[name] = coords

    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(4.5, 3.5), layout="constrained")
        ax = fig.add_subplot()
        others = [name for name in xy if name not in front]
        on_front = sorted((name for name in front if name in xy), key=lambda name: xy[name][0])
        handles, labels = [], []
        if others:
            handles.append(ax.scatter(*np.array([xy[n] for n in others]).T, s=22, color="0.55", zorder=2))
            labels.append("other")
        if on_front:
            line = np.array([xy[n] for n in on_front])  # (n_front, 2)
            ax.step(line[:, 0], line[:, 1], where="post", color="C3", lw=1.2, zorder=1)
            handles.append(ax.scatter(line[:, 0], line[:, 1], s=40, color="C3", edgecolor="black", lw=0.6,
                                      zorder=3))
            labels.append("Pareto front")
        for name, offset in _label_offsets(xy).items():
            ax.annotate(name, xy[name], xytext=offset, textcoords="offset points", fontsize=7,
                        ha="left" if offset[0] > 0 else "right")
        if on_front:  # with no front every point is "other": a legend would say nothing
            ax.legend(handles, labels, loc="best", frameon=False)
        ax.grid(alpha=0.3, lw=0.5)
        return _finish(fig, ax, title, xlabel, ylabel)


def _label_offsets(xy: dict[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """Where each point's name goes, in points from the point: above right, unless a name already placed near it
    (in axes fractions) is there; then below right, above left, below left, in that order."""
    coords = np.array(list(xy.values()), dtype=float).reshape(-1, 2)  # (n, 2)
    span = np.ptp(coords, axis=0) if len(coords) else np.ones(2)
    unit = coords / np.where(span > 0, span, 1.0)  # axes fractions, roughly
    candidates = ((4, 4), (4, -10), (-4, 4), (-4, -10))
    placed: list[tuple[np.ndarray, tuple[int, int]]] = []
    out = {}
    for name, point in zip(xy, unit, strict=True):
        def clashes(offset, point=point) -> bool:
            return any(o == offset and abs(p[0] - point[0]) < 0.25 and abs(p[1] - point[1]) < 0.06
                       for p, o in placed)
        offset = next((c for c in candidates if not clashes(c)), candidates[0])
        placed.append((point, offset))
        out[name] = offset
    return out


def line_chart(x: list[float], series: dict[str, list[float | None]], xlabel: str, ylabel: str,
               title: str = "") -> str:
    """Lines with markers over a shared x, e.g. accuracy vs attack epsilon per model; legend beside the axes.

    Parameters
    ----------
    x : list of float
        Shape (n,), the shared x values (no None).
    series : dict[str, list of float or None]
        ``series[model]``, shape (n,), one y per x; None leaves a gap in that line.
    xlabel, ylabel : str
        Axis labels with units.
    title : str, optional

    Returns
    -------
    str
        ``<svg ...>...</svg>``.

    Examples
    --------
    >>> svg = line_chart([0.0, 0.01, 0.03], {"teacher": [0.95, 0.7, 0.2], "student": [0.9, None, 0.1]},
    ...                  "epsilon (L-inf)", "accuracy")
    >>> svg.endswith("</svg>")
    True
    """
    xs = _values(x, "x")
    if len(xs) == 0 or np.isnan(xs).any():
        fail("x", "a non-empty list of numbers", repr(x))
    _mapping(series, "series", "y-value lists keyed by series name")
    xlabel, ylabel, title = _text(xlabel, "xlabel"), _text(ylabel, "ylabel"), _text(title, "title")
    ys = {name: _values(y, f"series[{name!r}]", len(xs), "x value") for name, y in series.items()}

    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(4.5, 3.5), layout="constrained")
        ax = fig.add_subplot()
        handles = [ax.plot(xs, y, marker=_MARKERS[i % len(_MARKERS)], ms=4, lw=1.3)[0]
                   for i, y in enumerate(ys.values())]
        _legend_beside(ax, handles, list(ys))
        ax.grid(alpha=0.3, lw=0.5)
        if all(float(v).is_integer() for v in xs):  # counts (steps, facts): no 1.5 on the axis
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return _finish(fig, ax, title, xlabel, ylabel)


def bar_chart(categories: list[str], series: dict[str, list[float | None]], ylabel: str, title: str = "",
              intervals: dict[str, tuple[list[float | None], list[float | None]]] | None = None) -> str:
    """Grouped bars: one group per category, one bar per series, each with its interval when given; legend beside
    the axes.

    Parameters
    ----------
    categories : list of str
        Shape (n,), the groups along x, e.g. difficulty levels or classes.
    series : dict[str, list of float or None]
        ``series[model]``, shape (n,), one value per category; None draws no bar.
    ylabel : str
        Axis label with units.
    title : str, optional
    intervals : dict[str, (list, list)], optional
        ``intervals[model]``: the (low, high) ends of each bar's interval, shape (n,) each, drawn as an error bar
        (None: none for that bar); the bar must lie within its interval.

    Returns
    -------
    str
        ``<svg ...>...</svg>``.

    Examples
    --------
    >>> svg = bar_chart(["easy", "hard"], {"teacher": [0.98, 0.81], "student": [0.97, None]}, "accuracy")
    >>> "hard" in svg
    True
    """
    categories = _names(categories, "categories")
    _mapping(series, "series", "value lists keyed by series name")
    ylabel, title = _text(ylabel, "ylabel"), _text(title, "title")
    ys = {name: _values(y, f"series[{name!r}]", len(categories), "category") for name, y in series.items()}
    ends = {name: _interval_ends(value, name, ys, len(categories)) for name, value in (intervals or {}).items()}

    width = 0.8 / len(ys)
    centres = np.arange(len(categories))  # (n,)
    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(4.5, 3.5), layout="constrained")
        ax = fig.add_subplot()
        handles = []
        for i, (name, y) in enumerate(ys.items()):
            keep = ~np.isnan(y)
            offsets = centres - 0.4 + width * (i + 0.5)
            ax.bar(offsets[keep], y[keep], width, color=f"C{i % 10}", edgecolor="white", lw=0.4)
            if name in ends:
                low, high = ends[name]
                drawn = keep & ~np.isnan(low) & ~np.isnan(high)
                ax.errorbar(offsets[drawn], y[drawn], yerr=[y[drawn] - low[drawn], high[drawn] - y[drawn]],
                            fmt="none", ecolor="#333333", elinewidth=0.8, capsize=2)
            handles.append(Patch(color=f"C{i % 10}"))  # a proxy: a series with no bars still gets its entry
        long_names = max(len(c) for c in categories) > 8 or sum(len(c) + 2 for c in categories) > 36
        ax.set_xticks(centres, categories, rotation=30 if long_names else 0, ha="right" if long_names else "center")
        ax.axhline(0.0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3, lw=0.5)
        _legend_beside(ax, handles, list(ys))
        return _finish(fig, ax, title, "", ylabel)


def _interval_ends(value, name: str, ys: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of series ``name``'s intervals, shape (n,) each, NaN where missing; each holding its bar."""
    if name not in ys:
        fail(f"intervals key {name!r}", f"one of the series ({', '.join(map(repr, ys))})", repr(name))
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        fail(f"intervals[{name!r}]", "a (low, high) pair of lists", type(value).__name__, error=TypeError)
    low, high = (_values(v, f"intervals[{name!r}][{j}]", n, "category") for j, v in enumerate(value))
    y = ys[name]
    outside = ~np.isnan(low) & ~np.isnan(high) & ~np.isnan(y) & ((low > y + 1e-12) | (high < y - 1e-12))
    if outside.any():
        j = int(np.flatnonzero(outside)[0])
        fail(f"intervals[{name!r}]", "intervals that hold their bar", f"[{low[j]}, {high[j]}] around {y[j]}")
    return low, high


def histogram(edges: list[float], counts: list[float], xlabel: str, ylabel: str = "count", title: str = "",
              marks: dict[str, float] | None = None) -> str:
    """Counts over bins (bars spanning each bin's edges), with labelled dashed vertical lines at ``marks``, e.g. the
    thresholds that cut the axis into classes.

    Parameters
    ----------
    edges : list of float
        Shape (n_bins + 1,), non-decreasing bin edges.
    counts : list of float
        Shape (n_bins,), non-negative count (or weight) per bin.
    xlabel, ylabel : str
        Axis labels with units.
    title : str, optional
    marks : dict[str, float], optional
        ``marks[label] = x``: a dashed vertical line at x, named in the legend.

    Returns
    -------
    str
        ``<svg ...>...</svg>``.

    Examples
    --------
    >>> svg = histogram([0.0, 0.5, 1.0], [3, 7], "r", marks={"low 0.3": 0.3})
    >>> "low 0.3" in svg
    True
    """
    bins = _values(edges, "edges")
    if len(bins) < 2 or np.isnan(bins).any() or (np.diff(bins) < 0).any():
        fail("edges", "at least 2 non-decreasing numbers (n_bins + 1 bin edges)", repr(edges))
    heights = _values(counts, "counts", len(bins) - 1, "bin")
    if np.isnan(heights).any() or (heights < 0).any():
        fail("counts", "non-negative numbers", repr(counts))
    xlabel, ylabel, title = _text(xlabel, "xlabel"), _text(ylabel, "ylabel"), _text(title, "title")
    lines = {name: float(_values([x], f"marks[{name!r}]")[0]) for name, x in
             (_mapping(marks, "marks", "x positions keyed by label") if marks is not None else {}).items()}
    if any(math.isnan(x) for x in lines.values()):
        fail("marks", "numbers", repr(marks))

    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(4.5, 3.2), layout="constrained")
        ax = fig.add_subplot()
        ax.bar(bins[:-1], heights, np.diff(bins), align="edge", color="C0", edgecolor="white", lw=0.4)
        handles = [ax.axvline(x, ls="--", lw=1.0, color=f"C{3 + i % 7}") for i, x in enumerate(lines.values())]
        if handles:
            _legend_beside(ax, handles, list(lines))
        if bins[-1] > bins[0]:
            ax.set_xlim(bins[0], bins[-1])
        ax.grid(axis="y", alpha=0.3, lw=0.5)
        return _finish(fig, ax, title, xlabel, ylabel)


def scatter(groups: dict[str, list[tuple[float | None, float | None]]], xlabel: str, ylabel: str, title: str = "",
            colors: dict[str, str] | None = None, muted: Sequence[str] = (), vline: float | None = None,
            hline: float | None = None) -> str:
    """Points in named groups (one marker and colour per group, legend beside the axes), with optional dashed
    threshold lines.

    Parameters
    ----------
    groups : dict[str, list of (x, y)]
        ``groups[name]``: its points; a point with a None coordinate is left out, a group may be empty (it keeps
        its legend entry).
    xlabel, ylabel : str
        Axis labels with units.
    title : str, optional
    colors : dict[str, str], optional
        A matplotlib colour per group name (others take the colour cycle).
    muted : list of str, optional
        Group names drawn small, grey and behind the others (a baseline).
    vline, hline : float, optional
        A dashed vertical line at x = ``vline``, a horizontal one at y = ``hline`` (thresholds).

    Returns
    -------
    str
        ``<svg ...>...</svg>``.

    Examples
    --------
    >>> svg = scatter({"real": [(0.1, 0.2)], "baseline": [(0.9, 1.0), (None, 1.1)]}, "nu_error",
    ...               "nu_reconstruction", colors={"real": "tab:green"}, muted=["baseline"], vline=0.5, hline=0.5)
    >>> "baseline" in svg
    True
    """
    _mapping(groups, "groups", "point lists keyed by group name")
    xlabel, ylabel, title = _text(xlabel, "xlabel"), _text(ylabel, "ylabel"), _text(title, "title")
    muted = _names(list(muted), "muted", allow_empty=True)
    colors = dict(_mapping(colors, "colors", "matplotlib colours keyed by group name")) if colors else {}
    for name in [*muted, *colors]:
        if name not in groups:
            fail(f"group {name!r}", f"one of the groups ({', '.join(map(repr, groups))})", repr(name))
    for name, colour in colors.items():
        if not mpl.colors.is_color_like(colour):
            fail(f"colors[{name!r}]", "a matplotlib colour", repr(colour))
    xy = {}
    for name, points in groups.items():
        if isinstance(points, (str, bytes)) or not isinstance(points, Sequence):
            fail(f"groups[{name!r}]", "a list of (x, y) points", type(points).__name__, error=TypeError)
        coords = np.array([_values(p, f"groups[{name!r}][{i}]", 2, "coordinate (x, y)")
                           for i, p in enumerate(points)]).reshape(-1, 2)  # (n, 2)
        xy[name] = coords[~np.isnan(coords).any(axis=1)]
    lines = [(_values([v], which)[0], which) for v, which in ((vline, "vline"), (hline, "hline")) if v is not None]
    if any(math.isnan(v) for v, _ in lines):
        fail("vline` / `hline", "numbers or None", repr((vline, hline)))

    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(4.8, 3.6), layout="constrained")
        ax = fig.add_subplot()
        handles = []
        for i, (name, points) in enumerate(xy.items()):
            style = ({"s": 12, "color": "0.65", "zorder": 1} if name in muted else
                     {"s": 26, "color": colors.get(name, f"C{i % 10}"), "edgecolor": "black", "lw": 0.4, "zorder": 3})
            handles.append(ax.scatter(points[:, 0], points[:, 1], marker=_MARKERS[i % len(_MARKERS)], **style))
        for value, which in lines:
            (ax.axvline if which == "vline" else ax.axhline)(value, ls="--", lw=0.9, color="0.3", zorder=2)
        _legend_beside(ax, handles, list(xy))
        ax.grid(alpha=0.3, lw=0.5)
        return _finish(fig, ax, title, xlabel, ylabel)
