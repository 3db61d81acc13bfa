"""Sweeps: a base job spec, a grid of overrides addressed by dotted paths, and repeats over seeds.

A sweep (a YAML or JSON file, or the body of `POST /v1/sweeps`) looks like this:

    kind: sweep                       # optional; a top-level `grid` marks a sweep too
    name: chebyshev degrees
    base: {method: {basis: {kind: chebyshev}}}
    grid:
      method.basis.degree: [4, 6, 8, 10]
      model.params.gamma: [1, 2, 5]
    repeats: 2                        # seeds: `seed`, `seed` + 1, ... (or list them in `seeds`)

`grid` maps dotted paths to lists of values, or is a list of such mappings (sub-grids)
whose products are concatenated in order. Each sub-grid expands to the cartesian product
of its lists in the order written, the last path varying fastest. Each point is run once
per seed, so the sweep has (sum of the sub-grids' sizes) x repeats jobs. A path sets a
field of the base spec and creates the dicts on its way. The path `method` replaces the
whole method block, and later paths of the same sub-grid apply on top of it.

Every expanded spec is validated before any job is created. One invalid spec rejects the
whole sweep, and the error gives its index and the reason.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.batch import BatchError, read_document
from service.errors import _members, describe_errors, summarize
from solvers.record import TERMINAL_STATUSES, JobRecord, utcnow
from solvers.schema import StrictModel, bounded, check_label
from solvers.spec import JobSpec
from worker.store import JobNotFound, JobStateError, JobStore, SweepStateError

logger = logging.getLogger(__name__)

SWEEP_VERSION = 1
MAX_REPEATS = 100
MAX_DETAIL = 50  # invalid jobs listed one by one in a rejection; the rest are counted
SEED_MAX = 2**32 - 1

Grid = dict[str, Annotated[list[Any], Field(min_length=1)]]


class SweepSettings(BaseSettings):
    """Limits on sweeps, read from the environment (prefix `EULERBENCH_`)."""

    model_config = SettingsConfigDict(env_prefix="EULERBENCH_", extra="ignore")

    max_sweep_jobs: int = Field(2000, ge=1, description="Largest number of jobs one sweep may expand to.")


class SweepInvalid(BatchError):
    """A sweep cannot be expanded, or one of its expanded specs is invalid; no job was created.

    `detail` lists the problems as dicts with `field` and `msg`, and for an invalid
    expanded spec its `index` and the grid values (`overrides`) that produced it.
    """

    def __init__(self, message: str, detail: list[dict[str, Any]]):
        super().__init__(message)
        self.detail = detail


class SweepNotQueued(RuntimeError):
    """The broker failed while the sweep's jobs were being queued."""


class NoGpuWorker(RuntimeError):
    """A sweep requests device "gpu" while no worker consumes the gpu queue."""


class SweepSpec(StrictModel):
    """A sweep: a base spec, a grid of overrides by dotted path, and repeats over seeds."""

    kind: Literal["sweep"] = Field("sweep", description="Marks a sweep file; optional.")
    name: Annotated[str | None, AfterValidator(check_label)] = Field(
        None, max_length=200, description="Free text shown on the results page and in listings.")
    base: dict[str, Any] = Field(
        default_factory=dict, description="The job spec every job starts from. It may be "
        "incomplete (for instance without `method`) when the grid supplies the rest.")
    grid: Grid | Annotated[list[Grid], Field(min_length=1)] = Field(
        description="Dotted path -> list of values, e.g. {\"method.basis.degree\": [4, 6, 8]}; "
        "or a list of such mappings whose products are concatenated in order.")
    repeats: bounded(1, MAX_REPEATS, integer=True) | None = Field(
        None, description="Runs of each grid point, one per seed; defaults to the number of "
        "`seeds`, else 1.")
    seeds: list[bounded(0, SEED_MAX, integer=True)] | None = Field(
        None, min_length=1, max_length=MAX_REPEATS, description="The seed of each repeat.")
    seed: bounded(0, SEED_MAX, integer=True) | None = Field(
        None, description="First seed; repeat r runs with seed + r. Defaults to the base "
        "spec's seed, else 0.")

    @model_validator(mode="after")
    def check_seeds(self) -> "SweepSpec":
        """Require consistent repeats, seeds and seed, and a grid that does not vary `seed`
        while repeats do."""
        if self.seeds is not None and self.seed is not None:
            raise ValueError("give either `seeds` (one per repeat) or `seed` (the first of "
                             "consecutive seeds), not both")
        if self.seeds is not None and self.repeats is not None and self.repeats != len(self.seeds):
            raise ValueError(f"repeats is {self.repeats} but seeds lists {len(self.seeds)} "
                             f"seeds; give one seed per repeat, or leave repeats out")
        for grid in self.grids():
            if not grid:
                raise ValueError("a grid needs at least one dotted path with a list of values")
            if "seed" in grid and (len(self.seed_list()) > 1 or self.seeds is not None
                                   or self.seed is not None):
                raise ValueError("the grid varies `seed`, so leave out repeats, seeds and seed")
        return self

    def grids(self) -> list[dict[str, list[Any]]]:
        """Return the sub-grids, a single mapping being one sub-grid."""
        return self.grid if isinstance(self.grid, list) else [self.grid]

    def seed_list(self) -> list[int]:
        """Return the seed of each repeat."""
        if self.seeds is not None:
            return list(self.seeds)
        first = self.seed
        if first is None:
            base_seed = self.base.get("seed", 0)
            first = base_seed if isinstance(base_seed, int) and not isinstance(base_seed, bool) else 0
        return [first + r for r in range(self.repeats or 1)]

    def varied(self) -> list[str]:
        """Return the dotted paths the grid sets, in first-seen order, plus "seed" when
        there are several repeats."""
        paths = list(dict.fromkeys(path for grid in self.grids() for path in grid))
        if len(self.seed_list()) > 1:
            paths.append("seed")
        return paths


