"""Result rows of a sweep: one flat dict per job, their aggregation over repeats, and writers
to CSV, JSON and Parquet that hold the same rows.

A row starts with `index`, `job_id`, `repeat`, `seed`, `status` and `method`, a short
label such as "chebyshev euler/collocation/newton". One column per varied dotted path
follows, with the value in the job's spec, defaults filled in. It is None where the field
does not apply, such as `method.basis.degree` of a spline. Then come the metrics of
`METRICS` and the extra figures of the error sets as `box_<name>` and `path_<name>` (the
savings model's binding and infeasible points, the multi_country model's Euler and
resource maxima), `sphere_<radius>_max_log10` and `sphere_<radius>_mean_log10` (the
multi_country model's spheres around the steady state) and `closed_form_path_max_rel`.
`dimension`, the number of continuous states d of the job's model (2N for multi_country),
follows the varied paths. Last come `converged`,
`peak_memory_scope`, `peak_gpu_memory_mb`, `hardware` and `worker`. Metrics are None
where a job has not produced them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from typing import Any

from service.batch import format_number, render_table
from solvers.record import JobRecord
from worker.store import JobStore

METRICS = (
    "box_max_log10", "box_mean_log10", "path_max_log10", "path_mean_log10", "path_share_outside",
    "closed_form_max_rel", "setup_s", "solve_s", "evaluate_s", "total_s", "solve_cpu_s",
    "n_params", "n_conditions", "condition_number", "iterations", "peak_memory_mb",
)
HEAD_COLUMNS = ("index", "job_id", "repeat", "seed", "status", "method")
# Prefixes of the error-set columns that are metrics beyond METRICS.
SET_PREFIXES = ("box_", "path_", "sphere_")
TAIL_COLUMNS = ("converged", "peak_memory_scope", "peak_gpu_memory_mb", "hardware", "worker")
# Numeric columns aggregated over repeats besides METRICS and the error-set extras.
EXTRA_METRICS = ("peak_gpu_memory_mb", "closed_form_path_max_rel")
TIMINGS = ("setup_s", "solve_s", "evaluate_s", "total_s", "solve_cpu_s")
NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def sweep_rows(store: JobStore, sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one row per job of the sweep, in expanded order, all with the same keys.

    A job deleted since the sweep ran gives a row with status "deleted" and no figures.
    """
    paths = [path for path in sweep["varied"] if path not in ("seed", "method")]
    records = store.get_many(sweep["job_ids"])
    rows = [_job_row(sweep, index, job_id, record, paths)
            for index, (job_id, record) in enumerate(zip(sweep["job_ids"], records))]
    extras = sorted({key for row in rows for key in row} - set(HEAD_COLUMNS) - set(paths)
                    - set(METRICS) - set(TAIL_COLUMNS) - {"dimension"})
    columns = [*HEAD_COLUMNS, *paths, "dimension", *METRICS, *extras, *TAIL_COLUMNS]
    return [{column: row.get(column) for column in columns} for row in rows]


def _job_row(sweep: dict[str, Any], index: int, job_id: str, record: JobRecord | None,
             paths: list[str]) -> dict[str, Any]:
    """Return the row of one job; record is None when the job was deleted."""
    repeat = index % sweep["repeats"]
    row: dict[str, Any] = {"index": index, "job_id": job_id, "repeat": repeat,
                           "seed": record.spec.seed if record else sweep["seeds"][repeat],
                           "status": record.status if record else "deleted",
                           "method": sweep["method_labels"][index]}
    spec = record.spec.model_dump(mode="json") if record else None
    for path in paths:
        row[path] = _spec_value(spec, path)
    row["dimension"] = _dimension(spec)
    if record is not None:
        row.update(_figures(record))
    return row


def _spec_value(spec: dict[str, Any] | None, path: str) -> Any:
    """Return the spec's value at a dotted path as a scalar: a model block as its name, other
    blocks and lists as compact JSON, None where the path does not exist."""
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict) and path == "model":
        return node.get("name")
    if isinstance(node, (dict, list)):
        return json.dumps(node, separators=(",", ":"), sort_keys=True)
    return node


def _dimension(spec: dict[str, Any] | None) -> int | None:
    """Return the number of continuous states of the spec's model: 2N, 2 (growth) or 1 (savings)."""
    if spec is None:
        return None
    model = spec.get("model") or {}
    if model.get("name") == "multi_country":
        return 2 * int(model["params"]["countries"])
    return 1 if model.get("name") == "savings" else 2


