"""The `eulerbench` command line.

    eulerbench up [FILE] [--once]    embedded stack: Redis, worker, API; run a batch or a sweep
    eulerbench solve FILE [--json]   solve specs in this process and print the results
    eulerbench submit FILE           send a batch to a running service and follow it
    eulerbench sweep FILE            send a sweep, follow it, print the table, write the report
    eulerbench report SWEEP_ID       fetch a sweep's table, CSV, JSON, Parquet and plots again
    eulerbench jobs / show ID / cancel ID
    eulerbench api / worker          the service's processes (docker-compose.yml runs these)
    eulerbench key new NAME          make an API key for submitter NAME and its settings entry
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import httpx

from tqdm import tqdm

from service.batch import (BatchError, fetch, format_table, load_batch, read_document, submit_batch,
                           wait_for)
from service.batch import reply_message as _reply_message

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "eulerbench" / "redis"
DEFAULT_URL = os.environ.get("EULERBENCH_URL", "http://127.0.0.1:8000")
MAX_PROCESSES = 256
SERVER_COMMANDS = ("api", "worker")
DEFAULT_REPORT_DIR = Path("sweep-results")
# The plots `sweep` and `report` download: (file name, metric, x); None is the frontier.
REPORT_PLOTS = (("box_max_log10-vs-n_params", "box_max_log10", "n_params"),
                ("solve_s-vs-n_params", "solve_s", "n_params"),
                ("peak_memory_mb-vs-n_params", "peak_memory_mb", "n_params"),
                ("frontier", None, None))
# The plots a sweep over several state dimensions d adds: error, time and parameter count.
SCALING_PLOTS = (("path_max_log10-vs-dimension", "path_max_log10", "dimension"),
                 ("solve_s-vs-dimension", "solve_s", "dimension"),
                 ("n_params-vs-dimension", "n_params", "dimension"))


class ServiceReplyError(RuntimeError):
    """The server at --url replied with something that is not an eulerbench reply."""


def _json(reply: httpx.Response) -> dict:
    """Return a successful reply's JSON; raise when the server is not an eulerbench service."""
    reply.raise_for_status()
    try:
        return reply.json()
    except ValueError:
        raise ServiceReplyError(f"{reply.request.url} did not reply with JSON; is it an "
                                f"eulerbench service? Point --url at one.") from None


