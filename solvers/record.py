"""Result record of a job: its status, accuracy, timings and where it ran.

The record is what the store keeps, the API returns and the CLI prints. Floats that
are not finite (log10 of an error of exactly 0, NaN from a diverged run) are written
to JSON as the strings "Infinity", "-Infinity" and "NaN", and read back from them, so
no record is ever unreadable.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from solvers.spec import JobSpec

RECORD_VERSION = 1

Status = Literal["queued", "running", "succeeded", "failed", "diverged", "timed_out", "cancelled"]
STATUSES: tuple[str, ...] = Status.__args__
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "diverged", "timed_out", "cancelled"})


class RecordPart(BaseModel):
    """Base of record parts: non-finite floats survive a JSON round trip."""

    model_config = ConfigDict(ser_json_inf_nan="strings", extra="forbid")


class SetErrors(RecordPart):
    """Euler-error summary on one evaluation set: log10 of the max and of the mean of |e|.

    For a model with a borrowing limit the two figures cover interior points only, and
    the optional counts and complementarity figures describe the rest.
    """

    model_config = ConfigDict(ser_json_inf_nan="strings", extra="allow")

    max_log10: float | None = Field(description="log10 of max |e|; null when the set has no point to score.")
    mean_log10: float | None = Field(description="log10 of mean |e|; null when the set has no point to score.")


class PathErrors(SetErrors):
    """Euler errors on the simulated path, with the share of its points outside the box."""

    share_outside_box: float


class ClosedFormErrors(RecordPart):
    """Largest relative distance of next-period capital to the closed form, on the box set."""

    max_rel_distance: float
    path_max_rel_distance: float | None = Field(
        None, description="The same distance along the simulated path (multi_country model).")


class Errors(RecordPart):
    """Accuracy of the fitted policy, measured by the shared evaluator."""

    box: SetErrors
    path: PathErrors
    spheres: dict[str, SetErrors] | None = Field(
        None, description="multi_country model: errors on points at these Euclidean distances "
        "from the steady state in logs, keyed by the radius.")
    closed_form: ClosedFormErrors | None = None


class Timings(RecordPart):
    """Wall-clock seconds of each phase, and CPU seconds of the solve (all threads)."""

    setup_s: float
    solve_s: float
    evaluate_s: float
    total_s: float
    solve_cpu_s: float


class Progress(RecordPart):
    """Latest progress of a running job: its phase, iteration and residual. An ended job
    keeps the last one written, so its phase shows where a timed-out job stopped."""

    iteration: int
    residual: float
    elapsed_s: float
    phase: str = "solving"


class JobRecord(RecordPart):
    """Everything known about one job. Solver fields are null until the job has run."""

    schema_version: Literal[1] = RECORD_VERSION
    id: str
    status: Status
    spec: JobSpec
    submitter: str | None = None
    sweep_id: str | None = Field(None, description="Id of the sweep that created this job, if any.")
    errors: Errors | None = None
    timings: Timings | None = None
    n_params: int | None = None
    n_conditions: int | None = None
    iterations: int | None = None
    converged: bool | None = None
    condition_number: float | None = Field(
        None, description="2-norm condition number of the final Newton Jacobian (dense bases).")
    history: list[tuple[int, float, float]] = Field(
        default_factory=list, description="Convergence history: (iteration, residual, elapsed_s).")
    diagnostics: dict[str, Any] = Field(
        default_factory=dict, description="Method-specific figures, such as the sup-norm Bellman "
        "residual of a value-function method relative to max |V|.")
    warnings: list[str] = Field(
        default_factory=list, description="Caveats on a result, such as a solve that did not converge.")
    progress: Progress | None = None
    peak_memory_mb: float | None = Field(
        None, description="Peak resident set size of the worker process while it ran this job, "
        "in MiB (2^20 bytes). It includes the memory the process held before the job started "
        "(the interpreter, numpy, torch), so compare it across jobs, not with zero. "
        "`peak_memory_scope` says whether the peak was reset when the job started.")
    peak_memory_scope: Literal["job", "process"] | None = Field(
        None, description="'job': the peak was reset when the job started (Linux, through "
        "/proc/self/clear_refs), so it covers this job only; 'process': the worker process's "
        "peak since it started, which earlier jobs may have set.")
    peak_gpu_memory_mb: float | None = Field(
        None, description="Peak memory torch allocated on the CUDA device during the job, in "
        "MiB; null for jobs that did not run on a GPU.")
    hardware: dict[str, str | int | float | None] | None = None
    versions: dict[str, str] | None = None
    worker: str | None = None
    attempts: int = 0
    created_at: datetime = Field(default_factory=lambda: utcnow())
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


def utcnow() -> datetime:
    """Return the current time in UTC, timezone-aware."""
    return datetime.now(timezone.utc)
