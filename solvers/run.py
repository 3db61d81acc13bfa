"""Run one job spec in this process: set up, solve, evaluate, and time each phase.

`run_spec` is what the Celery task and the CLI's `solve` both call. Divergence, time-out,
cancellation and the solver's numerical errors (ValueError, ArithmeticError, LinAlgError,
RuntimeError, MemoryError) come back as an outcome with the matching status and a
message, not as an exception.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from solvers.collocation import solve_collocation
from solvers.control import SolveCancelled, SolveControl, SolveDiverged, SolveTimedOut
from solvers.evaluate import evaluate
from solvers.growth import GrowthModel
from solvers.policies import PolicySource
from solvers.solution import Solution
from solvers.spec import JobSpec, build_savings_model

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Result of running a spec: a status and the record fields it fills."""

    status: str
    fields: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] | None = None


def build_model(spec: JobSpec):
    """Return the model object a spec names: a GrowthModel, a SavingsModel or a MultiCountryModel."""
    if spec.model.name == "savings":
        return build_savings_model(spec.model.params)
    if spec.model.name == "multi_country":
        from solvers.multicountry_jobs import build_model as build_multi_country_model
        return build_multi_country_model(spec.model.params)
    return GrowthModel.from_params(spec.model.params)


def solve(model, spec: JobSpec, control: SolveControl, source: PolicySource | None = None) -> Solution:
    """Dispatch to the solver of the spec's model, residual and basis kind; source is the
    finished job whose policy a policy_evaluation of kind 'job' evaluates."""
    kind = spec.method.basis.kind
    if spec.model.name == "multi_country":
        from solvers.multicountry_jobs import solve_job
        return solve_job(model, spec, control)
    if spec.model.name == "savings":
        from solvers.savings_solver import solve_savings
        return solve_savings(model, spec.method, seed=spec.seed, control=control)
    if spec.method.residual.kind in ("bellman", "policy_evaluation"):
        from solvers.value import solve_value
        return solve_value(model, spec.method, control, seed=spec.seed, source=source)
    if kind in ("monomial", "chebyshev", "spline", "grid") and spec.method.objective.kind == "sampled_mse":
        from solvers.sampled import solve_sampled
        return solve_sampled(model, spec.method, control, seed=spec.seed)
    if kind in ("monomial", "chebyshev", "spline", "grid"):
        return solve_collocation(model, spec.method, control, seed=spec.seed)
    if kind == "nn":
        from solvers.nn import solve_nn
        return solve_nn(model, spec.method, spec.seed, spec.device, control)
    raise ValueError(f"unknown basis kind {kind!r}; valid choices: monomial, chebyshev, spline, grid, nn")


def run_spec(spec: JobSpec, control: SolveControl | None = None, job_id: str = "local",
             source: PolicySource | None = None) -> Outcome:
    """Solve and evaluate one spec; return its status, record fields and fitted parameters.

    job_id only names the job in log lines. source is the finished job whose policy a
    policy_evaluation residual of kind 'job' evaluates, read from the store by the caller.
    """
    control = control or SolveControl()
    if control.deadline is None:
        control.deadline = time.monotonic() + spec.time_limit_s
    load = _load_average()
    started = time.perf_counter()

    model = build_model(spec)
    setup_s = time.perf_counter() - started

    solve_started, cpu_started = time.perf_counter(), time.process_time()
    try:
        solution = solve(model, spec, control, source)
    except (SolveDiverged, SolveTimedOut, SolveCancelled) as stop:
        status = {SolveDiverged: "diverged", SolveTimedOut: "timed_out",
                  SolveCancelled: "cancelled"}[type(stop)]
        timings = _partial_timings(setup_s, solve_started, cpu_started, started)
        return Outcome(status, _stopped_fields(stop, control, timings, load))
    except (ValueError, ArithmeticError, np.linalg.LinAlgError, RuntimeError, MemoryError) as exc:
        logger.exception("job %s: solver failed for %s", job_id, spec.summary())
        return Outcome("failed", {"error": f"solver failed: {type(exc).__name__}: {exc}",
                                  "history": control.history, **machine_fields(load)})
    solve_s = time.perf_counter() - solve_started
    solve_cpu_s = time.process_time() - cpu_started

    control.phase("evaluating accuracy on 10,000 box points and a 10,000-period path")
    evaluate_started = time.perf_counter()
    accuracy = evaluate_solution(model, spec, solution)
    evaluate_s = time.perf_counter() - evaluate_started

    fields = {
        "errors": accuracy.as_errors(),
        "timings": {"setup_s": setup_s, "solve_s": solve_s, "evaluate_s": evaluate_s,
                    "total_s": time.perf_counter() - started, "solve_cpu_s": solve_cpu_s},
        "n_params": solution.n_params,
        "n_conditions": solution.n_conditions,
        "iterations": solution.iterations,
        "converged": solution.converged,
        "condition_number": solution.condition_number,
        "history": control.history,
        "warnings": _warnings(spec, solution),
        "diagnostics": {**solution.extra, **getattr(accuracy, "diagnostics", {})},
        **machine_fields(load),
    }
    if not accuracy.finite:
        fields["error"] = ("the fitted policy gives non-finite Euler errors or an infeasible "
                           "simulated path (c <= 0 or k' <= 0)")
        return Outcome("diverged", fields, solution.parameters)
    return Outcome("succeeded", fields, solution.parameters)