@dataclass
class Expansion:
    """The expanded jobs of a sweep, in order: spec, grid values and method label of each."""

    specs: list[JobSpec] = field(default_factory=list)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    method_labels: list[str] = field(default_factory=list)


def is_sweep(data: Any) -> bool:
    """Return True when a parsed file is a sweep: a top-level `grid` or `kind: sweep`."""
    return isinstance(data, dict) and ("grid" in data or data.get("kind") == "sweep")


def parse_sweep(data: Any, source: str = "the sweep") -> SweepSpec:
    """Validate a parsed sweep; raise SweepInvalid naming the bad field."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        detail = describe_errors(exc.errors(), SweepSpec)
        raise SweepInvalid(f"{source} is invalid: {summarize(detail)}", detail) from None


def load_sweep(path: str | Path, max_jobs: int | None = None) -> tuple[SweepSpec, Expansion]:
    """Read a sweep file, validate it and expand it; raise BatchError naming the problem."""
    data = read_document(path)
    if not is_sweep(data):
        raise BatchError(f"{path} is not a sweep file: it needs a top-level 'grid' mapping "
                         f"(or 'kind: sweep'); submit a batch of jobs with `eulerbench submit`")
    sweep = parse_sweep(data, str(path))
    try:
        return sweep, expand_sweep(sweep, max_jobs)
    except SweepInvalid as exc:
        raise SweepInvalid(f"{path}: {exc}", exc.detail) from None


def expand(sweep: SweepSpec, max_jobs: int | None = None) -> list[JobSpec]:
    """Return the validated job specs of a sweep, in expanded order."""
    return expand_sweep(sweep, max_jobs).specs


def count_jobs(sweep: SweepSpec) -> int:
    """Return the number of jobs the sweep expands to, without expanding it."""
    points = sum(math.prod(len(values) for values in grid.values()) for grid in sweep.grids())
    return points * len(sweep.seed_list())


def expand_sweep(sweep: SweepSpec, max_jobs: int | None = None) -> Expansion:
    """Expand a sweep into validated job specs; raise SweepInvalid when the grid names an
    unknown field, when it has more than max_jobs jobs, or when any expanded spec is invalid.

    max_jobs defaults to EULERBENCH_MAX_SWEEP_JOBS (2000).
    """
    limit = max_jobs if max_jobs is not None else SweepSettings().max_sweep_jobs
    size = count_jobs(sweep)
    if size > limit:
        message = (f"the sweep expands to {size} jobs, more than this service's limit of "
                   f"{limit} (EULERBENCH_MAX_SWEEP_JOBS); split it or shorten the grid")
        raise SweepInvalid(message, [{"field": "grid", "msg": message, "input": size, "type": "limit"}])
    for grid in sweep.grids():
        for path in grid:
            check_path(path)

    expansion, invalid = Expansion(), []
    seeds = sweep.seed_list()
    for grid in sweep.grids():
        labels = _block_labels(grid.get("method"))
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            for seed in seeds:
                index = len(expansion.overrides)
                expansion.overrides.append(point)
                spec, problems = _build_spec(sweep.base, point, seed, index)
                invalid.extend(problems)
                expansion.specs.append(spec)
                if spec is not None:
                    suffix = labels[grid["method"].index(point["method"])] if labels else ""
                    expansion.method_labels.append(method_label(spec) + suffix)
    if invalid:
        raise SweepInvalid(_rejection(invalid, size), invalid[:MAX_DETAIL])
    return expansion


def check_path(path: str) -> None:
    """Raise SweepInvalid unless path names a field of a job spec (of some model or method kind)."""
    parts = path.split(".")
    if path == "seed":
        return
    if not all(parts):
        _bad_path(path, "it has an empty part; write names joined by single dots, "
                        "e.g. method.basis.degree")
    options: list[Any] = [JobSpec]
    for depth, part in enumerate(parts):
        models = [m for option in options for m in _members(option)
                  if isinstance(m, type) and issubclass(m, BaseModel)]
        where = ".".join(parts[:depth]) or "the job spec"
        if not models:
            _bad_path(path, f"{where} is a value, not a group of settings")
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if not fields:
            valid = sorted({name for m in models for name in m.model_fields})
            _bad_path(path, f"{part!r} is not a field of {where}; valid fields there: {', '.join(valid)}")
        options = [f.annotation for f in fields]


def _bad_path(path: str, reason: str) -> None:
    message = f"grid path {path!r} names no field of a job spec: {reason}"
    raise SweepInvalid(message, [{"field": f"grid.{path}", "msg": message, "type": "grid_path"}])


def _build_spec(base: dict[str, Any], point: dict[str, Any], seed: int,
                index: int) -> tuple[JobSpec | None, list[dict[str, Any]]]:
    """Apply one grid point and a seed to the base; return the spec or the problems found."""
    data = copy.deepcopy(base)
    if "seed" not in point:
        data["seed"] = seed
    try:
        for path, value in point.items():
            set_path(data, path, value)
    except ValueError as exc:
        return None, [_problem(index, point, "(spec)", str(exc))]
    try:
        return JobSpec.model_validate(data), []
    except ValidationError as exc:
        return None, [_problem(index, point, item["field"], item["msg"], item)
                      for item in describe_errors(exc.errors(), JobSpec)]


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set data[a][b][c] = value for path "a.b.c", creating missing dicts on the way."""
    parts = path.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"cannot set {path}: {'.'.join(parts[:depth + 1])} is {child!r}, "
                             f"not a mapping")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _problem(index: int, point: dict[str, Any], field_name: str, message: str,
             item: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return one entry of a rejection: the job's index, its grid values and the reason."""
    problem = {"index": index, "overrides": point, "field": field_name,
               "msg": f"job {index} ({_point_text(point)}) is invalid: {field_name}: {message}"}
    if item is not None and "input" in item:
        problem["input"] = item["input"]
    return problem


def _point_text(point: dict[str, Any]) -> str:
    """Return grid values as `path=value` pairs, a whole block as compact JSON."""
    return ", ".join(f"{path}={json.dumps(value, separators=(',', ':'))}" for path, value in point.items())


def _rejection(invalid: list[dict[str, Any]], size: int) -> str:
    """Return the message of a rejected sweep: the first reason and how many jobs are invalid."""
    indexes = sorted({item["index"] for item in invalid})
    message = (f"sweep rejected, no job created: {len(indexes)} of its {size} jobs are "
               f"invalid; {invalid[0]['msg']}")
    if len(indexes) > 1:
        shown = ", ".join(map(str, indexes[:20])) + (", ..." if len(indexes) > 20 else "")
        message += f" (invalid jobs: {shown})"
    return message


def method_label(spec: JobSpec) -> str:
    """Return the short method name of rows and plots, e.g. "chebyshev euler/collocation/newton";
    a Smolyak basis shows as "smolyak", a complete polynomial as "chebyshev-complete"."""
    method = spec.method
    basis = method.basis.kind
    product = getattr(method.basis, "product", "tensor")
    if product == "smolyak":
        basis = "smolyak"
    elif product == "complete":
        basis = f"{basis}-complete"
    return f"{basis} {method.residual.kind}/{method.objective.kind}/{method.algorithm.kind}"


def _block_labels(blocks: list[Any] | None) -> list[str]:
    """Return a label suffix per whole method block that distinguishes blocks of one kind.

    Blocks whose basis, residual, objective and algorithm kinds coincide get the settings
    in which they differ, e.g. " (n_basis=80, knots=kink)"; other blocks get "".
    """
    if not blocks:
        return []
    leaves = [_leaves(block) if isinstance(block, dict) else {} for block in blocks]
    kinds = [tuple(leaf.get(f"{part}.kind") for part in ("basis", "residual", "objective", "algorithm"))
             for leaf in leaves]
    suffixes = []
    for kind, leaf in zip(kinds, leaves):
        peers = [other for other, other_kind in zip(leaves, kinds) if other_kind == kind]
        keys = dict.fromkeys(key for other in peers for key in other if not key.endswith("kind"))
        differing = [key for key in keys if len({json.dumps(o.get(key), sort_keys=True) for o in peers}) > 1]
        shown = [f"{key.rsplit('.', 1)[-1]}={_leaf_text(leaf[key])}" for key in differing if key in leaf]
        suffixes.append(f" ({', '.join(shown)})" if len(peers) > 1 and shown else "")
    return suffixes


def _leaves(block: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in block.items():
        if isinstance(value, dict):
            flat.update(_leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _leaf_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def sweep_record(sweep: SweepSpec, expansion: Expansion, submitter: str | None = None) -> dict[str, Any]:
    """Return the stored record of a new sweep; `job_ids` are filled when its jobs are created."""
    return {
        "schema_version": SWEEP_VERSION,
        "id": uuid.uuid4().hex,
        "name": sweep.name,
        "created_at": utcnow().isoformat(),
        "base": sweep.base,
        "grid": sweep.grid,
        "repeats": len(sweep.seed_list()),
        "seeds": sweep.seed_list(),
        "varied": sweep.varied(),
        "job_ids": [],
        "method_labels": expansion.method_labels,
        "status": "running",
        "counts": {"queued": len(expansion.specs)},
        "progress": 0.0,
        "finished_at": None,
        "error": None,
        "submitter": submitter,
    }


def size_limit_problem(spec: JobSpec, settings) -> str | None:
    """Return why a spec exceeds the service's parameter or memory limit, or None when it fits."""
    if spec.model.name != "multi_country":
        return None
    from solvers.multicountry_jobs import build_model, size_problem

    return size_problem(build_model(spec.model.params), spec.method, settings.max_params,
                        settings.max_memory_mb)


def service_problems(store: JobStore, specs: list[JobSpec], overrides: list[dict[str, Any]],
                     max_time_limit_s: float) -> list[dict[str, Any]]:
    """Return the expanded specs this service rejects: a time limit above its maximum, a
    multi_country job above the parameter or memory limit, or a policy to evaluate that
    cannot be read."""
    from worker.settings import get_settings

    settings = get_settings()
    problems = []
    for index, (spec, point) in enumerate(zip(specs, overrides)):
        size = size_limit_problem(spec, settings)
        if size is not None:
            problems.append(_problem(index, point, "method.basis", size))
        if spec.time_limit_s > max_time_limit_s:
            problems.append(_problem(index, point, "time_limit_s", f"{spec.time_limit_s:g} s exceeds "
                                     f"this service's limit of {max_time_limit_s:g} s"))
        try:
            store.source_for(spec)
        except ValueError as exc:
            problems.append(_problem(index, point, "method.residual.policy.job_id", str(exc)))
    return problems


def create_sweep(store: JobStore, sweep: SweepSpec, enqueue: Callable[[JobRecord], None], *,
                 max_time_limit_s: float = math.inf, max_jobs: int | None = None,
                 submitter: str | None = None) -> dict[str, Any]:
    """Validate every expanded spec, then create the sweep and its jobs and queue them.

    Nothing is created when any spec is invalid (SweepInvalid), or when a job requests
    device "gpu" while no worker consumes the gpu queue (NoGpuWorker). The records are
    written in one Redis transaction. When enqueue raises SweepNotQueued partway, the jobs
    already sent are cancelled, the rest are marked failed, the sweep's status becomes
    "failed", and SweepNotQueued is raised again, so no job is left queued without a message.
    """
    expansion = expand_sweep(sweep, max_jobs)
    problems = service_problems(store, expansion.specs, expansion.overrides, max_time_limit_s)
    if problems:
        raise SweepInvalid(_rejection(problems, len(expansion.specs)), problems[:MAX_DETAIL])
    gpu_jobs = [index for index, spec in enumerate(expansion.specs) if spec.device == "gpu"]
    if gpu_jobs and not store.workers("gpu"):
        raise NoGpuWorker(f"{len(gpu_jobs)} jobs of the sweep (the first is job {gpu_jobs[0]}) "
                          f"ask for device 'gpu', but no worker is consuming the gpu queue, so "
                          f"they would wait for ever; start one with `eulerbench worker --queues "
                          f"gpu` on a machine with a CUDA device, or use device 'cpu' or 'auto'")

    record = sweep_record(sweep, expansion, submitter)
    jobs = store.create_sweep(record, expansion.specs, submitter)
    for sent, job in enumerate(jobs):
        try:
            enqueue(job)
        except SweepNotQueued as exc:
            _abandon(store, record["id"], jobs, sent, str(exc))
            raise
    logger.info("sweep %s: %d jobs queued", record["id"], len(jobs))
    return record


def _abandon(store: JobStore, sweep_id: str, jobs: list[JobRecord], sent: int, reason: str) -> None:
    """End every job of a sweep whose queueing failed: cancel the sent ones, fail the rest."""
    logger.error("sweep %s: queueing failed after %d of %d jobs: %s", sweep_id, sent, len(jobs), reason)
    for job in jobs[:sent]:
        try:
            store.request_cancel(job.id)
        except (JobNotFound, JobStateError) as exc:
            logger.warning("sweep %s: job %s not cancelled: %s", sweep_id, job.id, exc)
    for job in jobs[sent:]:
        store.finish(job.id, "failed", {"error": f"not queued, the broker failed: {reason}"})

    def mark_failed(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "status": "failed", "error": f"queueing failed after {sent} of "
                f"{len(jobs)} jobs ({reason}); the sent jobs were cancelled, the rest failed"}

    store.update_sweep(sweep_id, mark_failed)


def get_sweep(store: JobStore, sweep_id: str) -> dict[str, Any]:
    """Return a sweep's record with its current counts by status, progress and status.

    `progress` is the share of jobs that have ended. When every job has ended, the counts
    are stored with `finished_at`, and a running sweep's status becomes "done". A job
    deleted since is counted as "deleted". Raise JobNotFound for an unknown id.
    """
    sweep = store.get_sweep(sweep_id)
    if sweep.get("finished_at") is not None:
        return sweep
    statuses = ["deleted" if status is None else status for status in store.statuses(sweep["job_ids"])]
    counts = {status: statuses.count(status) for status in dict.fromkeys(statuses)}
    ended = sum(1 for status in statuses if status in TERMINAL_STATUSES or status == "deleted")
    progress = ended / len(statuses) if statuses else 1.0
    if ended < len(statuses):
        return {**sweep, "counts": counts, "progress": progress}

    def finish(record: dict[str, Any]) -> dict[str, Any]:
        status = "done" if record["status"] == "running" else record["status"]
        return {**record, "counts": counts, "progress": 1.0, "status": status,
                "finished_at": utcnow().isoformat()}

    updated = store.update_sweep(sweep_id, finish)
    logger.info("sweep %s ended: %s", sweep_id, counts)
    return updated


def list_sweeps(store: JobStore, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
    """Return recent sweeps, newest first, each as `get_sweep` returns it."""
    ids, _ = store.sweep_ids(limit, offset)
    sweeps = []
    for sweep_id in ids:
        try:
            sweeps.append(get_sweep(store, sweep_id))
        except JobNotFound:
            continue
    return sweeps


def cancel_sweep(store: JobStore, sweep_id: str) -> tuple[dict[str, Any], int]:
    """Cancel a sweep's queued jobs and mark it cancelled; return its record and how many
    jobs were cancelled. Running jobs run to their end.

    Raise SweepStateError when every job has already ended or the sweep was already cancelled.
    """
    sweep = get_sweep(store, sweep_id)
    if sweep["finished_at"] is not None:
        raise SweepStateError(f"sweep {sweep_id} has ended ({sweep['status']}); no job is left to cancel")
    if sweep["status"] != "running":
        raise SweepStateError(f"sweep {sweep_id} is already {sweep['status']}")

    def mark_cancelled(record: dict[str, Any]) -> dict[str, Any] | None:
        return {**record, "status": "cancelled"} if record["status"] == "running" else None

    store.update_sweep(sweep_id, mark_cancelled)
    cancelled = 0
    for job_id, status in zip(sweep["job_ids"], store.statuses(sweep["job_ids"])):
        if status != "queued":
            continue
        try:
            cancelled += store.cancel_queued(job_id)
        except JobNotFound:
            logger.info("sweep %s: job %s was deleted before it could be cancelled", sweep_id, job_id)
    logger.info("sweep %s cancelled: %d queued jobs cancelled", sweep_id, cancelled)
    return get_sweep(store, sweep_id), cancelled
