"""Print solve time and path accuracy of the polynomial methods of the N-country model.

    python benchmarks/multicountry.py                       # N = 1, 2, 4, 6, 8, 10
    python benchmarks/multicountry.py --countries 2 4       # a shorter list
    python benchmarks/multicountry.py --path-periods 2000   # a shorter evaluation path
    python benchmarks/multicountry.py --variables levels logs   # both coordinates of k

Each row solves the default model (log utility, delta 0.025) with one method and reports
the wall and CPU seconds of the solve alone, the iterations, K N, and the evaluator's
log10 Euler errors on the simulated path (10,000 periods by default) with the
evaluation rule (a Gauss-Hermite product for N <= 2, M2 above). The last lines fit
`log(solve seconds) = a + b log(d)` per method over the N given, d = 2N. With
`--variables logs` the methods fit log k' on (log k, log a), and with `levels` k' on
(k, log a); the default `auto` takes logs at N = 1 and levels above.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from solvers.control import SolveControl, SolveStopped
from solvers.multicountry import MultiCountryModel
from solvers.multicountry_evaluate import evaluate
from solvers.multicountry_solver import estimate_size, solve_multicountry

METHODS = [
    ("fixed grid, complete deg 2", {"algorithm": "fixed_grid", "degree": 2}),
    ("fixed grid, complete deg 3", {"algorithm": "fixed_grid", "degree": 3}),
    ("gssa, complete deg 2", {"algorithm": "gssa", "degree": 2}),
    ("gssa, complete deg 3", {"algorithm": "gssa", "degree": 3}),
    ("fixed grid, smolyak level 2", {"algorithm": "fixed_grid", "product": "smolyak", "level": 2}),
]
MAX_PARAMS_PER_COUNTRY = 1_000  # rows with more coefficients per country are skipped (minutes each)


def main() -> None:
    """Run every method for every N and print one row per run, then the fitted exponents."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--countries", type=int, nargs="+", default=[1, 2, 4, 6, 8, 10],
                        help="Numbers of countries N to run (d = 2N).")
    parser.add_argument("--path-periods", type=int, default=10_000,
                        help="Periods of the evaluation path after its 1,000 burn-in periods.")
    parser.add_argument("--variables", nargs="+", choices=["auto", "levels", "logs"], default=["auto"],
                        help="Coordinates of capital in the basis (auto: logs at N = 1, levels "
                        "above); each value runs every method.")
    args = parser.parse_args()
    methods = [(name if variables == "auto" else f"{name}, {variables}", {**settings, "variables": variables})
               for variables in args.variables for name, settings in METHODS]

    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{'method':36} {'N':>3} {'d':>3} {'K N':>7} {'iter':>5} {'solve s':>8} {'cpu s':>7} "
          f"{'path max':>9} {'path mean':>10} {'out':>6}")
    times: dict[str, list[tuple[int, float]]] = {name: [] for name, _ in methods}
    for countries in args.countries:
        model = MultiCountryModel(countries=countries)
        for name, settings in methods:
            if estimate_size(model, settings)[0] > MAX_PARAMS_PER_COUNTRY * countries:
                print(f"{name:36} {countries:>3} skipped: more than {MAX_PARAMS_PER_COUNTRY} "
                      f"coefficients per country")
                continue
            try:
                row = _run(model, settings, args.path_periods)
            except SolveStopped as exc:
                print(f"{name:36} {countries:>3} {type(exc).__name__}: {exc}", flush=True)
                continue
            times[name].append((2 * countries, row["solve_s"]))
            print(f"{name:36} {countries:>3} {2 * countries:>3} {row['n_params']:>7} "
                  f"{row['iterations']:>5} {row['solve_s']:>8.2f} {row['cpu_s']:>7.2f} "
                  f"{row['path_max']:>9.2f} {row['path_mean']:>10.2f} {row['outside']:>6.3f}",
                  flush=True)

    print("\nlog-log exponent b of solve time against d:")
    for name, points in times.items():
        if len(points) >= 2:
            d, seconds = np.array(points).T
            slope = np.polyfit(np.log(d), np.log(seconds), 1)[0]
            print(f"  {name:36} b = {slope:.2f} over d = {', '.join(str(int(v)) for v in d)}")


def _run(model: MultiCountryModel, settings: dict, path_periods: int) -> dict:
    """Solve once and evaluate on the path; return the figures of one row."""
    wall, cpu = time.perf_counter(), time.process_time()
    solution = solve_multicountry(model, settings, SolveControl(), seed=0)
    solve_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    accuracy = evaluate(model, solution.policy, box_count=100, path_periods=path_periods,
                        sphere_count=10)
    return {"n_params": solution.n_params, "iterations": solution.iterations, "solve_s": solve_s,
            "cpu_s": cpu_s, "path_max": accuracy.path.max_log10,
            "path_mean": accuracy.path.mean_log10, "outside": accuracy.path_share_outside_box}


if __name__ == "__main__":
    main()