def evaluate_solution(model, spec: JobSpec, solution: Solution):
    """Score a solution with the evaluator of the spec's model."""
    if spec.model.name == "multi_country":
        from solvers.multicountry_jobs import evaluate_job
        return evaluate_job(model, solution.policy)
    if spec.model.name == "growth":
        return evaluate(model, solution.policy)
    return savings_errors(model, solution.policy)


class SavingsEvaluation:
    """The savings model's accuracy in the record's `errors` layout.

    max_log10 and mean_log10 are over interior points (where the borrowing limit does
    not bind); binding points are scored apart by the complementarity error, and
    infeasible points (c > a + b) are counted, never mixed in.
    """

    def __init__(self, accuracy):
        self.accuracy = accuracy

    @property
    def finite(self) -> bool:
        return self.accuracy.finite

    def as_errors(self) -> dict[str, Any]:
        sets = {}
        for name in ("box", "path"):
            figures = getattr(self.accuracy, name).as_dict()
            block = {"max_log10": figures.pop("interior_max_log10"),
                     "mean_log10": figures.pop("interior_mean_log10"), **figures}
            if name == "path":
                block["share_outside_box"] = figures["n_outside_box"] / max(1, figures["n_points"])
            sets[name] = block
        return {**sets, "closed_form": None}


def savings_errors(model, policy) -> SavingsEvaluation:
    """Score a savings policy c(a, i) with the constraint-aware evaluator."""
    from solvers.savings import accuracy

    return SavingsEvaluation(accuracy(model, policy))


def _warnings(spec: JobSpec, solution: Solution) -> list[str]:
    """Return caveats a reader of the result must see, such as a solve that did not converge."""
    if solution.converged:
        return []
    if spec.model.name == "multi_country" and spec.method.basis.kind == "nn":
        return ["after the last step, one more period took some training chains' capital out "
                "of the widened box (or to a non-finite value); the errors describe the final network"]
    if spec.method.basis.kind == "nn":
        return ["the final stability check failed: simulated capital left the approximation "
                "domain, so the returned network is the best earlier checkpoint"]
    if spec.method.objective.kind == "sampled_mse":
        from solvers.sampled import CONVERGED_MAX_RESIDUAL

        return [f"{spec.method.algorithm.kind} ran all {solution.iterations} steps, but the largest "
                f"Euler residual on the node set, {solution.extra['node_max_residual']:.2e}, is not "
                f"below {CONVERGED_MAX_RESIDUAL:g}; the errors describe an unconverged policy"]
    return [f"{spec.method.algorithm.kind} did not meet its stopping rule (tol = "
            f"{spec.method.algorithm.tol:g}) in {solution.iterations} iterations; the errors "
            f"describe an unconverged policy"]


def _partial_timings(setup_s: float, solve_started: float, cpu_started: float,
                     started: float) -> dict[str, float]:
    """Return the timings of a job stopped during its solve (no evaluation ran)."""
    now = time.perf_counter()
    return {"setup_s": setup_s, "solve_s": now - solve_started, "evaluate_s": 0.0,
            "total_s": now - started, "solve_cpu_s": time.process_time() - cpu_started}


def _stopped_fields(stop, control: SolveControl, timings: dict[str, float],
                    load: float | None) -> dict[str, Any]:
    """Return the record fields known when a solve stops early."""
    residual = stop.residual if stop.residual is not None else float("nan")
    return {
        "error": str(stop),
        "iterations": stop.iteration,
        "converged": False,
        "history": control.history,
        "timings": timings,
        "progress": {"iteration": stop.iteration, "residual": residual,
                     "elapsed_s": timings["total_s"]},
        **machine_fields(load),
    }


def _load_average() -> float | None:
    """Return the 1-minute load average of the machine, where the system reports one."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_fields(load: float | None = None) -> dict[str, Any]:
    """Return the `hardware` and `versions` blocks describing this process.

    load is the machine's 1-minute load average when the job started: timings of jobs
    that ran while other work kept the cores busy are not comparable with the rest.
    """
    import scipy
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    hardware = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "load_average_1m": load,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }
    versions = {
        "eulerbench": _version("eulerbench"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
    }
    return {"hardware": hardware, "versions": versions}


def _cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or platform's guess elsewhere."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    """Return an installed package's version, or 'unknown' when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def warm_up() -> None:
    """Run tiny solves so that a fresh process's first job is not timed with one-off costs.

    The first Newton solve in a process pays for lazy imports and first calls into
    LAPACK and scipy.sparse (about 0.1 to 1 s measured on a 2-core VM), which would
    otherwise land in that job's solve time.
    """
    model = GrowthModel()
    for basis in ({"kind": "chebyshev", "degree": 3}, {"kind": "spline", "n_basis": 6}):
        spec = JobSpec.model_validate({"method": {"basis": basis}})
        solve(model, spec, SolveControl())
