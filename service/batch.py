"""Batch files of job specs: load and validate them, submit them, follow them, tabulate them.

A batch file is YAML or JSON holding either a mapping with a `jobs` list of specs, a
bare list of specs, or one spec. Every spec is validated before any is submitted.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import httpx
import yaml
from pydantic import ValidationError
from tqdm import tqdm

from service.errors import describe_errors, summarize
from solvers.record import TERMINAL_STATUSES, JobRecord
from solvers.spec import JobSpec

logger = logging.getLogger(__name__)


class BatchError(ValueError):
    """A batch file cannot be read or one of its specs is invalid."""


class BatchLoader(yaml.SafeLoader):
    """Safe YAML loader that reads `1e-3` as a number.

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-3`), so `1e-3` would
    otherwise arrive as a string and be rejected by the strict spec.
    """


BatchLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_document(path: str | Path, what: str = "batch file") -> Any:
    """Read a YAML or JSON file (JSON when its name ends in .json); raise BatchError when it
    cannot be read or parsed. what names the file in messages."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BatchError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise BatchError(f"cannot read {what} {path}: it is not UTF-8 text "
                         f"(byte {exc.start}: {exc.reason})") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=BatchLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise BatchError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None


def load_batch(path: str | Path) -> list[JobSpec]:
    """Read and validate every spec of a batch file; raise BatchError naming the bad one.

    A sweep file (see `service.sweeps`) gives its expanded specs, in expanded order.
    """
    data = read_document(path)
    from service.sweeps import is_sweep, load_sweep

    if is_sweep(data):
        return load_sweep(path)[1].specs

    if isinstance(data, dict) and "jobs" in data:
        items = data["jobs"]
    elif isinstance(data, dict):
        items = [data]
    else:
        items = data
    if not isinstance(items, list) or not items:
        raise BatchError(f"{path} must hold a spec, a list of specs or a mapping with a "
                         f"non-empty 'jobs' list; got {type(items).__name__}")

    specs = []
    for index, item in enumerate(items):
        try:
            specs.append(JobSpec.model_validate(item))
        except ValidationError as exc:
            detail = summarize(describe_errors(exc.errors(), JobSpec))
            raise BatchError(f"{path}: job {index} is invalid: {detail}") from None
    return specs


def reply_message(reply: httpx.Response) -> str:
    """Return the message of an error reply, or the start of its body."""
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)
    return str(body)[:200]


def submit_batch(client: httpx.Client, specs: Iterable[JobSpec]) -> list[str]:
    """POST each spec to the service; return the job ids in order.

    A rejected job raises BatchError with the service's message and the ids of the jobs
    queued before it, which keep running.
    """
    ids = []
    for index, spec in enumerate(specs):
        reply = client.post("/v1/jobs", content=spec.model_dump_json(exclude_unset=False),
                            headers={"content-type": "application/json"})
        if reply.status_code != 202:
            message = f"job {index} was not accepted (HTTP {reply.status_code}): {reply_message(reply)}"
            if ids:
                message += (f". Jobs 0 to {index - 1} were queued and keep running: {', '.join(ids)} "
                            f"(`eulerbench cancel ID` stops one)")
            raise BatchError(message)
        ids.append(reply.json()["id"])
    logger.info("submitted %d jobs", len(ids))
    return ids


def wait_for(client: httpx.Client, ids: list[str], poll_s: float = 0.5,
             show_progress: bool = True) -> list[JobRecord]:
    """Poll the jobs until every one has ended, with a progress bar; return their records."""
    records: dict[str, JobRecord] = {}
    bar = tqdm(total=len(ids), desc="jobs", unit="job", disable=not show_progress, file=sys.stderr)
    try:
        while len(records) < len(ids):
            running, ended = [], 0
            for job_id in ids:
                if job_id in records:
                    continue
                record = fetch(client, job_id)
                if record.status in TERMINAL_STATUSES:
                    records[job_id] = record
                    ended += 1
                elif record.status == "running":
                    running.append(record)
            bar.set_postfix_str(_running_note(running), refresh=False)
            bar.update(ended)
            if len(records) < len(ids):
                time.sleep(poll_s)
    finally:
        bar.close()
    return [records[i] for i in ids]


def fetch(client: httpx.Client, job_id: str) -> JobRecord:
    """GET one job record."""
    reply = client.get(f"/v1/jobs/{job_id}")
    reply.raise_for_status()
    return JobRecord.model_validate_json(reply.content)


def _running_note(running: list[JobRecord]) -> str:
    """Return a short note on the running jobs' progress for the progress bar."""
    if not running:
        return ""
    record = running[0]
    note = f"{len(running)} running; {record.spec.label or record.spec.summary()}"
    progress = record.progress
    if progress is not None and progress.phase != "solving":
        note += f": {progress.phase.split(' on ')[0]}"
    elif progress is not None:
        note += f": iteration {progress.iteration}, residual {progress.residual:.1e}"
    return note


COLUMNS = [
    ("job", 34), ("status", 9), ("conv", 4), ("K", 6), ("iter", 6), ("cond", 7), ("solve s", 8), ("box max", 8),
    ("box mean", 8), ("path max", 8), ("path mean", 9), ("out", 6), ("closed form", 11),
]


def render_table(columns: list[tuple[str, int]], rows: list[list[str]]) -> list[str]:
    """Return the lines of a plain-text table: header, rule, one line per row.

    columns contains (name, width) pairs. The first column is left-aligned and cut to its
    width; the others are right-aligned.
    """
    header = "  ".join(name.rjust(width) if i else name.ljust(width)
                       for i, (name, width) in enumerate(columns))
    lines = [header, "-" * len(header)]
    for cells in rows:
        lines.append("  ".join(cell.rjust(width) if i else cell.ljust(width)[:width]
                               for i, (cell, (_, width)) in enumerate(zip(cells, columns))))
    return lines


def format_table(records: list[JobRecord]) -> str:
    """Return a plain-text comparison table: log10 Euler errors, solve time, size."""
    lines = render_table(COLUMNS, [_row(record) for record in records])
    lines.append("")
    lines.append("Errors are log10 of the unit-free Euler error |beta E[u'(c') R'] / u'(c) - 1| on "
                 "10,000 box points and a 10,000-period path. 'conv' says whether the solver met "
                 "its stopping rule; 'cond' is the condition number of the basis matrix at the nodes (dense bases); 'out' is the share of path points outside the box; 'closed "
                 "form' is the max relative distance of k' to the exact policy.")
    if any(record.spec.model.name == "savings" for record in records):
        lines.append("Savings model: errors are over interior points, where the borrowing limit does "
                     "not bind; binding and infeasible points are scored apart in each record.")
    for record in records:
        for warning in record.warnings:
            lines.append(f"warning: {record.spec.label or record.spec.summary()}: {warning}")
        if record.status != "succeeded" and record.error:
            lines.append(f"{record.status}: {record.spec.label or record.spec.summary()}: {record.error}")
    return "\n".join(lines)


def _row(record: JobRecord) -> list[str]:
    """Return the table cells of one record."""
    name = record.spec.label or record.spec.summary()
    errors, timings = record.errors, record.timings
    converged = {True: "yes", False: "no", None: "-"}[record.converged]
    cells = [name, record.status, converged, format_number(record.n_params, "d"),
             format_number(record.iterations, "d"),
             format_number(record.diagnostics.get("basis_condition_number"), ".0e"),
             format_number(timings.solve_s if timings else None, ".3f")]
    if errors is None:
        cells += ["-"] * 6
    else:
        closed = errors.closed_form.max_rel_distance if errors.closed_form else None
        cells += [format_number(errors.box.max_log10, ".2f"), format_number(errors.box.mean_log10, ".2f"),
                  format_number(errors.path.max_log10, ".2f"),
                  format_number(errors.path.mean_log10, ".2f"),
                  format_number(errors.path.share_outside_box, ".3f"), format_number(closed, ".1e")]
    return cells


def format_number(value: Any, fmt: str) -> str:
    """Format a number, or '-' for None and the name for a non-finite float."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, fmt)