def whole_number(name: str, low: int, high: int, note: str = "") -> Callable[[str], int]:
    """Return an argparse type that parses a whole number from low to high, naming the
    option's quantity and the valid range in its errors."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name} {text!r}; use {low} to {high}{note}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} {value} is out of range; use {low} to {high}{note}")
        return value

    return parse


port_number = whole_number("port", 0, 65535, " (0 picks a free one)")
process_count = whole_number("process count", 1, MAX_PROCESSES)
nice_increment = whole_number("niceness", 0, 19, " (0 leaves the priority as it is)")


def service_client(url: str, key: str | None, timeout: float) -> httpx.Client:
    """Return an HTTP client for the service at url that sends key, when given, as a bearer token."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_level is None:
        args.log_level = "info" if args.command in SERVER_COMMANDS else "warning"
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPStatusError as exc:
        hint = ("; pass --key KEY or set EULERBENCH_API_KEY" if exc.response.status_code == 401 else "")
        print(f"error: {exc.request.url} returned HTTP {exc.response.status_code}: "
              f"{_reply_message(exc.response)}{hint}", file=sys.stderr)
        return 3
    except httpx.HTTPError as exc:
        url = getattr(args, "url", DEFAULT_URL)
        print(f"error: cannot reach the service at {url}: {exc}. Start one with `eulerbench up`, "
              f"or point --url (or EULERBENCH_URL) at a running one.", file=sys.stderr)
        return 3
    except ServiceReplyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="eulerbench", description=(
        "Benchmark solution methods of dynamic economic models by their Euler errors and timings."))
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                        help="Logging level (default: info for api and worker, warning otherwise).")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="Start Redis, a worker and the API on 127.0.0.1 and "
                             "run a batch or a sweep.")
    up.add_argument("batch", nargs="?", help="Batch or sweep file (YAML or JSON) to submit once "
                    "the stack is up; a top-level 'grid' (or 'kind: sweep') marks a sweep.")
    up.add_argument("--once", action="store_true", help="Exit when the batch has ended, "
                    "instead of serving until Ctrl-C.")
    up.add_argument("--out", default=None, help="Folder for a sweep's CSV, JSON, Parquet and "
                    f"plots (default: {DEFAULT_REPORT_DIR}/SWEEP_ID).")
    up.add_argument("--port", type=port_number, default=8000,
                    help="API port on 127.0.0.1 (0 picks a free one).")
    up.add_argument("--workers", type=process_count, default=1,
                    help="Worker processes (jobs run at once).")
    up.add_argument("--api-workers", type=process_count, default=1,
                    help="API processes (uvicorn workers); more serve more requests per second.")
    up.add_argument("--worker-nice", type=nice_increment, default=19,
                    help="Niceness of the worker (0-19, default 19): the API stays fast while "
                    "jobs run, but solve times grow more while other programs use the CPU; "
                    "0 shares the CPU equally.")
    up.add_argument("--redis-url", default=None, help="Redis to use if it responds "
                    "(default: EULERBENCH_REDIS_URL or REDIS_URL, else redis://127.0.0.1:6379/0); "
                    "otherwise a private redis-server is started.")
    up.add_argument("--log-dir", default=None, help="Folder for the worker and API logs.")
    up.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                    help="Folder where a private Redis keeps its append-only file, so records "
                    "survive a restart (default: %(default)s).")
    up.add_argument("--no-persist", action="store_true",
                    help="Keep a private Redis in memory only; its records are lost when it stops.")
    _add_key(up)
    up.set_defaults(handler=cmd_up)

    solve = commands.add_parser("solve", help="Solve the specs of FILE in this process.")
    solve.add_argument("file", help="Spec or batch file (YAML or JSON).")
    solve.add_argument("--json", action="store_true", help="Print the result records as JSON only.")
    solve.set_defaults(handler=cmd_solve)

    submit = commands.add_parser("submit", help="Send a batch to a running service and wait for it.")
    submit.add_argument("file", help="Batch file (YAML or JSON).")
    submit.add_argument("--no-wait", action="store_true", help="Print the job ids and exit.")
    _add_url(submit)
    submit.set_defaults(handler=cmd_submit)

    sweep = commands.add_parser("sweep", help="Send a sweep to a running service, follow it, "
                                "print the table and write the results and plots to a folder.")
    sweep.add_argument("file", help="Sweep file (YAML or JSON) with a base spec and a grid.")
    sweep.add_argument("--out", default=None, help="Folder for results.csv, results.json, "
                       f"results.parquet and the plots (default: {DEFAULT_REPORT_DIR}/SWEEP_ID).")
    sweep.add_argument("--aggregate", action="store_true", help="Print one row per configuration, "
                       "with medians over repeats, and also write results-aggregated.csv.")
    sweep.add_argument("--no-wait", action="store_true", help="Print the sweep id and exit.")
    _add_url(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    report = commands.add_parser("report", help="Fetch a sweep's table, results files and plots.")
    report.add_argument("id", help="Sweep id.")
    report.add_argument("--out", default=None, help="Folder for the files "
                        f"(default: {DEFAULT_REPORT_DIR}/SWEEP_ID).")
    report.add_argument("--aggregate", action="store_true", help="Print one row per configuration, "
                        "with medians over repeats, and also write results-aggregated.csv.")
    _add_url(report)
    report.set_defaults(handler=cmd_report)

    jobs = commands.add_parser("jobs", help="List jobs of a running service, newest first.")
    jobs.add_argument("--status", help="Only jobs with this status.")
    jobs.add_argument("--model", help="Only jobs of this model.")
    jobs.add_argument("--basis", help="Only jobs with this basis kind.")
    jobs.add_argument("--limit", type=whole_number("limit", 1, 500), default=20,
                      help="At most this many jobs (1-500).")
    _add_url(jobs)
    jobs.set_defaults(handler=cmd_jobs)

    show = commands.add_parser("show", help="Print one job's record as JSON.")
    show.add_argument("id", help="Job id.")
    _add_url(show)
    show.set_defaults(handler=cmd_show)

    cancel = commands.add_parser("cancel", help="Cancel a queued or running job.")
    cancel.add_argument("id", help="Job id.")
    _add_url(cancel)
    cancel.set_defaults(handler=cmd_cancel)

    catalogue = commands.add_parser("catalogue", help="Print every model and method part with "
                                    "its settings, and the valid combinations.")
    catalogue.add_argument("--json", action="store_true", help="Print the catalogue as JSON.")
    catalogue.set_defaults(handler=cmd_catalogue)

    api = commands.add_parser("api", help="Serve the HTTP API (uvicorn).")
    api.add_argument("--host", default="127.0.0.1", help="Address to bind. Any address other "
                     "than a loopback one needs an API key in EULERBENCH_API_KEYS.")
    api.add_argument("--port", type=port_number, default=8000, help="Port to bind.")
    api.add_argument("--workers", type=process_count, default=1, help="API processes (uvicorn "
                     "workers); each serves requests on its own, sharing the port.")
    api.set_defaults(handler=cmd_api)

    key = commands.add_parser("key", help="Make API keys and their settings entries.")
    key_commands = key.add_subparsers(dest="key_command", required=True)
    key_new = key_commands.add_parser("new", help="Print a new random key for a submitter and "
                                      "its EULERBENCH_API_KEYS entry (only the hash is stored).")
    key_new.add_argument("submitter", help="Name recorded on the jobs the key submits; '*' makes "
                         "an admin key, which may cancel and delete any job.")
    key_new.set_defaults(handler=cmd_key_new)
    key_hash = key_commands.add_parser("hash", help="Read a key from standard input and print "
                                       "its EULERBENCH_API_KEYS entry for a submitter.")
    key_hash.add_argument("submitter", help="Submitter name of the key ('*' for an admin key).")
    key_hash.set_defaults(handler=cmd_key_hash)

    worker = commands.add_parser("worker", help="Run a Celery worker.")
    worker.add_argument("--queues", default="cpu", help="Comma-separated queues: cpu, gpu.")
    worker.add_argument("--concurrency", type=process_count, default=1, help="Jobs run at once.")
    worker.add_argument("--nice", type=nice_increment, default=0, help="Lower the worker's CPU "
                        "priority by this much (0-19), so that an API on the same machine stays "
                        "responsive while jobs run; `eulerbench up` uses 19.")
    worker.set_defaults(handler=cmd_worker)
    return parser


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL,
                        help="Service URL (default: EULERBENCH_URL or http://127.0.0.1:8000).")
    _add_key(parser)