def _figures(record: JobRecord) -> dict[str, Any]:
    """Return the metrics and machine columns of a job record."""
    figures: dict[str, Any] = {}
    errors = record.errors
    if errors is not None:
        for name, block in (("box", errors.box), ("path", errors.path)):
            figures[f"{name}_max_log10"] = block.max_log10
            figures[f"{name}_mean_log10"] = block.mean_log10
            for key, value in (block.model_extra or {}).items():
                figures[f"{name}_{key}"] = value
        for radius, block in (errors.spheres or {}).items():
            figures[f"sphere_{radius}_max_log10"] = block.max_log10
            figures[f"sphere_{radius}_mean_log10"] = block.mean_log10
        figures["path_share_outside"] = errors.path.share_outside_box
        figures["closed_form_max_rel"] = errors.closed_form.max_rel_distance if errors.closed_form else None
        if errors.closed_form is not None and errors.closed_form.path_max_rel_distance is not None:
            figures["closed_form_path_max_rel"] = errors.closed_form.path_max_rel_distance
    if record.timings is not None:
        figures.update(record.timings.model_dump())
    figures.update(n_params=record.n_params, n_conditions=record.n_conditions,
                   condition_number=record.condition_number, iterations=record.iterations,
                   peak_memory_mb=record.peak_memory_mb, converged=record.converged,
                   peak_memory_scope=record.peak_memory_scope,
                   peak_gpu_memory_mb=record.peak_gpu_memory_mb,
                   hardware=_hardware(record), worker=record.worker)
    return figures


def _hardware(record: JobRecord) -> str | None:
    """Return the GPU name for a job that ran on a GPU, else the CPU model."""
    hardware = record.hardware or {}
    on_gpu = record.peak_gpu_memory_mb is not None
    value = hardware.get("gpu") if on_gpu else hardware.get("cpu")
    return None if value is None else str(value)


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Return the numeric result columns of rows: METRICS, the error-set extras and
    peak_gpu_memory_mb, in column order."""
    if not rows:
        return []
    return [column for column in rows[0] if column in METRICS or column in EXTRA_METRICS
            or (column.startswith(SET_PREFIXES) and _numeric_column(rows, column))]


def group_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Return the columns that name a configuration: `method` and the varied paths."""
    if not rows:
        return []
    skipped = set(HEAD_COLUMNS) - {"method"} | set(TAIL_COLUMNS) | set(metric_columns(rows))
    return [column for column in rows[0] if column not in skipped
            and not column.startswith(SET_PREFIXES)]


def aggregate_rows(rows: list[dict[str, Any]], group_by: list[str] | None = None) -> list[dict[str, Any]]:
    """Group the repeats of each configuration and summarise them.

    Rows are grouped by group_by (default: `method` and every varied column, so every
    column but the seed). Each group gives its columns, `n` (jobs), `n_succeeded`,
    `statuses` (e.g. "succeeded 2, failed 1"), and for each metric `<metric>`, the median
    over the succeeded jobs, and `<metric>_spread`, their max minus min (None when no
    job succeeded). NaN values are left out; groups keep their first row's order.
    """
    keys = group_columns(rows) if group_by is None else list(group_by)
    metrics = metric_columns(rows)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(json.dumps(row.get(key), default=str) for key in keys), []).append(row)

    aggregated = []
    for members in groups.values():
        succeeded = [row for row in members if row["status"] == "succeeded"]
        statuses = [row["status"] for row in members]
        summary = {key: members[0].get(key) for key in keys}
        summary.update(n=len(members), n_succeeded=len(succeeded), statuses=", ".join(
            f"{status} {statuses.count(status)}" for status in dict.fromkeys(statuses)))
        for metric in metrics:
            values = [float(row[metric]) for row in succeeded if _is_number(row.get(metric))
                      and not math.isnan(row[metric])]
            summary[metric] = statistics.median(values) if values else None
            summary[f"{metric}_spread"] = max(values) - min(values) if values else None
        aggregated.append(summary)
    return aggregated


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_column(rows: list[dict[str, Any]], column: str) -> bool:
    """Return True when every non-None value of column is an int or a float."""
    return all(_is_number(row.get(column)) for row in rows if row.get(column) is not None)


# Writers. Every writer first gives each column one type (see `column_types`), so the CSV,
# JSON and Parquet files of a sweep hold the same values.

