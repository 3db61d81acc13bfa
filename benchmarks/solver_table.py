"""Print solve time, Euler errors and parameter count of each solver on the default growth model.

    python benchmarks/solver_table.py                 # chebyshev, spline and nn, seed 0
    python benchmarks/solver_table.py --repeats 5     # median solve time of 5 runs (nn runs once)
    python benchmarks/solver_table.py --skip-nn       # the collocation solvers only (seconds)

Solve times are wall-clock seconds of the solve phase alone, in this process, after a
warm-up solve. Errors come from the shared evaluator, as in every job record.
"""

from __future__ import annotations

import argparse
import platform
import statistics

from solvers.run import machine_fields, run_spec, warm_up
from solvers.spec import JobSpec

CASES = [
    ("chebyshev degree 10", {"method": {"basis": {"kind": "chebyshev", "degree": 10}}}),
    ("spline 30 x 30", {"method": {"basis": {"kind": "spline", "n_basis": 30}}}),
    ("nn 2 x 64 tanh", {"method": {"basis": {"kind": "nn"}}}),
    ("closed form, chebyshev 10", {"model": {"params": {"gamma": 1, "delta": 1}},
                                   "method": {"basis": {"kind": "chebyshev", "degree": 10}}}),
]


def main() -> None:
    """Run each case and print one table row per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Runs per collocation case; the median time is shown.")
    parser.add_argument("--skip-nn", action="store_true", help="Leave out the neural network (about a minute).")
    args = parser.parse_args()

    warm_up()
    machine = machine_fields()["hardware"]
    print(f"# {machine['cpu']}, {machine['cpu_count']} CPUs, torch threads {machine['torch_threads']}, "
          f"Python {platform.python_version()}")
    print(f"{'case':28} {'K':>6} {'iter':>6} {'solve s':>9} {'box max':>8} {'box mean':>9} "
          f"{'path max':>9} {'path mean':>10} {'out':>6} {'closed form':>12}")
    for name, data in CASES:
        if args.skip_nn and data["method"]["basis"]["kind"] == "nn":
            continue
        repeats = 1 if data["method"]["basis"]["kind"] == "nn" else max(1, args.repeats)
        outcomes = [run_spec(JobSpec.model_validate(data)) for _ in range(repeats)]
        print(_row(name, outcomes))


def _row(name: str, outcomes: list) -> str:
    """Format one case: the median solve time and the errors of the first run."""
    first = outcomes[0]
    if first.status != "succeeded":
        return f"{name:28} {first.status}: {first.fields.get('error')}"
    fields, errors = first.fields, first.fields["errors"]
    solve_s = statistics.median(o.fields["timings"]["solve_s"] for o in outcomes)
    closed = errors["closed_form"]["max_rel_distance"] if errors["closed_form"] else None
    closed_text = f"{closed:.1e}" if closed is not None else "-"
    return (f"{name:28} {fields['n_params']:>6} {fields['iterations']:>6} {solve_s:>9.3f} "
            f"{errors['box']['max_log10']:>8.2f} {errors['box']['mean_log10']:>9.2f} "
            f"{errors['path']['max_log10']:>9.2f} {errors['path']['mean_log10']:>10.2f} "
            f"{errors['path']['share_outside_box']:>6.3f} {closed_text:>12}")


if __name__ == "__main__":
    main()