def _add_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", default=os.environ.get("EULERBENCH_API_KEY") or None,
                        help="API key for a service that requires one (default: EULERBENCH_API_KEY).")


def cmd_solve(args: argparse.Namespace) -> int:
    """Solve every spec of the file here and print the records (or a table)."""
    from solvers.control import SolveControl
    from solvers.record import JobRecord, utcnow
    from solvers.run import run_spec

    records = []
    for spec in load_batch(args.file):
        name = spec.label or spec.summary()
        show, phase = _progress_printer(name, quiet=args.json)
        control = SolveControl(on_progress=show, on_phase=phase)
        created = utcnow()
        outcome = run_spec(spec, control)
        _clear_progress(args.json)
        records.append(JobRecord(id=f"local-{uuid.uuid4().hex[:12]}", status=outcome.status, spec=spec,
                                 created_at=created, started_at=created, finished_at=utcnow(),
                                 **outcome.fields))
    if args.json:
        payload = [json.loads(r.model_dump_json()) for r in records]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        print(format_table(records))
    return 0 if all(r.status == "succeeded" for r in records) else 1


def _progress_printer(name: str, quiet: bool):
    """Return progress and phase callbacks that rewrite one stderr line, at most 5 times a second."""
    last = [0.0]

    def write(text: str) -> None:
        if not quiet:
            print(f"\r\033[K{name}: {text}", end="", file=sys.stderr, flush=True)

    def show(iteration: int, residual: float, elapsed_s: float) -> None:
        if time.monotonic() - last[0] >= 0.2:
            last[0] = time.monotonic()
            write(f"iteration {iteration}, residual {residual:.2e}, {elapsed_s:.1f} s")

    def phase(name_of_phase: str) -> None:
        write(f"{name_of_phase} ...")

    return show, phase


