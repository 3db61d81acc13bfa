"""Server-rendered HTML: a sweep's results page and the index of recent sweeps and jobs.

Every value that reaches the HTML passes through `html.escape`, because names, labels
and spec values are user input. The pages need no build step: inline CSS and a short
inline script that sorts tables, reloads a running sweep's page and records on <body>
whether every image loaded (the browser test reads `data-images-loaded` and
`data-images-failed`).
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any, Iterable
from urllib.parse import quote, urlencode

from service.plots import (field_label, loglog_slopes, metric_label, numeric_fields,
                           valid_metrics, x_choices)
from solvers.record import JobRecord

REFRESH_S = 5

# Metrics drawn against each numeric varied field on the results page.
PAGE_METRICS = ("box_max_log10", "path_max_log10", "solve_s", "peak_memory_mb", "n_params")

# Columns shown even when empty in every row.
ALWAYS_SHOWN = ("index", "job_id", "repeat", "seed", "status", "method")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; }
table.sortable th { cursor: pointer; user-select: none; }
th[data-order="asc"]::after { content: " \\25B2"; } th[data-order="desc"]::after { content: " \\25BC"; }
td.text { text-align: left; }
.status-succeeded { color: #176917; } .status-failed, .status-diverged, .status-timed_out { color: #b00020; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } .plots img { width: 560px; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.muted { color: #666; } .scroll { overflow-x: auto; }
"""

SCRIPT = """
function sortTable(header) {
  const table = header.closest("table");
  const column = Array.from(header.parentNode.children).indexOf(header);
  const ascending = header.dataset.order !== "asc";
  table.querySelectorAll("th").forEach(other => { delete other.dataset.order; });
  header.dataset.order = ascending ? "asc" : "desc";
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const key = row => {
    const cell = row.cells[column];
    return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  };
  const numeric = rows.every(row => key(row) === "" || !isNaN(Number(key(row))));
  rows.sort((a, b) => {
    const first = key(a), second = key(b);
    if (first === "" || second === "") { return (first === "") - (second === ""); }
    const order = numeric ? Number(first) - Number(second)
                          : first.localeCompare(second, undefined, {numeric: true});
    return ascending ? order : -order;
  });
  rows.forEach(row => body.appendChild(row));
}

document.querySelectorAll("table.sortable th").forEach(header => {
  header.addEventListener("click", () => sortTable(header));
});

const picker = document.getElementById("plot-picker");
if (picker) {
  picker.addEventListener("change", () => {
    const metric = encodeURIComponent(picker.elements.metric.value);
    const x = encodeURIComponent(picker.elements.x.value);
    document.getElementById("picked-plot").src = picker.dataset.base + metric + ".png?x=" + x;
  });
}

window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const failed = images.filter(image => !image.complete || image.naturalWidth === 0);
  document.body.dataset.imagesLoaded = String(images.length - failed.length);
  document.body.dataset.imagesFailed = String(failed.length);
});

if (document.body.dataset.refreshS) {
  setTimeout(() => location.reload(), 1000 * Number(document.body.dataset.refreshS));
}
"""


def render_sweep_page(sweep: dict, rows: list[dict]) -> str:
    """Return the results page of a sweep: status, plots, slopes, the sortable table and the spec.

    The page reloads itself every REFRESH_S seconds while the sweep is running, or while
    jobs of a cancelled sweep still run.
    """
    varied = list(sweep.get("varied") or [])
    name = sweep.get("name") or sweep["id"]
    refresh = f' data-refresh-s="{REFRESH_S}"' if _jobs_pending(sweep) else ""
    sections = [
        f"<h1>Sweep {escape(str(name))}</h1>",
        _sweep_summary(sweep),
        "<h2>Plots</h2>",
        _plots(sweep["id"], rows, varied),
        "<h2>Log-log slope of solve time</h2>",
        _slopes(rows, varied),
        f"<h2>Results ({len(rows)} jobs)</h2>",
        _results_table(rows, varied),
        "<h2>Spec</h2>",
        f"<pre>{escape(json.dumps(_spec(sweep), indent=2, default=str))}</pre>",
    ]
    body_attributes = f'data-sweep-status="{escape(str(sweep.get("status")))}"{refresh}'
    return _page(f"eulerbench sweep {name}", "\n".join(sections), body_attributes)


