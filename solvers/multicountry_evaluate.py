"""The accuracy evaluator of the N-country model, the same for every method.

It takes a fitted policy as a plain callable from states (n, 2N) to k' (n, N) on numpy
float64 arrays, so a torch network is wrapped by its caller. It computes the unit-free
error of every country's Euler equation and of the resource constraint
(`MultiCountryModel.euler_errors`) on fixed, seeded sets of states:

- box: BOX_POINTS uniform draws from the state box;
- path: PATH_PERIODS periods simulated under the policy after PATH_BURN_IN burn-in
  periods, with a fixed shock series, starting at the steady state. The errors are
  scored at every period, or at `path_count` evenly spaced periods when the caller
  asks for fewer;
- spheres: for each radius in SPHERE_RADII, SPHERE_POINTS points at that Euclidean
  distance from the steady state in logs, `(log k - log kss, log a)`, in uniformly
  drawn directions.

The expectation uses a rule at least as accurate as M2 whatever the solver used: a
10-node Gauss-Hermite product rule for N <= 2 (exact to degree 19) and M2 for N >= 3.
Each set reports `max_log10`, the log10 of the largest |error| over all N + 1 equations
and points, `mean_log10`, the log10 of the mean |error| over the N Euler equations and
the points, and the per-equation maxima. The resource-constraint error is left out of
the mean because consumption is allocated from the constraint, so it is rounding and
would only pull the mean down. The path also reports its share of states outside the
box, and where the model has a closed form the largest relative distance of k' to it
is reported on the box set and on the path. The path figure is the one to compare for
methods fitted on the ergodic set, which extrapolate to the corners of the box.

Cost: each point needs J policy calls (J = 2N^2 + 1 under M2), made in batches of
about MAX_NEXT_ROWS next-period states, so time and memory are bounded by the policy's
cost per row. NOTE: at N = 50 this is 5001 nodes per point; the point counts are
arguments so that a caller can trade coverage for time there. The path is always
simulated for its full length, so its share outside the box and its closed-form
distance cover every period even when its errors are scored on a subsample.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from solvers.multicountry import MultiCountryModel, Policy

logger = logging.getLogger(__name__)

BOX_POINTS = 10_000
BOX_SEED = 20_251_217
PATH_PERIODS = 10_000
PATH_BURN_IN = 1_000
PATH_SEED = 19_980_101
SPHERE_RADII = (0.01, 0.1, 0.3)
SPHERE_POINTS = 1_000
SPHERE_SEED = 20_110_301
MAX_NEXT_ROWS = 200_000  # next-period states per policy call


@dataclass
class SetAccuracy:
    """Error summary of one set of states; NaN figures mean the policy failed on the set."""

    max_log10: float
    mean_log10: float
    equation_max_log10: list[float]
    points: int

    def as_dict(self) -> dict:
        """Return the summary as a JSON-ready dict."""
        return {"max_log10": self.max_log10, "mean_log10": self.mean_log10,
                "equation_max_log10": list(self.equation_max_log10), "points": self.points}


@dataclass
class MultiCountryAccuracy:
    """Accuracy of one policy on the box, the path and the spheres; see the module docstring."""

    box: SetAccuracy
    path: SetAccuracy
    spheres: dict[float, SetAccuracy]
    path_share_outside_box: float
    closed_form_max_rel_distance: float | None
    closed_form_path_max_rel_distance: float | None
    rule: str
    rule_nodes: int
    equations: list[str] = field(default_factory=list)

    @property
    def finite(self) -> bool:
        """True when the max and mean figures of the box and the path are finite numbers.

        The spheres are left out: at a small sigma the radius 0.3 lies far outside the
        box, where a policy fitted on the box may give infeasible states.
        """
        sets = [self.box, self.path]
        figures = [s.max_log10 for s in sets] + [s.mean_log10 for s in sets]
        if self.closed_form_max_rel_distance is not None:
            figures.append(self.closed_form_max_rel_distance)
        return all(math.isfinite(f) for f in figures)

    def as_errors(self) -> dict:
        """Return the `errors` block of a result record."""
        closed_form = None
        if self.closed_form_max_rel_distance is not None:
            closed_form = {"max_rel_distance": self.closed_form_max_rel_distance,
                           "path_max_rel_distance": self.closed_form_path_max_rel_distance}
        path = self.path.as_dict()
        path["share_outside_box"] = self.path_share_outside_box
        return {
            "box": self.box.as_dict(),
            "path": path,
            "spheres": {f"{radius:g}": s.as_dict() for radius, s in self.spheres.items()},
            "closed_form": closed_form,
            "equations": list(self.equations),
            "rule": {"name": self.rule, "nodes": self.rule_nodes},
        }


def evaluation_rule(model: MultiCountryModel) -> tuple[str, np.ndarray, np.ndarray]:
    """Return the evaluator's rule: its name, nodes eps (J, N) and weights (J,)."""
    eps, weights = model.accurate_rule()
    name = "gauss_hermite_10" if model.countries <= 2 else "m2"
    return name, eps, weights