def _clear_progress(quiet: bool) -> None:
    """Erase the progress line."""
    if not quiet:
        print("\r\033[K", end="", file=sys.stderr, flush=True)


def cmd_submit(args: argparse.Namespace) -> int:
    """Validate a batch, submit it, follow it, and print the table."""
    from service.sweeps import is_sweep

    if is_sweep(read_document(args.file)):
        raise BatchError(f"{args.file} is a sweep file; submit it with `eulerbench sweep "
                         f"{args.file}`, which keeps its jobs together as one sweep")
    specs = load_batch(args.file)
    with service_client(args.url, args.key, 30) as client:
        ids = submit_batch(client, specs)
        if args.no_wait:
            print("\n".join(ids))
            return 0
        records = wait_for(client, ids)
    print(format_table(records))
    return 0 if all(r.status == "succeeded" for r in records) else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    """Validate a sweep file, submit it, follow it, print the table and write the report."""
    from service.sweeps import load_sweep

    sweep, expansion = load_sweep(args.file)
    print(f"{args.file}: {len(expansion.specs)} jobs", file=sys.stderr)
    with service_client(args.url, args.key, 60) as client:
        sweep_id = submit_sweep(client, sweep)
        if args.no_wait:
            print(sweep_id)
            return 0
        wait_for_sweep(client, sweep_id)
        return write_report(client, sweep_id, args.out, args.aggregate)


def cmd_report(args: argparse.Namespace) -> int:
    """Fetch a sweep's rows, print the table and write the results files and plots."""
    with service_client(args.url, args.key, 60) as client:
        return write_report(client, args.id, args.out, args.aggregate)


def submit_sweep(client: httpx.Client, sweep) -> str:
    """POST a sweep; return its id. A rejection (HTTP 422) raises BatchError with the reason."""
    reply = client.post("/v1/sweeps", json=sweep.model_dump(mode="json", exclude_none=True))
    if reply.status_code == 422:
        raise BatchError(f"the service rejected the sweep: {_reply_message(reply)}")
    accepted = _json(reply)
    print(f"sweep {accepted['id']} queued: {accepted['n_jobs']} jobs", file=sys.stderr)
    return accepted["id"]


def wait_for_sweep(client: httpx.Client, sweep_id: str, poll_s: float = 0.5) -> dict:
    """Poll a sweep until every job has ended, with a progress bar over its jobs; return it."""
    sweep = _json(client.get(f"/v1/sweeps/{sweep_id}", params={"rows": "false"}))
    bar = tqdm(total=len(sweep["job_ids"]), desc="jobs", unit="job", file=sys.stderr)
    try:
        while True:
            ended = round(sweep["progress"] * len(sweep["job_ids"]))
            bar.set_postfix_str(", ".join(f"{status} {n}" for status, n in sweep["counts"].items()),
                                refresh=False)
            bar.update(ended - bar.n)
            if sweep["finished_at"] is not None:
                return sweep
            time.sleep(poll_s)
            sweep = _json(client.get(f"/v1/sweeps/{sweep_id}", params={"rows": "false"}))
    finally:
        bar.close()