def render_index(sweeps: list[dict], jobs: list[JobRecord]) -> str:
    """Return the index page: recent sweeps with links to their pages, and recent jobs."""
    sweep_rows = [[_link(f"/sweeps/{sweep['id']}", sweep.get("name") or sweep["id"][:12]),
                   _cell(sweep.get("status"), css=f"status-{sweep.get('status')}"),
                   _cell(f"{100 * float(sweep.get('progress') or 0):.0f}%"),
                   _cell(len(sweep.get("job_ids") or [])),
                   _cell(_counts_text(sweep.get("counts") or {})),
                   _cell(sweep.get("created_at"))] for sweep in sweeps]
    job_rows = [[_link(f"/v1/jobs/{job.id}", job.id[:12]),
                 _cell(job.status, css=f"status-{job.status}"),
                 _cell(job.spec.label or job.spec.summary()),
                 _cell(job.spec.model.name),
                 _cell(job.errors.box.max_log10 if job.errors else None),
                 _cell(job.timings.solve_s if job.timings else None),
                 _cell(job.created_at.isoformat(timespec="seconds"))] for job in jobs]

    sections = [
        "<h1>eulerbench</h1>",
        '<p class="muted">API reference: <a href="/docs">/docs</a>.</p>',
        "<h2>Recent sweeps</h2>",
        _table(["sweep", "status", "progress", "jobs", "counts", "created"], sweep_rows)
        if sweep_rows else "<p>No sweeps yet.</p>",
        "<h2>Recent jobs</h2>",
        _table(["job", "status", "name", "model", "max log10 error (box)", "solve time (s)", "created"],
               job_rows) if job_rows else "<p>No jobs yet.</p>",
    ]
    return _page("eulerbench", "\n".join(sections))


def render_not_found(message: str) -> str:
    """Return a small page for a sweep that does not exist."""
    return _page("not found", f'<h1>Not found</h1><p>{escape(message)}</p><p><a href="/">All sweeps</a></p>')


def plot_url(sweep_id: str, metric: str, x: str | None = None) -> str:
    """Return the path of a plot endpoint, with x as its query."""
    path = f"/v1/sweeps/{quote(sweep_id, safe='')}/plots/{quote(metric, safe='')}.png"
    return f"{path}?{urlencode({'x': x})}" if x else path


def _jobs_pending(sweep: dict) -> bool:
    """Return True while the sweep runs or any of its jobs has not ended."""
    return sweep.get("status") == "running" or float(sweep.get("progress") or 0) < 1


def _sweep_summary(sweep: dict) -> str:
    """Return the status line: id, status, progress, counts by status and creation time."""
    status = str(sweep.get("status"))
    items = [("id", escape(str(sweep["id"]))),
             ("status", f'<span class="status-{escape(status)}">{escape(status)}</span>'),
             ("progress", f"{100 * float(sweep.get('progress') or 0):.0f}% of "
                          f"{len(sweep.get('job_ids') or [])} jobs ended"),
             ("jobs by status", escape(_counts_text(sweep.get("counts") or {}))),
             ("created", escape(str(sweep.get("created_at")))),
             ("submitter", escape(str(sweep.get("submitter") or "none (authentication off)"))),
             ("varied", escape(", ".join(sweep.get("varied") or []) or "nothing"))]
    lines = "".join(f"<li><b>{label}:</b> {value}</li>" for label, value in items)
    return f'<ul>{lines}</ul><p><a href="/">All sweeps</a></p>'


def _plots(sweep_id: str, rows: list[dict], varied: list[str]) -> str:
    """Return the plot images: each page metric against each numeric x, the frontier and a picker."""
    xs = numeric_fields(rows, varied) or ["n_params"]
    images = []
    for x in xs:
        for metric in PAGE_METRICS:
            if metric != x:
                images.append(_image(plot_url(sweep_id, metric, x), f"{metric_label(metric)} against {field_label(x)}"))
    images.append(_image(plot_url(sweep_id, "frontier"), "accuracy against solve time, frontier per series"))

    picker = _picker(sweep_id, rows, varied, xs[0])
    return f'<div class="plots">{"".join(images)}</div>\n{picker}'


def _picker(sweep_id: str, rows: list[dict], varied: list[str], x: str) -> str:
    """Return a form that redraws one image with any metric against any x field."""
    metric_options = "".join(f'<option value="{escape(m)}">{escape(metric_label(m))}</option>'
                             for m in valid_metrics(rows))
    x_options = "".join(f'<option value="{escape(f)}"{" selected" if f == x else ""}>{escape(field_label(f))}</option>'
                        for f in x_choices(varied))
    base = f"/v1/sweeps/{quote(sweep_id, safe='')}/plots/"
    first = valid_metrics(rows)[0]
    return (f'<h2>Any metric against any field</h2>'
            f'<form id="plot-picker" data-base="{escape(base)}">'
            f'<label>metric <select name="metric">{metric_options}</select></label> '
            f'<label>x <select name="x">{x_options}</select></label></form>'
            f'<div class="plots">{_image(plot_url(sweep_id, first, x), "picked plot", "picked-plot")}</div>')


