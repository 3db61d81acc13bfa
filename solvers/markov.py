"""Finite Markov chains for income, and two discretizations of a Gaussian AR(1).

The process discretized is log income

    x' = mu (1 - rho) + rho x + eps,    eps ~ N(0, sigma_eps^2),

whose unconditional mean is `mu` (the `mean` argument, 0 by default) and whose
unconditional variance is `sigma_x^2 = sigma_eps^2 / (1 - rho^2)`. `sigma_eps` is the
standard deviation of the innovation, not of `x`.

A chain is a vector of states (n,) and a transition matrix P (n, n) with
`P[i, j] = Prob(x' = states[j] | x = states[i])`, so each row sums to 1. Income levels
for a model are `y = exp(x)`, divided by their stationary mean so that `E[y] = 1` under
the chain's stationary distribution (`unit_mean_levels`).

- Rouwenhorst's method puts n equally spaced states on `mu +- sqrt(n - 1) sigma_x`. Its
  chain has the AR(1)'s unconditional mean, variance and first-order autocorrelation
  exactly, for any n >= 2 and any -1 < rho < 1, and `E[x' | x] = mu (1 - rho) + rho x`
  holds at every state.
- Tauchen's method puts n equally spaced states on `mu +- m sigma_x` and gives each
  state the normal probability of the interval around it, the two end states taking
  the tails. Its moments are approximate and improve as n grows. With rho near 1 and
  few states it understates persistence, so Rouwenhorst's method is the default.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import ndtr

ROW_SUM_TOL = 1e-10
MAX_STATES = 1000


class MarkovChain(NamedTuple):
    """States (n,) and transition matrix (n, n), rows indexed by the current state."""

    states: np.ndarray
    transition: np.ndarray


def rouwenhorst(n: int, rho: float, sigma_eps: float, mean: float = 0.0) -> MarkovChain:
    """Discretize log income `x' = mean (1 - rho) + rho x + eps` by Rouwenhorst's method.

    n: number of states, 2 <= n <= 1000. rho: persistence, -1 < rho < 1. sigma_eps:
    standard deviation of the innovation eps, > 0. mean: unconditional mean of x.
    Returns n equally spaced states on `mean +- sqrt(n - 1) sigma_eps / sqrt(1 - rho^2)`
    and the transition matrix. Under the stationary distribution, which is
    Binomial(n - 1, 1/2) over the states, the chain's variance is
    `sigma_eps^2 / (1 - rho^2)` and its first-order autocorrelation is rho, both exactly.
    """
    _check_ar1(n, rho, sigma_eps, mean)

    p = (1 + rho) / 2
    transition = np.array([[p, 1 - p], [1 - p, p]])
    for size in range(3, n + 1):
        transition = _rouwenhorst_step(transition, p, size)

    half_width = math.sqrt(n - 1) * sigma_eps / math.sqrt(1 - rho ** 2)
    states = mean + np.linspace(-half_width, half_width, n)
    return MarkovChain(states, transition)


def _rouwenhorst_step(previous: np.ndarray, p: float, size: int) -> np.ndarray:
    """Build the size x size Rouwenhorst matrix from the (size - 1) x (size - 1) one.

    The four copies of the previous matrix are shifted into the corners with weights
    p, 1 - p, 1 - p, p. Every row but the first and last then sums to 2 and is halved.
    """
    grown = np.zeros((size, size))
    grown[:-1, :-1] += p * previous
    grown[:-1, 1:] += (1 - p) * previous
    grown[1:, :-1] += (1 - p) * previous
    grown[1:, 1:] += p * previous

    grown[1:-1, :] /= 2
    return grown


def tauchen(n: int, rho: float, sigma_eps: float, m: float = 3.0, mean: float = 0.0) -> MarkovChain:
    """Discretize log income `x' = mean (1 - rho) + rho x + eps` by Tauchen's method.

    n: number of states, 2 <= n <= 1000. rho: persistence, -1 < rho < 1. sigma_eps:
    standard deviation of the innovation eps, > 0. m: half-width of the state grid in
    unconditional standard deviations of x, 0 < m <= 10. mean: unconditional mean of x.
    Returns n equally spaced states on `mean +- m sigma_eps / sqrt(1 - rho^2)` and the
    transition matrix. Moments are approximate; see the module docstring.
    """
    _check_ar1(n, rho, sigma_eps, mean)
    if not (math.isfinite(m) and 0 < m <= 10):
        raise ValueError(f"Tauchen grid half-width m = {m!r} is out of range; valid range is 0 < m <= 10")

    half_width = m * sigma_eps / math.sqrt(1 - rho ** 2)
    deviations = np.linspace(-half_width, half_width, n)

    # Interval edges around each state, with the outer edges at -inf and +inf.
    edges = np.concatenate([[-np.inf], (deviations[:-1] + deviations[1:]) / 2, [np.inf]])
    conditional_mean = rho * deviations[:, None]
    cdf = ndtr((edges[None, :] - conditional_mean) / sigma_eps)
    transition = np.diff(cdf, axis=1)

    # Each row's differences telescope to 1 up to rounding, and dividing by the row
    # sums removes that rounding error.
    transition /= transition.sum(axis=1, keepdims=True)
    return MarkovChain(mean + deviations, transition)


def discretize_ar1(method: str, n: int, rho: float, sigma_eps: float, m: float = 3.0,
                   mean: float = 0.0) -> MarkovChain:
    """Discretize log income with `method`, "rouwenhorst" or "tauchen"; m applies to Tauchen only."""
    if method == "rouwenhorst":
        return rouwenhorst(n, rho, sigma_eps, mean=mean)
    if method == "tauchen":
        return tauchen(n, rho, sigma_eps, m=m, mean=mean)
    raise ValueError(f"discretization method {method!r} is not known; valid choices: rouwenhorst, tauchen")


def unit_mean_levels(log_states: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """Return income levels `exp(log_states)` divided by their stationary mean, shape (n,).

    The stationary mean of the returned levels is 1, so income and cash on hand are in
    units of mean income. The log states' own mean does not matter because it cancels.
    """
    levels = np.exp(np.asarray(log_states, dtype=float))
    stationary = stationary_distribution(transition)
    return levels / (stationary @ levels)


def stationary_distribution(transition: np.ndarray) -> np.ndarray:
    """Return the stationary distribution pi (n,) with `pi P = pi`, pi >= 0 and sum 1.

    Raises ValueError when P is not a transition matrix (see `check_transition`) or
    when the chain has more than one stationary distribution, which happens when it has
    more than one closed class of states.
    """
    transition = check_transition(transition)
    n = transition.shape[0]

    # Solve (P^T - I) pi = 0 with one equation replaced by sum(pi) = 1.
    system = transition.T - np.eye(n)
    system[-1, :] = 1.0
    right_side = np.zeros(n)
    right_side[-1] = 1.0
    try:
        stationary = np.linalg.solve(system, right_side)
    except np.linalg.LinAlgError:
        raise ValueError("transition matrix has more than one stationary distribution "
                         "(the chain has more than one closed class of states)") from None

    residual = np.abs(stationary @ transition - stationary).max()
    if not np.all(np.isfinite(stationary)) or residual > 1e-9 or stationary.min() < -1e-9:
        raise ValueError("transition matrix has no unique stationary distribution; the "
                         f"linear solve left a residual of {residual:.3g}")

    stationary = np.clip(stationary, 0.0, None)
    return stationary / stationary.sum()


def check_transition(transition) -> np.ndarray:
    """Return P as a float array after checking that it is a transition matrix.

    Raises ValueError when P is not a non-empty square matrix, naming its shape. It
    also raises on the first entry that is negative or not finite, naming its row and
    column, and on the first row whose sum differs from 1 by more than 1e-10, naming
    the row and its sum.
    """
    matrix = np.asarray(transition, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"transition matrix must be a non-empty square matrix; got shape {matrix.shape}")

    bad = np.argwhere(~np.isfinite(matrix) | (matrix < 0))
    if bad.size:
        row, column = bad[0]
        raise ValueError(f"transition matrix row {row} has entry {float(matrix[row, column])!r} in column "
                         f"{column}; entries must be probabilities in [0, 1]")

    sums = matrix.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > ROW_SUM_TOL)
    if off.size:
        row = off[0]
        raise ValueError(f"transition matrix row {row} sums to {float(sums[row])!r}; each row must "
                         f"sum to 1 within {ROW_SUM_TOL:g}")
    return matrix


def _check_ar1(n: int, rho: float, sigma_eps: float, mean: float) -> None:
    """Raise ValueError naming the first AR(1) parameter outside its valid range."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= MAX_STATES:
        raise ValueError(f"number of states n = {n!r} is out of range; valid range is "
                         f"an integer 2 <= n <= {MAX_STATES}")
    if not (math.isfinite(rho) and -1 < rho < 1):
        raise ValueError(f"persistence rho = {rho!r} is out of range; valid range is -1 < rho < 1")
    if not (math.isfinite(sigma_eps) and sigma_eps > 0):
        raise ValueError(f"innovation standard deviation sigma_eps = {sigma_eps!r} is out of "
                         "range; valid range is 0 < sigma_eps (finite)")
    if not math.isfinite(mean):
        raise ValueError(f"mean = {mean!r} is not a finite number")