def write_report(client: httpx.Client, sweep_id: str, out: str | None, aggregate: bool) -> int:
    """Print a sweep's table and write results.csv, .json, .parquet and the plots to out.

    Return 0 when every job succeeded, else 1.
    """
    from service.results import format_rows, rows_from_json

    sweep = client.get(f"/v1/sweeps/{sweep_id}", params={"rows": "false"})
    if sweep.status_code == 404:
        raise BatchError(f"sweep {sweep_id} not found at {client.base_url}")
    sweep = _json(sweep)
    folder = Path(out) if out else DEFAULT_REPORT_DIR / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    for fmt in ("csv", "json", "parquet"):
        reply = client.get(f"/v1/sweeps/{sweep_id}/results", params={"format": fmt})
        reply.raise_for_status()
        (folder / f"results.{fmt}").write_bytes(reply.content)
    rows = rows_from_json(json.loads((folder / "results.json").read_bytes()))
    if aggregate:
        reply = client.get(f"/v1/sweeps/{sweep_id}/results", params={"format": "csv", "aggregate": "true"})
        (folder / "results-aggregated.csv").write_bytes(reply.content)
        rows = rows_from_json(_json(client.get(f"/v1/sweeps/{sweep_id}/results",
                                               params={"format": "json", "aggregate": "true"})))
    dimensions = {row.get("dimension") for row in rows if row.get("dimension") is not None}
    plots = _download_plots(client, sweep_id, folder,
                            REPORT_PLOTS + (SCALING_PLOTS if len(dimensions) > 1 else ()))

    print(format_rows(rows, sweep["varied"], aggregated=aggregate))
    written = "results.csv, results.json, results.parquet"
    if len(dimensions) > 1:
        _print_slopes(rows, sweep["varied"], folder / "slopes.csv")
        written += ", slopes.csv"
    print(f"\nsweep {sweep_id} ({sweep.get('name') or 'unnamed'}): {sweep['status']}, "
          f"{_counts_text(sweep['counts'])}")
    print(f"wrote {written}{plots} to {folder}")
    if client.get(f"/sweeps/{sweep_id}").status_code == 200:
        print(f"page: {client.base_url.join(f'/sweeps/{sweep_id}')}")
    return 0 if sweep["counts"].get("succeeded", 0) == len(sweep["job_ids"]) else 1


def _print_slopes(rows: list[dict], varied: list[str], path: Path) -> None:
    """Print, and write to path as CSV, the log-log slope b of solve time against the
    dimension d per method (time ~ d^b), fitted over the jobs that succeeded."""
    import csv

    from service.plots import loglog_slopes

    slopes = loglog_slopes(rows, "dimension", varied)
    width = max(len(series) for series in slopes)
    print("\nlog-log slope b of solve time against the dimension d (solve time ~ d^b):")
    for series, slope in slopes.items():
        print(f"  {series:{width}}  " + ("n/a: fewer than two d" if slope is None else f"b = {slope:.2f}"))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["series", "metric", "x", "slope"])
        for series, slope in slopes.items():
            writer.writerow([series, "solve_s", "dimension", "" if slope is None else f"{slope:.6g}"])


