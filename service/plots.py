"""PNG plots of a sweep's result rows: a metric against a varied field, and accuracy against time.

The rows are the flat dicts of `service.results.sweep_rows`, one per job. A series is one
line of a plot: the row's `method` label plus the values of the varied columns that are
neither the x axis nor `seed`. Repeats of one point are drawn as their median, with error
bars from the minimum to the maximum. Only succeeded jobs with a finite value are drawn;
the figure's footnote counts the jobs left out.

Each plot builds its own matplotlib `Figure` on the Agg canvas and never touches pyplot,
so the API can render plots from its worker threads.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
from collections import defaultdict
from typing import Any, Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from service.results import METRICS, metric_columns

logger = logging.getLogger(__name__)

# matplotlib documents no thread safety even for separate Figure objects (its font cache
# and text layout are shared), so rendering is serialised. One plot of 4 rows took 0.2 s
# and one of 2000 rows 0.6 s on a 2-core VM.
_RENDER_LOCK = threading.Lock()

FIGURE_SIZE_IN = (8.0, 5.0)
DPI = 100
# Up to this many distinct x values each get a tick of their own.
MAX_LABELLED_X = 12
# Up to this many series share the axes with their legend; more get it below the axes.
MAX_INSIDE_LEGEND = 4

METRIC_LABELS = {
    "box_max_log10": "max log10 Euler error (box)",
    "box_mean_log10": "mean log10 Euler error (box)",
    "path_max_log10": "max log10 Euler error (path)",
    "path_mean_log10": "mean log10 Euler error (path)",
    "path_share_outside": "share of path points outside the box",
    "closed_form_max_rel": "max relative distance of k' to the closed form",
    "setup_s": "setup time (s)",
    "solve_s": "solve time (s)",
    "evaluate_s": "evaluation time (s)",
    "total_s": "total time (s)",
    "solve_cpu_s": "solve CPU time (s)",
    "n_params": "parameter count K",
    "n_conditions": "number of conditions M",
    "condition_number": "condition number",
    "iterations": "iterations",
    "peak_memory_mb": "peak memory (MiB)",
    "peak_gpu_memory_mb": "peak GPU memory (MiB)",
}

# Figures of the savings model's error sets, flattened as box_<name> and path_<name>.
SET_FIELD_LABELS = {
    "n_points": "points scored",
    "n_interior": "interior points",
    "n_binding": "points where the borrowing limit binds",
    "n_infeasible": "infeasible points",
    "n_invalid": "invalid points",
    "binding_max": "max complementarity error at binding points",
    "binding_mean": "mean complementarity error at binding points",
}

# Metrics whose values are positive and span orders of magnitude; the log10 Euler errors
# are logarithms already.
LOG_Y_METRICS = frozenset({"setup_s", "solve_s", "evaluate_s", "total_s", "solve_cpu_s",
                           "n_params", "n_conditions", "condition_number", "peak_memory_mb",
                           "peak_gpu_memory_mb", "closed_form_max_rel"})

FIELD_LABELS = {"n_params": "parameter count K", "n_conditions": "number of conditions M",
                "method": "method", "seed": "seed", "dimension": "state dimension d"}

# x choices beyond the varied fields: result columns that describe a method's or model's size.
EXTRA_X = ("n_params", "dimension")


def metric_label(metric: str) -> str:
    """Return the axis label of a metric in words, e.g. "solve time (s)"."""
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]

    for prefix, where in (("box_", "box"), ("path_", "path")):
        if metric.startswith(prefix):
            name = metric[len(prefix):]
            words = SET_FIELD_LABELS.get(name, name.replace("_", " "))
            return f"{words} ({where})"

    return metric.replace("_", " ")


def field_label(path: str) -> str:
    """Return the axis label of a varied field: its last name, then the dotted path."""
    if path in FIELD_LABELS:
        return FIELD_LABELS[path]
    last = path.rsplit(".", 1)[-1].replace("_", " ")
    return last if last == path else f"{last} ({path})"


def valid_metrics(rows: list[dict]) -> list[str]:
    """Return the metrics a plot may use: `METRICS`, then the other numeric result columns of
    rows (peak GPU memory, the savings model's error-set extras)."""
    return list(METRICS) + [column for column in metric_columns(rows) if column not in METRICS]


def x_choices(varied: list[str]) -> list[str]:
    """Return the fields a plot may use as x: the varied fields except seed, then n_params."""
    fields = [path for path in varied if path != "seed"]
    return fields + [extra for extra in EXTRA_X if extra not in fields]


def numeric_fields(rows: list[dict], varied: list[str]) -> list[str]:
    """Return the varied fields (seed excepted) whose values are all numbers, in varied order."""
    fields = []
    for path in varied:
        if path == "seed":
            continue
        values = [row.get(path) for row in rows if row.get(path) is not None]
        if values and all(_is_number(value) for value in values):
            fields.append(path)
    return fields


def default_x(rows: list[dict], varied: list[str]) -> str:
    """Return the first numeric varied field, else n_params."""
    numeric = numeric_fields(rows, varied)
    return numeric[0] if numeric else "n_params"


def check_metric(metric: str, rows: list[dict]) -> None:
    """Raise ValueError naming the valid metrics unless metric is one of them."""
    choices = valid_metrics(rows)
    if metric not in choices:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(choices)}")