def column_types(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Return the type of each column: "bool", "int", "float" or "string".

    A column whose values are all None is "float" when it is a metric (so that a metric
    no job produced stays numeric), else "string". Ints mixed with floats give "float";
    anything else mixed gives "string".
    """
    metrics = set(metric_columns(rows)) | set(METRICS)
    types = {}
    for column in (rows[0] if rows else {}):
        present = [row[column] for row in rows if row[column] is not None]
        if not present:
            types[column] = "float" if column in metrics or column.endswith("_spread") else "string"
        elif all(isinstance(value, bool) for value in present):
            types[column] = "bool"
        elif all(isinstance(value, int) and not isinstance(value, bool) for value in present):
            types[column] = "int"
        elif all(_is_number(value) for value in present):
            types[column] = "float"
        else:
            types[column] = "string"
    return types


def typed_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Return rows with each value converted to its column's type, and the types."""
    types = column_types(rows)
    converters = {"bool": bool, "int": int, "float": float, "string": _text}
    return [{column: None if value is None else converters[types[column]](value)
             for column, value in row.items()} for row in rows], types


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Return rows as CSV with a header line. None is an empty field, booleans are
    true/false, and non-finite floats are NaN, Infinity and -Infinity."""
    rows, _ = typed_rows(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if rows:
        writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow([_csv_cell(value) for value in row.values()])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _json_float(value) if not math.isfinite(value) else repr(value)
    return str(value)


def _json_float(value: float) -> Any:
    """Return a finite float as it is, a non-finite one as the project's JSON string."""
    if math.isnan(value):
        return "NaN"
    return NON_FINITE.get(value, value)


def json_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Return typed rows that JSON can carry (non-finite floats as "NaN", "Infinity" and
    "-Infinity"), and the column types."""
    rows, types = typed_rows(rows)
    return [{column: _json_float(value) if isinstance(value, float) else value
             for column, value in row.items()} for row in rows], types


def rows_from_json(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the rows of a `to_json` document with non-finite floats as floats again."""
    floats = [column for column, kind in document["column_types"].items() if kind == "float"]
    rows = []
    for row in document["rows"]:
        row = dict(row)
        for column in floats:
            if isinstance(row[column], str):
                row[column] = float(row[column])
        rows.append(row)
    return rows


def to_json(rows: list[dict[str, Any]], **header: Any) -> str:
    """Return rows as a JSON object: the header fields, `columns`, `column_types` and
    `rows` (a list of objects), with non-finite floats as `json_rows` writes them."""
    clean, types = json_rows(rows)
    return json.dumps({**header, "columns": list(types), "column_types": types, "rows": clean})


def to_parquet(rows: list[dict[str, Any]], **metadata: str) -> bytes:
    """Return rows as a Parquet file; numeric columns stay numeric, with nulls for None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, types = typed_rows(rows)
    arrow_types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "string": pa.string()}
    arrays = [pa.array([row[column] for row in rows], type=arrow_types[kind]) for column, kind in types.items()]
    table = pa.Table.from_arrays(arrays, names=list(types))
    table = table.replace_schema_metadata({key.encode(): str(value).encode() for key, value in metadata.items()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


# Plain-text table for the command line, built on the batch table's layout.

TABLE_METRICS = [("K", "n_params", "d"), ("iter", "iterations", "d"), ("solve s", "solve_s", ".3f"),
                 ("box max", "box_max_log10", ".2f"), ("box mean", "box_mean_log10", ".2f"),
                 ("path max", "path_max_log10", ".2f"), ("path mean", "path_mean_log10", ".2f"),
                 ("peak MiB", "peak_memory_mb", ".0f")]


SPHERE_TABLE_METRICS = [("sph 0.1", "sphere_0.1_max_log10", ".2f")]


def format_rows(rows: list[dict[str, Any]], varied: list[str], aggregated: bool = False) -> str:
    """Return a plain-text table of result rows (or aggregated rows): method, the varied
    fields, status, and the key metrics (medians when aggregated)."""
    paths = [path for path in varied if path != "method" and not (aggregated and path == "seed")]
    names = [_short_name(path, paths) for path in paths]
    middle = [("ok", lambda row: f"{row['n_succeeded']}/{row['n']}")] if aggregated \
        else [("status", lambda row: str(row["status"]))]
    metrics = TABLE_METRICS + [metric for metric in SPHERE_TABLE_METRICS
                               if any(row.get(metric[1]) is not None for row in rows)]
    cells = []
    for row in rows:
        line = [str(row.get("method"))] + [_value_text(row.get(path)) for path in paths]
        line += [cell(row) for _, cell in middle]
        line += [_metric_text(row.get(column), fmt) for _, column, fmt in metrics]
        cells.append(line)
    headers = ["method", *names, *(name for name, _ in middle), *(name for name, _, _ in metrics)]
    widths = [max([len(header)] + [len(line[i]) for line in cells]) for i, header in enumerate(headers)]
    widths[0] = min(widths[0], 48)
    lines = render_table(list(zip(headers, widths)), cells)
    lines.append("")
    sets = ("10,000 box points and a 10,000-period path" if len(metrics) == len(TABLE_METRICS) else
            "the box points and the simulated path (fewer points for multi_country at large N, "
            "see its diagnostics) and, under 'sph 0.1', on a sphere of radius 0.1 around the steady state")
    lines.append(f"Errors are log10 of the unit-free Euler error on {sets}; 'peak MiB' is the "
                 "worker's peak resident memory during the job"
                 + ("; figures are medians over the succeeded repeats." if aggregated else "."))
    return "\n".join(lines)


def _short_name(path: str, paths: list[str]) -> str:
    """Return the last part of a dotted path, or the whole path where two last parts clash."""
    last = path.rsplit(".", 1)[-1]
    clashes = sum(other.rsplit(".", 1)[-1] == last for other in paths)
    return last if clashes == 1 else path


def _metric_text(value: Any, fmt: str) -> str:
    """Format a metric; an integer metric aggregated to a float median loses its fraction."""
    if fmt == "d" and isinstance(value, float) and math.isfinite(value):
        fmt = ".0f"
    return format_number(value, fmt)


def _value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