def _download_plots(client: httpx.Client, sweep_id: str, folder: Path,
                    plots: tuple = REPORT_PLOTS) -> str:
    """Save plots, given as (file name, metric, x), as PNG files; return a note naming
    them for the summary line. A service without plot endpoints (HTTP 404) gives no plots
    and no error.
    """
    saved = []
    for name, metric, x in plots:
        path = f"/v1/sweeps/{sweep_id}/plots/{metric or 'frontier'}.png"
        reply = client.get(path, params={"x": x} if x else None)
        if reply.status_code == 404:
            print("note: this service has no plot endpoints; no plots written", file=sys.stderr)
            break
        if reply.status_code != 200:
            print(f"note: plot {name} not written: HTTP {reply.status_code}: {_reply_message(reply)}",
                  file=sys.stderr)
            continue
        (folder / f"{name}.png").write_bytes(reply.content)
        saved.append(f"{name}.png")
    return f" and {len(saved)} plots ({', '.join(saved)})" if saved else ""


def _counts_text(counts: dict) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def cmd_jobs(args: argparse.Namespace) -> int:
    """Print a table of recent jobs."""
    from solvers.record import JobRecord

    params = {k: v for k, v in (("status", args.status), ("model", args.model),
                                ("basis", args.basis), ("limit", args.limit)) if v is not None}
    with service_client(args.url, args.key, 30) as client:
        reply = client.get("/v1/jobs", params=params)
    if reply.status_code == 422:
        print(f"error: {_reply_message(reply)}", file=sys.stderr)
        return 2
    page = _json(reply)
    records = [JobRecord.model_validate(item) for item in page["items"]]
    print(f"{'id':32}  {'status':9}  {'created (UTC)':19}  {'model':18}  job")
    for record in records:
        print(f"{record.id}  {record.status:9}  {record.created_at:%Y-%m-%d %H:%M:%S}  "
              f"{_model_name(record.spec):18}  {record.spec.label or record.spec.summary()}")
    print(f"{len(records)} of {page['total']} jobs")
    return 0


def _model_name(spec) -> str:
    """Return the model's name, with the number of countries N for multi_country."""
    if spec.model.name == "multi_country":
        return f"multi_country N={spec.model.params.countries}"
    return spec.model.name


def cmd_show(args: argparse.Namespace) -> int:
    """Print one job record as JSON."""
    with service_client(args.url, args.key, 30) as client:
        reply = client.get(f"/v1/jobs/{args.id}")
    if reply.status_code == 404:
        print(f"error: job {args.id} not found", file=sys.stderr)
        return 2
    print(json.dumps(_json(reply), indent=2))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel one job and print its status."""
    with service_client(args.url, args.key, 30) as client:
        reply = client.post(f"/v1/jobs/{args.id}/cancel")
    if reply.status_code in (404, 409):
        print(f"error: {_reply_message(reply)}", file=sys.stderr)
        return 2
    record = _json(reply)
    if record["status"] == "running":
        print(f"{args.id}: cancel requested; the job stops at its next iteration")
    else:
        print(f"{args.id}: {record['status']}")
    return 0


def cmd_catalogue(args: argparse.Namespace) -> int:
    """Print the method catalogue as text or JSON."""
    from solvers.spec import describe_catalogue

    catalogue = describe_catalogue()
    if args.json:
        print(json.dumps(catalogue, indent=2))
        return 0
    for part in ("models", "bases", "residuals", "objectives", "algorithms"):
        print(part.upper())
        for kind, entry in catalogue[part].items():
            print(f"  {kind}: {entry['description']}")
            for name, setting in entry["settings"].items():
                print(f"      {name} = {json.dumps(setting.get('default'))}{_range_text(setting)}")
        print()
    print("VALID COMBINATIONS (basis / residual / objective: algorithms; defaults first)")
    grouped: dict[tuple, list[str]] = {}
    for row in catalogue["combinations"]:
        key = (row["basis"], row["residual"], row["objective"])
        grouped.setdefault(key, []).append(row["algorithm"])
    for (basis, residual, objective), algorithms in grouped.items():
        note = " (product 'tensor' only)" if objective == "collocation" and basis in ("monomial", "chebyshev") else ""
        print(f"  {basis} / {residual} / {objective}{note}: {', '.join(algorithms)}")
    print()
    _print_multi_country_methods(catalogue["models"]["multi_country"]["methods"])
    return 0


def _print_multi_country_methods(methods: dict) -> None:
    """Print the multi_country model's own method table: basis family, objective, algorithms."""
    print("MULTI_COUNTRY MODEL (its own methods; defaults first)")
    print(f"  residual: {', '.join(methods['residual'])}")
    for family, objectives in methods["objective"].items():
        basis = {"complete": "chebyshev or monomial, product 'complete'",
                 "tensor": "chebyshev or monomial, product 'tensor'",
                 "smolyak": "chebyshev, product 'smolyak'"}.get(family, family)
        for objective in objectives:
            print(f"  {basis} / {objective}: {', '.join(methods['algorithm'][objective])}")
    print(f"  integration: {', '.join(methods['integration'])}")