def check_x(x: str, varied: list[str]) -> None:
    """Raise ValueError naming the valid x fields unless x is one of them."""
    choices = x_choices(varied)
    if x not in choices:
        raise ValueError(f"unknown x field {x!r}; valid x fields for this sweep: {', '.join(choices)}")


def metric_plot(rows: list[dict], metric: str, x: str, varied: list[str],
                title: str | None = None) -> bytes:
    """Render metric against x, one line per series, as PNG bytes.

    The axis scales are those of metric_scales: log y for times, memory and counts, log x
    for n_params and for a numeric x spanning more than a factor 10. A non-numeric x (a
    method label, a basis kind) is drawn as categories in the sweep's order.
    Raises ValueError for an unknown metric or x, naming the valid choices.
    """
    check_metric(metric, rows)
    check_x(x, varied)
    plotted = _plotted_rows(rows, metric, x)
    numeric_x = all(_is_number(row.get(x)) for row in plotted)
    series = _series_points(plotted, metric, x, varied, series_exclude(rows, x, varied), numeric_x)
    x_scale, y_scale = metric_scales(rows, metric, x)

    with _RENDER_LOCK:
        figure, axes = _new_figure(title or f"{metric_label(metric)} against {field_label(x)}")
        axes.set_xlabel(field_label(x))
        axes.set_ylabel(metric_label(metric))
        if not series:
            _say_no_data(axes, len(rows), metric_label(metric))
        elif numeric_x:
            _draw_numeric(axes, series, x_scale, y_scale)
        else:
            _draw_categories(axes, series, [_format(row.get(x)) for row in plotted], y_scale)
        _footnote(figure, len(rows), len(plotted))
        return _png(figure)


def metric_scales(rows: list[dict], metric: str, x: str) -> tuple[str, str]:
    """Return the x and y axis scales ("log" or "linear") that metric_plot uses.

    x is "log" when its plotted values are all positive numbers and either x is n_params
    or dimension (so that time ~ x^b is a line) or they span more than a factor 10. y is "log" for a metric in LOG_Y_METRICS whose
    plotted values are all positive and span more than a factor 10; over a narrower span
    a linear axis is easier to read.
    """
    plotted = _plotted_rows(rows, metric, x)
    x_values = [float(row[x]) for row in plotted if _is_number(row[x])]
    y_values = [_number(row[metric]) for row in plotted]

    numeric_x = bool(plotted) and len(x_values) == len(plotted)
    x_log = numeric_x and min(x_values) > 0 and (x in EXTRA_X or _spans_decade(x_values))
    y_log = metric in LOG_Y_METRICS and _spans_decade(y_values)
    return ("log" if x_log else "linear"), ("log" if y_log else "linear")


