"""Print the neural network's training time and accuracy on the N-country model, CPU next to GPU.

    python benchmarks/nn_devices.py                         # N = 1, 2, 4, 8, 10; CPU and, if present, GPU
    python benchmarks/nn_devices.py --countries 10 25 50 --steps 3000

Each row runs one `multi_country` job with the `nn` basis through `run_spec`, the code a
worker runs, once on the CPU and once on the first CUDA device when torch finds one.
It prints the solve (training) seconds, wall and CPU, and the evaluator's max log10 Euler
errors on the simulated path and the box. The last lines fit
`log(solve seconds) = a + b log(d)` per device over the N given, d = 2N. Without a CUDA
device the GPU rows are left out and the first line reports it.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import torch

from solvers.run import run_spec
from solvers.spec import JobSpec


def job_spec(countries: int, steps: int, width: int, device: str) -> JobSpec:
    """Return the nn job of the scaling suite for N = countries on device ('cpu' or 'gpu')."""
    return JobSpec.model_validate({
        "model": {"name": "multi_country", "params": {"countries": countries}},
        "method": {"basis": {"kind": "nn", "width": width},
                   "algorithm": {"kind": "adam", "steps": steps, "learning_rate": 0.005}},
        "device": device, "time_limit_s": 86_400})


def run_row(countries: int, steps: int, width: int, device: str) -> dict:
    """Run one job and return its figures for the table."""
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = run_spec(job_spec(countries, steps, width, device))
    fields = outcome.fields
    errors = fields.get("errors") or {}
    return {"device": device, "countries": countries, "status": outcome.status,
            "solve_s": (fields.get("timings") or {}).get("solve_s", math.nan),
            "cpu_s": time.process_time() - cpu_started, "wall_s": time.perf_counter() - started,
            "path_max": (errors.get("path") or {}).get("max_log10"),
            "box_max": (errors.get("box") or {}).get("max_log10")}


def print_table(rows: list[dict]) -> None:
    """Print one line per run."""
    print(f"{'device':>6} {'N':>4} {'d':>4} {'status':>10} {'solve s':>9} {'CPU s':>8} {'path max':>9} {'box max':>8}")
    for row in rows:
        path = "-" if row["path_max"] is None else f"{row['path_max']:.2f}"
        box = "-" if row["box_max"] is None else f"{row['box_max']:.2f}"
        print(f"{row['device']:>6} {row['countries']:>4} {2 * row['countries']:>4} {row['status']:>10} "
              f"{row['solve_s']:>9.2f} {row['cpu_s']:>8.2f} {path:>9} {box:>8}")


def print_exponents(rows: list[dict]) -> None:
    """Print the fitted exponent b of solve seconds against d per device."""
    for device in dict.fromkeys(row["device"] for row in rows):
        points = [(2 * r["countries"], r["solve_s"]) for r in rows
                  if r["device"] == device and r["status"] == "succeeded" and r["solve_s"] > 0]
        if len(points) < 2:
            print(f"{device}: fewer than two succeeded runs, no exponent")
            continue
        d, seconds = np.log([p[0] for p in points]), np.log([p[1] for p in points])
        slope = np.polyfit(d, seconds, 1)[0]
        print(f"{device}: solve seconds grow as d^{slope:.2f} over d = {points[0][0]} to {points[-1][0]}")


def main() -> None:
    """Run the CPU rows, then the GPU rows when a CUDA device exists, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--countries", type=int, nargs="+", default=[1, 2, 4, 8, 10])
    parser.add_argument("--steps", type=int, default=1500, help="Adam steps per job (default: 1500).")
    parser.add_argument("--width", type=int, default=32, help="Hidden units per layer (default: 32).")
    args = parser.parse_args()

    devices = ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (GPU rows left out)"
    print(f"CPU: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}; GPU: {gpu}")
    rows = []
    for device in devices:
        for countries in args.countries:
            rows.append(run_row(countries, args.steps, args.width, device))
            print(f"ran {device} N = {countries}: {rows[-1]['status']}", flush=True)
    print()
    print_table(rows)
    print_exponents(rows)


if __name__ == "__main__":
    main()