def _range_text(setting: dict) -> str:
    """Return the valid range or choices of a setting, for the catalogue listing."""
    if "enum" in setting:
        return f"  (one of {', '.join(map(str, setting['enum']))})"
    low = setting.get("minimum", setting.get("exclusiveMinimum"))
    high = setting.get("maximum", setting.get("exclusiveMaximum"))
    if low is None and high is None:
        return ""
    low_sign = "<" if "exclusiveMinimum" in setting else "<="
    high_sign = "<" if "exclusiveMaximum" in setting else "<="
    left = f"{low} {low_sign} " if low is not None else ""
    right = f" {high_sign} {high}" if high is not None else ""
    return f"  ({left}value{right})"


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the API with uvicorn until stopped."""
    import uvicorn
    from pydantic import ValidationError

    from service.auth import check_bind_address
    from service.metrics import share_metrics_between_processes
    from worker.settings import get_settings

    try:
        check_bind_address(args.host, get_settings())
    except ValidationError as exc:
        print(f"error: invalid settings: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1:
        share_metrics_between_processes()
    uvicorn.run("service.app:app", host=args.host, port=args.port, log_level=args.log_level,
                workers=args.workers)
    return 0


def cmd_key_new(args: argparse.Namespace) -> int:
    """Print a new key and the settings entry that contains its hash."""
    from service.auth import hash_key, new_key

    if not _valid_submitter(args.submitter):
        return 2
    key = new_key()
    print(f"key (give it to {args.submitter}; it is not stored anywhere): {key}")
    print(f"EULERBENCH_API_KEYS entry (comma-separate several): {args.submitter}:{hash_key(key)}")
    return 0


def cmd_key_hash(args: argparse.Namespace) -> int:
    """Print the settings entry of a key read from standard input."""
    from service.auth import hash_key

    if not _valid_submitter(args.submitter):
        return 2
    key = sys.stdin.readline().strip()
    if not key:
        print("error: no key on standard input", file=sys.stderr)
        return 2
    print(f"{args.submitter}:{hash_key(key)}")
    return 0


def _valid_submitter(submitter: str) -> bool:
    """Return True when submitter can be a settings entry's name; else print why not."""
    if submitter and not any(c == ":" or c.isspace() or c == "," for c in submitter):
        return True
    print(f"error: invalid submitter {submitter!r}: use a non-empty name without ':', ',' "
          f"or spaces", file=sys.stderr)
    return False


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker on the given queues until stopped."""
    from worker.celery_app import QUEUES, THREADS_ENV, app

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        print(f"error: unknown queue(s) {unknown or queues}; valid choices: {', '.join(QUEUES)}",
              file=sys.stderr)
        return 2
    threads = max(1, (os.cpu_count() or 1) // args.concurrency)
    os.environ.setdefault(THREADS_ENV, str(threads))
    if args.nice:
        logger.info("worker niceness raised by %d: jobs yield the CPU to the API", args.nice)
        os.nice(args.nice)
    app.worker_main(["worker", "--queues", ",".join(queues), "--concurrency", str(args.concurrency),
                     "--pool", "prefork", "--loglevel", args.log_level.upper(), "--without-gossip",
                     "--without-mingle"])
    return 0


def _cancel_unfinished(client: httpx.Client, ids: list[str], what: str = "batch") -> None:
    """Cancel the jobs of a batch (or sweep) that have not ended, and print how many."""
    cancelled = 0
    for job_id in ids:
        try:
            if client.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202):
                cancelled += 1
        except httpx.HTTPError as exc:
            logger.warning("job %s not cancelled: %s", job_id, exc)
    if cancelled:
        print(f"cancelled {cancelled} unfinished jobs of the {what}", file=sys.stderr)


def _raise_interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into the same clean stop as Ctrl-C."""
    raise KeyboardInterrupt