def _spans_decade(values: list[float]) -> bool:
    """Return True when values are all positive and the largest is over 10 times the smallest."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def frontier_plot(rows: list[dict], varied: list[str], accuracy: str = "box_max_log10",
                  time: str = "solve_s", title: str | None = None) -> bytes:
    """Render accuracy against time for every configuration, with each series' frontier, as PNG.

    A configuration is one point of the grid; its repeats become their median. A series
    merges the numeric method settings (degree, width) and keeps the rest apart, so its
    frontier is the line through the configurations that no faster configuration of the
    same series beats in accuracy (lower is better).
    Raises ValueError for an unknown accuracy or time metric, naming the valid choices.
    """
    check_metric(accuracy, rows)
    check_metric(time, rows)
    plotted = [row for row in rows if _usable(row, accuracy) and _usable(row, time)]
    merged = {path for path in numeric_fields(rows, varied) if path.startswith("method.")}
    points = _frontier_points(plotted, varied, accuracy, time, merged | {"seed"})

    with _RENDER_LOCK:
        figure, axes = _new_figure(title or f"{metric_label(accuracy)} against {metric_label(time)}")
        axes.set_xlabel(metric_label(time))
        axes.set_ylabel(metric_label(accuracy))
        if not points:
            _say_no_data(axes, len(rows), f"{metric_label(accuracy)} and {metric_label(time)}")
        else:
            _draw_frontiers(axes, points, time)
        _footnote(figure, len(rows), len(plotted))
        return _png(figure)


def loglog_slopes(rows: list[dict], x: str, varied: list[str],
                  metric: str = "solve_s") -> dict[str, float | None]:
    """Return, per series, the least-squares slope b of log(metric) = a + b log(x).

    Repeats of one x become their median first. A series with fewer than two distinct
    positive x values, or no positive metric value at them, gets None. Time that grows
    as x^b gives slope b: 1 for linear cost, 3 for a dense solve in K unknowns.
    Raises ValueError for an unknown metric or x, or a non-numeric x.
    """
    check_metric(metric, rows)
    check_x(x, varied)
    if x not in EXTRA_X and x not in numeric_fields(rows, varied):
        raise ValueError(f"x field {x!r} is not numeric, so it has no log-log slope; numeric "
                         f"x fields: {', '.join(numeric_fields(rows, varied) + list(EXTRA_X))}")

    exclude = series_exclude(rows, x, varied)
    slopes: dict[str, float | None] = {}
    for label in dict.fromkeys(series_label(row, varied, exclude) for row in rows):
        slopes[label] = None
    fitted = [row for row in rows if _usable(row, metric) and _is_number(row.get(x))]
    for label, by_x in _series_points(fitted, metric, x, varied, exclude).items():
        slopes[label] = _fit_slope(by_x)
    return slopes


def series_label(row: dict, varied: list[str], exclude: Iterable[str]) -> str:
    """Return the series name of a row: its method label, then the varied values not excluded."""
    exclude = set(exclude)
    parts = [] if "method" in exclude else [str(row.get("method"))]
    for path in varied:
        if path in exclude or path in ("seed", "method"):
            continue
        parts.append(f"{_short_name(path, varied)}={_format(row.get(path))}")
    return ", ".join(parts)


def series_exclude(rows: list[dict], x: str, varied: list[str]) -> set[str]:
    """Return the varied fields that do not split series when plotting against x.

    These are x itself and seed. Against n_params and dimension, the numeric method
    settings (degree, width) are merged too, because they are what moves the parameter
    count. Against dimension, so is each varied field whose values match the dimensions
    one to one (the number of countries).
    """
    exclude = {x, "seed"}
    if x in EXTRA_X:
        exclude |= {path for path in numeric_fields(rows, varied) if path.startswith("method.")}
    if x == "dimension":
        exclude |= {path for path in varied if path != "method" and _matches_one_to_one(rows, path, x)}
    return exclude


def _matches_one_to_one(rows: list[dict], path: str, x: str) -> bool:
    """Return True when the values of path and of x in rows determine each other."""
    pairs = {(_format(row.get(path)), _format(row.get(x))) for row in rows}
    return len(pairs) == len({value for value, _ in pairs}) == len({other for _, other in pairs})


def _series_points(rows: list[dict], metric: str, x: str, varied: list[str], exclude: set[str],
                   numeric_x: bool = True) -> dict[str, dict[Any, list[float]]]:
    """Group metric values by series label, then by x value (its text when not numeric_x)."""
    series: dict[str, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = row[x] if numeric_x else _format(row[x])
        series[series_label(row, varied, exclude)][key].append(_number(row[metric]))
    return series


def _frontier_points(rows: list[dict], varied: list[str], accuracy: str, time: str,
                     merged: set[str]) -> dict[str, list[tuple[float, float]]]:
    """Return, per series, one (median time, median accuracy) point per configuration."""
    configurations: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        key = (series_label(row, varied, merged), series_label(row, varied, {"seed"}))
        configurations[key].append((_number(row[time]), _number(row[accuracy])))

    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (label, _), values in configurations.items():
        times, errors = zip(*values)
        points[label].append((float(np.median(times)), float(np.median(errors))))
    return points


def _fit_slope(by_x: dict[Any, list[float]]) -> float | None:
    """Return the log-log slope through the medians at each positive x, or None."""
    pairs = [(float(x), float(np.median(values))) for x, values in by_x.items()]
    pairs = [(x, y) for x, y in pairs if x > 0 and y > 0]
    if len({x for x, _ in pairs}) < 2:
        return None
    log_x, log_y = np.log([x for x, _ in pairs]), np.log([y for _, y in pairs])
    return float(np.polyfit(log_x, log_y, 1)[0])


def _draw_numeric(axes, series: dict[str, dict[Any, list[float]]], x_scale: str, y_scale: str) -> None:
    """Draw one line with min-max error bars per series over a numeric x."""
    for label, by_x in series.items():
        xs = sorted(by_x)
        medians, lows, highs = _median_and_spread(by_x, xs)
        axes.errorbar(xs, medians, yerr=[lows, highs], marker="o", capsize=3, label=label)

    axes.set_xscale(x_scale)
    axes.set_yscale(y_scale)
    distinct_x = sorted({float(value) for by_x in series.values() for value in by_x})
    if len(distinct_x) <= MAX_LABELLED_X and _well_spaced(distinct_x, x_scale):
        # Tick at the swept values themselves, written plainly (8, not 8 x 10^0).
        axes.set_xticks(distinct_x, [f"{value:g}" for value in distinct_x])
        axes.xaxis.set_minor_locator(NullLocator())
    elif x_scale == "linear" and all(value.is_integer() for value in distinct_x):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(axes, series)


def _well_spaced(values: list[float], x_scale: str) -> bool:
    """Return True when sorted values lie far enough apart on the axis (a 25th of its span)
    for a tick label at each of them not to overlap the next."""
    positions = np.log10(values) if x_scale == "log" else np.asarray(values, dtype=float)
    span = positions[-1] - positions[0]
    return len(values) < 2 or span == 0 or bool(np.min(np.diff(positions)) >= span / 25)


def _draw_categories(axes, series: dict[str, dict[Any, list[float]]], categories: list[str],
                     y_scale: str) -> None:
    """Draw one line per series over categories placed at 0, 1, ... in first-seen order."""
    order = list(dict.fromkeys(categories))
    for label, by_x in series.items():
        xs = [value for value in order if value in by_x]
        medians, lows, highs = _median_and_spread(by_x, xs)
        positions = [order.index(value) for value in xs]
        axes.errorbar(positions, medians, yerr=[lows, highs], marker="o", capsize=3, label=label)

    axes.set_yscale(y_scale)
    axes.set_xticks(range(len(order)))
    axes.set_xticklabels(order, rotation=20, ha="right", fontsize="small")
    _legend(axes, series)


def _legend(axes, series: dict[str, Any], **options: Any) -> None:
    """Add a legend unless the only series has no name (x is the method itself).

    More than MAX_INSIDE_LEGEND series get the legend below the axes, in two columns, where it
    hides no line.
    """
    if not any(series):
        return
    if len(series) > MAX_INSIDE_LEGEND:
        axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
                    **options)
    else:
        axes.legend(fontsize="small", loc="best", **options)


def _median_and_spread(by_x: dict[Any, list[float]], xs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the medians at xs and their distances down to the minimum and up to the maximum."""
    medians = np.array([np.median(by_x[value]) for value in xs])
    lows = medians - np.array([min(by_x[value]) for value in xs])
    highs = np.array([max(by_x[value]) for value in xs]) - medians
    return medians, lows, highs