def euler_errors(model: MultiCountryModel, policy: Policy, states: np.ndarray,
                 eps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return |error| (n, N + 1) at states (n, 2N); rows with non-finite states are NaN."""
    errors = np.full((states.shape[0], model.countries + 1), np.nan)
    valid = np.flatnonzero(np.all(np.isfinite(states), axis=1))
    batch = max(1, MAX_NEXT_ROWS // eps.shape[0])
    with np.errstate(all="ignore"):
        for start in range(0, valid.size, batch):
            rows = valid[start:start + batch]
            errors[rows] = np.abs(model.euler_errors(policy, states[rows], eps, weights))
    return errors


def summarise(errors: np.ndarray, countries: int) -> SetAccuracy:
    """Return the set summary of |error| (n, N + 1); NaN when any error is not finite."""
    if errors.size == 0 or not np.all(np.isfinite(errors)):
        nan_list = [math.nan] * errors.shape[1]
        return SetAccuracy(math.nan, math.nan, nan_list, errors.shape[0])
    with np.errstate(divide="ignore"):
        per_equation = np.log10(errors.max(axis=0))
        return SetAccuracy(float(per_equation.max()),
                           float(np.log10(errors[:, :countries].mean())),
                           [float(v) for v in per_equation], errors.shape[0])


def box_points(model: MultiCountryModel, count: int = BOX_POINTS) -> np.ndarray:
    """Return `count` uniform draws from the state box with the fixed seed, shape (count, 2N)."""
    unit = np.random.default_rng(BOX_SEED).random((count, model.n_states))
    low, high = model.bounds[:, 0], model.bounds[:, 1]
    return low + unit * (high - low)


def sphere_points(model: MultiCountryModel, radius: float, count: int = SPHERE_POINTS) -> np.ndarray:
    """Return `count` states at distance radius from the steady state in logs, shape (count, 2N)."""
    directions = np.random.default_rng(SPHERE_SEED).standard_normal((count, model.n_states))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    offsets = radius * directions
    k = model.kss * np.exp(offsets[:, :model.countries])
    return np.hstack([k, offsets[:, model.countries:]])


def path_points(model: MultiCountryModel, policy: Policy, periods: int = PATH_PERIODS) -> np.ndarray:
    """Return the simulated path under policy with the fixed seed, shape (periods, 2N)."""
    with np.errstate(all="ignore"):
        return model.simulate(policy, periods, PATH_BURN_IN, PATH_SEED)


def share_outside(model: MultiCountryModel, states: np.ndarray) -> float:
    """Return the share of states outside the box; a path cut short counts as outside."""
    low, high = model.bounds[:, 0], model.bounds[:, 1]
    with np.errstate(invalid="ignore"):
        inside = np.all((states >= low) & (states <= high), axis=1)
    return float(1 - inside.mean())


def closed_form_distance(model: MultiCountryModel, policy: Policy, states: np.ndarray) -> float | None:
    """Return max |k' - k'_exact| / k'_exact over states and countries, or None without a closed form.

    Rows with non-finite states (a path cut short) give NaN.
    """
    if not model.has_closed_form:
        return None
    if not np.all(np.isfinite(states)):
        return math.nan
    exact = model.closed_form_capital(states)
    with np.errstate(all="ignore"):
        distance = np.abs(np.asarray(policy(states), dtype=float) - exact) / exact
    return float(distance.max()) if np.all(np.isfinite(distance)) else math.nan


def scored_periods(periods: int, count: int | None) -> np.ndarray:
    """Return the indices of the path periods whose errors are scored: all of them, or
    `count` evenly spaced ones from the first to the last."""
    if count is None or count >= periods:
        return np.arange(periods)
    if count < 2:
        raise ValueError(f"path_count must be at least 2 (or None for every period); got {count}")
    return np.unique(np.round(np.linspace(0, periods - 1, count)).astype(int))


def evaluate(model: MultiCountryModel, policy: Policy, box_count: int = BOX_POINTS,
             path_periods: int = PATH_PERIODS, sphere_count: int = SPHERE_POINTS,
             path_count: int | None = None) -> MultiCountryAccuracy:
    """Measure a policy on the box, the simulated path and the spheres with the evaluation rule.

    A path_count below path_periods scores the path's errors on that many evenly spaced periods.
    """
    rule, eps, weights = evaluation_rule(model)
    n = model.countries

    box = box_points(model, box_count)
    box_summary = summarise(euler_errors(model, policy, box, eps, weights), n)
    path = path_points(model, policy, path_periods)
    scored = path[scored_periods(path_periods, path_count)]
    path_summary = summarise(euler_errors(model, policy, scored, eps, weights), n)
    spheres = {}
    for radius in SPHERE_RADII:
        states = sphere_points(model, radius, sphere_count)
        spheres[radius] = summarise(euler_errors(model, policy, states, eps, weights), n)

    equations = [f"euler_{j + 1}" for j in range(n)] + ["resource"]
    return MultiCountryAccuracy(
        box=box_summary, path=path_summary, spheres=spheres,
        path_share_outside_box=share_outside(model, path),
        closed_form_max_rel_distance=closed_form_distance(model, policy, box),
        closed_form_path_max_rel_distance=closed_form_distance(model, policy, path),
        rule=rule, rule_nodes=int(weights.size), equations=equations)