def _run_batch(api_url: str, key: str | None, specs: list) -> int:
    """Submit a batch to the embedded stack, follow it and print the table; return the status."""
    with service_client(api_url, key, 30) as client:
        ids = submit_batch(client, specs)
        try:
            records = wait_for(client, ids)
        except KeyboardInterrupt:
            # The stack is going down: jobs left in the queue would otherwise run
            # first on the next stack that uses the same Redis.
            _cancel_unfinished(client, ids)
            raise
    print(format_table(records))
    return 0 if all(r.status == "succeeded" for r in records) else 1


def _run_sweep(api_url: str, key: str | None, sweep, out: str | None) -> int:
    """Submit a sweep to the embedded stack, follow it, print the table and write the report."""
    with service_client(api_url, key, 60) as client:
        sweep_id = submit_sweep(client, sweep)
        try:
            wait_for_sweep(client, sweep_id)
        except KeyboardInterrupt:
            # As for a batch: the stack is going down, so stop the running jobs too.
            reply = client.delete(f"/v1/sweeps/{sweep_id}")
            if reply.status_code == 200:
                print(f"cancelled {reply.json()['cancelled']} queued jobs of the sweep", file=sys.stderr)
                _cancel_unfinished(client, reply.json()["job_ids"], "sweep")
            raise
        return write_report(client, sweep_id, out, aggregate=False)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the embedded stack, run the batch or sweep, print the table, then serve until Ctrl-C."""
    from service.embedded import StackError, start_stack
    from service.sweeps import is_sweep, load_sweep
    from worker.settings import get_settings

    sweep = specs = None
    if args.batch and is_sweep(read_document(args.batch)):
        sweep, _ = load_sweep(args.batch)
    elif args.batch:
        specs = load_batch(args.batch)
    redis_url = args.redis_url or get_settings().redis_url
    print("starting Redis, a worker and the API on 127.0.0.1 ...", file=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    data_dir = None if args.no_persist else Path(args.data_dir)
    try:
        stack = start_stack(redis_url, port=args.port or None, concurrency=args.workers,
                            api_workers=args.api_workers, worker_nice=args.worker_nice,
                            log_dir=Path(args.log_dir) if args.log_dir else None, data_dir=data_dir)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    print(f"API at {stack.api_url} (docs at {stack.api_url}/docs), Redis at {stack.redis_url}, "
          f"logs in {stack.log_dir}", file=sys.stderr)
    status = 0
    try:
        if specs:
            status = _run_batch(stack.api_url, args.key, specs)
        elif sweep is not None:
            status = _run_sweep(stack.api_url, args.key, sweep, args.out)
        if not args.once:
            print(f"serving at {stack.api_url}; submit more with "
                  f"`eulerbench submit FILE --url {stack.api_url}`; Ctrl-C stops.", file=sys.stderr)
            while all(p.poll() is None for p in stack.processes):
                time.sleep(1)
            print("error: a process of the stack exited; see the logs", file=sys.stderr)
            status = 4
    except KeyboardInterrupt:
        print("stopping ...", file=sys.stderr)
    finally:
        stack.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
