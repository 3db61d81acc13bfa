"""One-sector stochastic growth model with CRRA utility.

The state is `s = (k, log z)` and the policy is consumption `c(k, log z)`:

    y  = z k^alpha                      output
    m  = (1 - delta) k + y              cash on hand
    k' = m - c                          next-period capital
    log z' = rho log z + sigma eps,     eps ~ N(0, 1)

and the Euler equation `c^-gamma = beta E[c'^-gamma R']` with the gross return
`R' = 1 - delta + alpha z' k'^(alpha - 1)`. Its unit-free error is

    e(s) = beta E[c'^-gamma R'] / c^-gamma - 1.

With gamma = 1 and delta = 1 the policy is known in closed form,
`k' = alpha beta z k^alpha`.

The residual functions accept numpy arrays or torch tensors, so the neural-network
solver trains on exactly the equation the evaluator checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from solvers.spec import GrowthParams

# A policy maps arrays k and log z of one shape to consumption of that shape.
Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GrowthModel:
    """Calibrated growth model with its state box; see the module docstring."""

    alpha: float = 0.36
    beta: float = 0.99
    delta: float = 0.025
    gamma: float = 2.0
    rho: float = 0.95
    sigma: float = 0.01
    k_box: tuple[float, float] = (0.8, 1.2)
    logz_box_sd: float = 3.0

    @classmethod
    def from_params(cls, params: GrowthParams) -> "GrowthModel":
        """Build the model from validated spec parameters."""
        return cls(**{**params.model_dump(), "k_box": tuple(params.k_box)})

    @property
    def kss(self) -> float:
        """Deterministic steady-state capital, from `beta (1 - delta + alpha k^(alpha-1)) = 1`."""
        return (self.alpha / (1 / self.beta - 1 + self.delta)) ** (1 / (1 - self.alpha))

    @property
    def css(self) -> float:
        """Deterministic steady-state consumption, `kss^alpha - delta kss`."""
        return self.kss ** self.alpha - self.delta * self.kss

    @property
    def sigma_logz(self) -> float:
        """Unconditional standard deviation of log z, `sigma / sqrt(1 - rho^2)`."""
        return self.sigma / np.sqrt(1 - self.rho ** 2)

    @property
    def bounds(self) -> np.ndarray:
        """State box as a (2, 2) array: rows k and log z, columns lower and upper."""
        half = self.logz_box_sd * self.sigma_logz
        return np.array([[self.k_box[0] * self.kss, self.k_box[1] * self.kss], [-half, half]])

    def approximation_bounds(self, margin: float) -> np.ndarray:
        """Return the box widened by `margin` times its half-width on each side, shape (2, 2).

        Capital's lower end stays at or above half the box's lower end, so it is positive.
        """
        box = self.bounds
        half = (box[:, 1] - box[:, 0]) / 2
        wide = np.column_stack([box[:, 0] - margin * half, box[:, 1] + margin * half])
        wide[0, 0] = max(wide[0, 0], box[0, 0] / 2)
        return wide

    @property
    def has_closed_form(self) -> bool:
        """True for log utility with full depreciation."""
        return self.gamma == 1.0 and self.delta == 1.0

    def cash_on_hand(self, k, logz):
        """Return `m = (1 - delta) k + exp(logz) k^alpha`; arrays or tensors of one shape."""
        return (1 - self.delta) * k + _exp(logz) * k ** self.alpha

    def initial_consumption(self, k: np.ndarray, logz: np.ndarray) -> np.ndarray:
        """Return a stable first guess: consume the steady-state share of output.

        It is exact in the closed-form case and keeps capital near its steady state
        otherwise, which puts Newton's method and network training on the saddle path.
        """
        share = self.css / self.kss ** self.alpha
        return share * np.exp(logz) * k ** self.alpha

    def closed_form_capital(self, k: np.ndarray, logz: np.ndarray) -> np.ndarray:
        """Return `k' = alpha beta z k^alpha`; valid only when `has_closed_form`."""
        return self.alpha * self.beta * _exp(logz) * k ** self.alpha

    def euler_error(self, policy: Policy, k, logz, eps, weights):
        """Return the signed unit-free Euler error at each state.

        k, logz: arrays or tensors of shape (N,). eps, weights: quadrature nodes and
        weights for the standard normal innovation, shape (J,), weights summing to 1.
        Returns shape (N,). Infeasible choices (c <= 0 or k' <= 0) give NaN or inf,
        never an exception.
        """
        c = policy(k, logz)
        k_next = self.cash_on_hand(k, logz) - c
        logz_next = self.rho * logz[:, None] + self.sigma * eps[None, :]
        k_next_all = k_next[:, None] + 0 * logz_next

        c_next = policy(k_next_all, logz_next)
        gross_return = 1 - self.delta + self.alpha * _exp(logz_next) * k_next_all ** (self.alpha - 1)
        expectation = (weights[None, :] * c_next ** (-self.gamma) * gross_return).sum(-1)
        return self.beta * expectation * c ** self.gamma - 1

    def simulate(self, policy: Policy, periods: int, burn_in: int, seed: int):
        """Simulate the model under `policy` from the deterministic steady state.

        Returns arrays k and log z of shape (periods,), recorded after `burn_in`
        periods. The draws depend on `seed` alone, so every policy meets the same
        shocks. A path that becomes infeasible is cut short and padded with NaN.
        """
        eps = np.random.default_rng(seed).standard_normal(burn_in + periods)
        k_path = np.full(burn_in + periods, np.nan)
        logz_path = np.full(burn_in + periods, np.nan)
        k, logz = self.kss, 0.0
        for t in range(burn_in + periods):
            k_path[t], logz_path[t] = k, logz
            c = float(policy(np.array([k]), np.array([logz]))[0])
            k = float(self.cash_on_hand(k, logz)) - c
            if not (np.isfinite(k) and k > 0 and c > 0):
                break
            logz = self.rho * logz + self.sigma * eps[t]
        return k_path[burn_in:], logz_path[burn_in:]


def _exp(x):
    """Exponential of a numpy array or torch tensor, whichever x is."""
    return x.exp() if hasattr(x, "exp") else np.exp(x)