def pareto_frontier(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Return, sorted by time, the (time, error) points that no faster point beats in error."""
    frontier: list[tuple[float, float]] = []
    best = math.inf
    for point_time, error in sorted(points):
        if error < best:
            frontier.append((point_time, error))
            best = error
    return frontier


def _draw_frontiers(axes, points: dict[str, list[tuple[float, float]]], time: str) -> None:
    """Draw every configuration as a dot and each series' frontier as a line through its best."""
    for label, series_points in points.items():
        line = axes.plot(*zip(*pareto_frontier(series_points)), marker="o", label=label)[0]
        axes.scatter(*zip(*series_points), color=line.get_color(), alpha=0.5, s=24)

    if time in LOG_Y_METRICS and _spans_decade([t for values in points.values() for t, _ in values]):
        axes.set_xscale("log")
    _legend(axes, points, title="frontier per series", title_fontsize="small")


def _new_figure(title: str):
    """Return a Figure on the Agg canvas and its one Axes, titled and gridded."""
    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title, fontsize="medium")
    axes.grid(True, which="major", alpha=0.3)
    return figure, axes


def _say_no_data(axes, n_rows: int, what: str) -> None:
    """Write in the axes that no succeeded job has a value to draw."""
    jobs = "job" if n_rows == 1 else "jobs"
    axes.text(0.5, 0.5, f"No data yet: none of the sweep's {n_rows} {jobs} succeeded with a value of\n{what}",
              ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])