def _image(url: str, alt: str, element_id: str | None = None) -> str:
    """Return an img tag linking to its own full-size PNG."""
    id_attribute = f' id="{escape(element_id)}"' if element_id else ""
    return (f'<a href="{escape(url)}"><img{id_attribute} src="{escape(url)}" alt="{escape(alt)}" '
            f'title="{escape(alt)}"></a>')


def _slopes(rows: list[dict], varied: list[str]) -> str:
    """Return a table of the log-log slope of solve time per series against each numeric x."""
    table_rows = []
    dimensions = {row.get("dimension") for row in rows if row.get("dimension") is not None}
    for x in numeric_fields(rows, varied) + ["n_params"] + (["dimension"] if len(dimensions) > 1 else []):
        slopes = loglog_slopes(rows, x, varied)
        # An x along which no series has two points (K when every N is its own series)
        # would only add rows of "n/a".
        if all(slope is None for slope in slopes.values()):
            continue
        for series, slope in slopes.items():
            shown = _cell(slope, text="n/a: fewer than two points") if slope is None else _cell(round(slope, 3))
            table_rows.append([_cell(series), _cell(field_label(x)), shown])
    note = ('<p class="muted">b in solve time = a x<sup>b</sup>, fitted by least squares on log scales '
            'through the median of the repeats at each x; succeeded jobs only. An x along which '
            'no series has two points is left out.</p>')
    return _table(["series", "x", "slope b"], table_rows) + note


def _results_table(rows: list[dict], varied: list[str]) -> str:
    """Return the sortable table: one row per job, in the rows' column order, leaving out
    columns that are empty in every row."""
    columns = [column for column in (rows[0] if rows else ALWAYS_SHOWN)
               if column in ALWAYS_SHOWN or any(row.get(column) is not None for row in rows)]
    metrics = set(valid_metrics(rows))

    headers = [_header_text(column, metrics, varied) for column in columns]
    table_rows = [[_row_cell(row, column) for column in columns] for row in rows]
    return f'<div class="scroll">{_table(headers, table_rows, css="sortable", element_id="results")}</div>'


def _row_cell(row: dict, column: str) -> str:
    """Return one cell of the results table; the job id links to its record."""
    value = row.get(column)
    if column == "job_id" and value:
        return _link(f"/v1/jobs/{value}", str(value)[:12], sort=str(value))
    if column == "status":
        return _cell(value, css=f"status-{value}")
    return _cell(value)


def _header_text(column: str, metrics: set[str], varied: list[str]) -> str:
    """Return a column header: a metric in words, a varied field as its dotted path."""
    if column in varied:
        return column
    return metric_label(column) if column in metrics else column.replace("_", " ")


def _table(headers: list[str], rows: list[list[str]], css: str = "", element_id: str | None = None) -> str:
    """Return an HTML table; headers are escaped here, cells are already HTML."""
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = "\n".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    attributes = f' class="{css}"' if css else ""
    if element_id:
        attributes += f' id="{element_id}"'
    return f"<table{attributes}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _cell(value: Any, css: str = "", text: str | None = None) -> str:
    """Return a td with the value's text and, for numbers, its exact value in data-sort."""
    classes = [css] if css else []
    sort = ""
    if isinstance(value, bool):
        shown = "yes" if value else "no"
        sort = f' data-sort="{int(value)}"'
    elif isinstance(value, (int, float)):
        shown = _format_number(value)
        sort = f' data-sort="{value!r}"' if math.isfinite(value) else ""
    else:
        shown = "" if value is None else _text_of(value)
        classes.append("text")
    if text is not None:
        shown = text
    class_attribute = f' class="{escape(" ".join(classes))}"' if classes else ""
    return f"<td{class_attribute}{sort}>{escape(shown)}</td>"


def _link(url: str, text: str, sort: str | None = None) -> str:
    """Return a td holding a link."""
    sort_attribute = f' data-sort="{escape(sort)}"' if sort is not None else ""
    return f'<td class="text"{sort_attribute}><a href="{escape(url)}">{escape(str(text))}</a></td>'


def _format_number(value: int | float) -> str:
    """Return an int as it is and a float with four significant digits."""
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _text_of(value: Any) -> str:
    """Return a value as text: lists and dicts as compact JSON."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _counts_text(counts: dict[str, int]) -> str:
    """Return the counts by status as 'succeeded 3, failed 1', leaving out zeros."""
    return ", ".join(f"{status} {number}" for status, number in counts.items() if number) or "none"


def _spec(sweep: dict) -> dict:
    """Return the parts of the sweep record that define it."""
    keys: Iterable[str] = ("name", "base", "grid", "repeats", "seeds", "varied")
    return {key: sweep[key] for key in keys if key in sweep}


def _page(title: str, body: str, body_attributes: str = "") -> str:
    """Return a whole HTML document with the shared style and script."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body {body_attributes}>\n{body}\n<script>{SCRIPT}</script>\n</body></html>\n")
