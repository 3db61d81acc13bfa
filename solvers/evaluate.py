"""The one accuracy evaluator that every method is measured with.

A solver's own loss is never the reported accuracy. This module takes a fitted policy
as a plain callable and computes the unit-free Euler error with a Gauss-Hermite rule of
more nodes than any solver may use, on two fixed sets of states:

- the box set: 10,000 points drawn uniformly from the state box with a fixed seed
  (the same unit-square draws for every job, mapped into the model's box);
- the path set: 10,000 periods simulated under the fitted policy after 1,000 burn-in
  periods, with a fixed seed for the innovations.

Each set reports `max_log10 = log10(max |e|)` and `mean_log10 = log10(mean |e|)`; the
path also reports the share of its points outside the box. Where the model has a
closed form, the largest relative distance of `k'` to it on the box set is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from solvers.growth import GrowthModel, Policy
from solvers.quadrature import gauss_hermite

EVALUATION_QUADRATURE_NODES = 20
BOX_POINTS = 10_000
BOX_SEED = 20_251_217
PATH_PERIODS = 10_000
PATH_BURN_IN = 1_000
PATH_SEED = 19_980_101
CHUNK = 2_000  # points per policy call, so that basis matrices stay small in memory


@dataclass
class Accuracy:
    """Euler-error summary of one policy. Non-finite figures mean the policy diverged."""

    box_max_log10: float
    box_mean_log10: float
    path_max_log10: float
    path_mean_log10: float
    path_share_outside_box: float
    closed_form_max_rel_distance: float | None

    @property
    def finite(self) -> bool:
        """True when every reported figure is a finite number."""
        figures = [self.box_max_log10, self.box_mean_log10,
                   self.path_max_log10, self.path_mean_log10]
        if self.closed_form_max_rel_distance is not None:
            figures.append(self.closed_form_max_rel_distance)
        return all(math.isfinite(f) for f in figures)

    def as_errors(self) -> dict:
        """Return the `errors` block of a result record."""
        closed_form = None
        if self.closed_form_max_rel_distance is not None:
            closed_form = {"max_rel_distance": self.closed_form_max_rel_distance}
        return {
            "box": {"max_log10": self.box_max_log10, "mean_log10": self.box_mean_log10},
            "path": {
                "max_log10": self.path_max_log10,
                "mean_log10": self.path_mean_log10,
                "share_outside_box": self.path_share_outside_box,
            },
            "closed_form": closed_form,
        }


def box_points(model: GrowthModel) -> tuple[np.ndarray, np.ndarray]:
    """Return the fixed evaluation points of the state box: k and log z, shape (10000,)."""
    unit = np.random.default_rng(BOX_SEED).random((BOX_POINTS, 2))
    low, high = model.bounds[:, 0], model.bounds[:, 1]
    points = low + unit * (high - low)
    return points[:, 0], points[:, 1]


def euler_errors(model: GrowthModel, policy: Policy, k: np.ndarray, logz: np.ndarray) -> np.ndarray:
    """Return |e| at each state with the evaluation rule; NaN where the policy fails."""
    eps, weights = gauss_hermite(EVALUATION_QUADRATURE_NODES)
    errors = np.full(k.shape, np.nan)
    valid = np.isfinite(k) & np.isfinite(logz)
    index = np.flatnonzero(valid)
    with np.errstate(all="ignore"):
        for start in range(0, index.size, CHUNK):
            part = index[start:start + CHUNK]
            errors[part] = np.abs(model.euler_error(policy, k[part], logz[part], eps, weights))
    return errors


def log10_summary(errors: np.ndarray) -> tuple[float, float]:
    """Return (log10 max, log10 mean) of |e|; NaN when any error is not finite."""
    if errors.size == 0 or not np.all(np.isfinite(errors)):
        return math.nan, math.nan
    with np.errstate(divide="ignore"):
        return float(np.log10(errors.max())), float(np.log10(errors.mean()))


def share_outside(model: GrowthModel, k: np.ndarray, logz: np.ndarray) -> float:
    """Return the share of states outside the box; a path cut short counts as outside."""
    low, high = model.bounds[:, 0], model.bounds[:, 1]
    with np.errstate(invalid="ignore"):
        inside = (k >= low[0]) & (k <= high[0]) & (logz >= low[1]) & (logz <= high[1])
    return float(1 - inside.mean())


def closed_form_distance(model: GrowthModel, policy: Policy, k: np.ndarray, logz: np.ndarray) -> float | None:
    """Return max |k' - k'_exact| / k'_exact on the given states, or None without a closed form."""
    if not model.has_closed_form:
        return None
    with np.errstate(all="ignore"):
        k_next = model.cash_on_hand(k, logz) - policy(k, logz)
        exact = model.closed_form_capital(k, logz)
        distance = np.abs(k_next - exact) / exact
    return float(distance.max()) if np.all(np.isfinite(distance)) else math.nan


def evaluate(model: GrowthModel, policy: Policy) -> Accuracy:
    """Measure a fitted policy on the box set and the simulated path."""
    k_box, logz_box = box_points(model)
    box_max, box_mean = log10_summary(euler_errors(model, policy, k_box, logz_box))

    with np.errstate(all="ignore"):
        k_path, logz_path = model.simulate(policy, PATH_PERIODS, PATH_BURN_IN, PATH_SEED)
    path_max, path_mean = log10_summary(euler_errors(model, policy, k_path, logz_path))

    return Accuracy(
        box_max_log10=box_max,
        box_mean_log10=box_mean,
        path_max_log10=path_max,
        path_mean_log10=path_mean,
        path_share_outside_box=share_outside(model, k_path, logz_path),
        closed_form_max_rel_distance=closed_form_distance(model, policy, k_box, logz_box),
    )