def _footnote(figure, n_rows: int, n_plotted: int) -> None:
    """Count the jobs left out in the figure's lower left corner."""
    if n_plotted < n_rows:
        figure.text(0.01, 0.01, f"{n_rows - n_plotted} of {n_rows} jobs left out: not succeeded or no value",
                    fontsize="x-small", color="0.35")


def _png(figure) -> bytes:
    """Return the figure as PNG bytes."""
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _plotted_rows(rows: list[dict], metric: str, x: str) -> list[dict]:
    """Return the rows that metric_plot draws: succeeded, with a finite metric and an x value."""
    return [row for row in rows if _usable(row, metric) and row.get(x) is not None]


def _usable(row: dict, metric: str) -> bool:
    """Return True when the row's job succeeded and metric has a finite value."""
    return row.get("status") == "succeeded" and _number(row.get(metric)) is not None


def _number(value: Any) -> float | None:
    """Return value as a finite float (a bool as 0 or 1), else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _is_number(value: Any) -> bool:
    """Return True for an int or a finite float, but not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _short_name(path: str, varied: list[str]) -> str:
    """Return the last name of a dotted path, or the whole path when another field shares it."""
    last = path.rsplit(".", 1)[-1]
    clashes = [other for other in varied if other != path and other.rsplit(".", 1)[-1] == last]
    return path if clashes else last


def _format(value: Any) -> str:
    """Return a compact text form of a varied value: numbers with %g, lists and dicts as JSON."""
    if _is_number(value) and not isinstance(value, int):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)
