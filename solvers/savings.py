"""Income fluctuation (savings) model with a borrowing limit.

The state is cash on hand `a` and the income state `i` of a finite Markov chain with
income levels `y` (n,) and transition matrix `P` (n, n). The policy is consumption
`c(a, i)`:

    s  = a - c >= -b                    end-of-period savings, b >= 0 the borrowing limit
    a' = R s + y[j]                     with probability P[i, j]

and utility is CRRA, `u(c) = c^(1 - gamma) / (1 - gamma)`. Consumption is at most
`a + b`, the borrowing bound. The Euler equation holds with complementary slackness:

    u'(c) >= beta R E[u'(c') | i],   with equality where c < a + b.

Its signed unit-free error is `e = beta R E[u'(c') | i] / u'(c) - 1`. At interior points
`e` should be 0. At points where the constraint binds (c = a + b) any `e <= 0` is
consistent, so those points are scored by the complementarity error `max(0, e)`.

Units: `SavingsModel.from_ar1` scales income levels so that their stationary mean is
1 (see `solvers.markov`), so cash on hand, consumption and b are in units of mean
income. `SavingsModel.from_chain` keeps the levels it is given.

Each income state j has its own lower end of cash on hand, `-R b + y[j]`, reached by
entering the period with the maximum debt. The least cash on hand in any state is
`-R b + min(y)`. The model requires `beta R < 1`. Otherwise assets have no stationary
distribution, because the consumer keeps accumulating.

`egm_reference` solves the model by the endogenous grid method on a fine savings grid
and `accuracy` scores any policy on fixed box points and on a simulated path.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from solvers.markov import check_transition, discretize_ar1, stationary_distribution, unit_mean_levels

logger = logging.getLogger(__name__)

# A policy maps cash on hand a (float array) and income-state indices i (integer array)
# of one shape to consumption of that shape.
SavingsPolicy = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Upper end of cash on hand in units of mean income. Under the EGM policy, a
# 10,000-period path (seed 1) at the default calibration stays below 3.6, and one with
# gamma = 5 (stronger precautionary saving) below 12, so the box covers both with room
# to spare.
DEFAULT_A_MAX_MULTIPLE = 20.0

BINDING_TOL = 1e-10
FEASIBILITY_TOL = 1e-12

# Evaluation sets, of the same sizes and seeds as in solvers/evaluate.py.
BOX_POINTS = 10_000
BOX_SEED = 20_251_217
PATH_PERIODS = 10_000
PATH_BURN_IN = 1_000
PATH_SEED = 19_980_101


@dataclass(frozen=True, eq=False)
class SavingsModel:
    """Calibrated savings model; see the module docstring.

    R: gross interest rate. beta: discount factor. gamma: relative risk aversion.
    b: borrowing limit (savings >= -b), in units of mean income. y: income levels (n,).
    P: transition matrix (n, n). a_max: upper end of the cash-on-hand box.
    """

    R: float
    beta: float
    gamma: float
    b: float
    y: np.ndarray
    P: np.ndarray
    a_max: float

    def __post_init__(self) -> None:
        for name in ("R", "beta", "gamma", "b", "a_max"):
            object.__setattr__(self, name, float(getattr(self, name)))
        y = np.array(self.y, dtype=float)
        P = check_transition(self.P).copy()
        y.setflags(write=False)
        P.setflags(write=False)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "P", P)

        _check_preferences(self.R, self.beta, self.gamma)
        _check_income(y, P)
        _check_borrowing_limit(self.b, self.R, y)
        _check_a_max(self.a_max, self.R, self.b, y)

    @classmethod
    def from_ar1(cls, R: float = 1.01, beta: float = 0.96, gamma: float = 1.5, b: float = 0.0,
                 rho: float = 0.9, sigma_eps: float = 0.1, n_states: int = 5,
                 method: str = "rouwenhorst", tauchen_m: float = 3.0,
                 a_max_multiple: float = DEFAULT_A_MAX_MULTIPLE) -> "SavingsModel":
        """Build the model with log income an AR(1) discretized by `method`.

        Log income `x' = rho x + eps`, `eps ~ N(0, sigma_eps^2)`, has mean 0 and is
        discretized into `n_states` states by "rouwenhorst" or "tauchen" (grid half-width
        `tauchen_m` unconditional standard deviations). Income levels `exp(x)` are then
        scaled to stationary mean 1, and `a_max = a_max_multiple`.
        """
        log_states, transition = discretize_ar1(method, n_states, rho, sigma_eps, m=tauchen_m)
        levels = unit_mean_levels(log_states, transition)
        return cls(R=R, beta=beta, gamma=gamma, b=b, y=levels, P=transition,
                   a_max=a_max_multiple)

    @classmethod
    def from_chain(cls, y, P, R: float = 1.01, beta: float = 0.96, gamma: float = 1.5,
                   b: float = 0.0, a_max_multiple: float = DEFAULT_A_MAX_MULTIPLE) -> "SavingsModel":
        """Build the model from an explicit income chain: levels y (n,) and transition P (n, n).

        The levels are used as given, not rescaled, and
        `a_max = a_max_multiple * (stationary mean of y)`.
        """
        y = np.asarray(y, dtype=float)
        P = check_transition(P)
        _check_income(y, P)
        mean_income = float(stationary_distribution(P) @ y)
        return cls(R=R, beta=beta, gamma=gamma, b=b, y=y, P=P, a_max=a_max_multiple * mean_income)

    @property
    def n_states(self) -> int:
        """Number of income states n."""
        return self.y.size

    @property
    def stationary(self) -> np.ndarray:
        """Stationary distribution of the income chain, shape (n,)."""
        return stationary_distribution(self.P)

    @property
    def mean_income(self) -> float:
        """Stationary mean of income, 1 for models built by `from_ar1`."""
        return float(self.stationary @ self.y)

    @property
    def bounds(self) -> np.ndarray:
        """Cash-on-hand box per income state, shape (n, 2): columns lower and upper.

        The lower end `-R b + y[j]` is the least cash on hand reachable in state j. The
        upper end `a_max` is the same for every state.
        """
        lower = -self.R * self.b + self.y
        return np.column_stack([lower, np.full(self.n_states, float(self.a_max))])

    def borrowing_bound(self, a):
        """Return the maximum feasible consumption `a + b`, same shape as a."""
        return a + self.b

    def next_cash_on_hand(self, savings: np.ndarray) -> np.ndarray:
        """Return `a' = R s + y[j]` for every next income state j, shape (N, n) for savings (N,)."""
        return self.R * savings[:, None] + self.y[None, :]

    def euler_error(self, policy: SavingsPolicy, a: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Return the signed unit-free Euler error `beta R E[u'(c') | i] / u'(c) - 1`, shape (N,).

        a: cash on hand (N,). i: integer income-state indices (N,). The expectation is
        exact over the chain. Next states with zero probability are skipped. The policy
        is called once at the N states and once at the N * n next states. Infeasible
        choices give NaN or inf, never an exception, and the formula is applied
        whether or not the constraint binds (see `constraint_status`).

        NOTE: numpy arrays only. Unlike `GrowthModel.euler_error`, this has not been
        written or tested for torch tensors.
        """
        i = _state_indices(i, self.n_states)
        consumption = policy(a, i)
        return self._euler_error_given(policy, a, i, consumption)

    def _euler_error_given(self, policy: SavingsPolicy, a: np.ndarray, i: np.ndarray,
                           consumption: np.ndarray) -> np.ndarray:
        """Return the Euler error at states (a, i) where the policy gave `consumption`."""
        a_next = self.next_cash_on_hand(a - consumption)
        i_next = np.broadcast_to(np.arange(self.n_states), a_next.shape)
        c_next = policy(a_next.ravel(), i_next.ravel()).reshape(a_next.shape)

        probability = self.P[i]
        ratio = (c_next / consumption[:, None]) ** (-self.gamma)
        weighted = np.where(probability > 0, probability * ratio, 0.0)
        return self.beta * self.R * weighted.sum(axis=1) - 1

    def constraint_status(self, a: np.ndarray, consumption: np.ndarray,
                          binding_tol: float = BINDING_TOL) -> "ConstraintStatus":
        """Classify points by consumption against the borrowing bound `a + b`.

        Invalid: a or c is not finite, or c <= 0. Infeasible: the rest with
        c > a + b + 1e-12. Binding: the rest with c >= a + b - binding_tol. Interior:
        the rest. binding_tol is absolute, in units of mean income. A policy that is
        clipped at a + b binds exactly, and a policy that stops short of the bound by
        more than binding_tol is scored as interior, so its Euler error shows the gap.
        """
        bound = self.borrowing_bound(a)
        with np.errstate(invalid="ignore"):
            invalid = ~(np.isfinite(consumption) & (consumption > 0) & np.isfinite(a))
            infeasible = ~invalid & (consumption > bound + FEASIBILITY_TOL)
            binding = ~invalid & ~infeasible & (consumption >= bound - binding_tol)
        interior = ~invalid & ~infeasible & ~binding
        return ConstraintStatus(interior=interior, binding=binding, infeasible=infeasible, invalid=invalid)

    def next_outside_box(self, a: np.ndarray, i: np.ndarray, consumption: np.ndarray) -> np.ndarray:
        """Return a mask (N,) of points with a next state of positive probability outside the box."""
        bounds = self.bounds
        a_next = self.next_cash_on_hand(a - consumption)
        with np.errstate(invalid="ignore"):
            outside = (a_next < bounds[None, :, 0]) | (a_next > bounds[None, :, 1])
        return (outside & (self.P[i] > 0)).any(axis=1)

    def simulate(self, policy: SavingsPolicy, periods: int, burn_in: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Simulate cash on hand and income states under `policy`.

        Returns a (float) and i (int) of shape (periods,), recorded after `burn_in`
        periods. The path starts in the income state whose level is closest to the mean
        income, with zero assets, so `a = y[i]`. Income draws depend on `seed` alone, so
        every policy meets the same income path. When consumption is not a positive
        finite number the path of a is cut short and padded with NaN. Infeasible
        consumption above a + b is kept, so that the evaluator can count it.
        """
        states = self.income_path(burn_in + periods, seed)
        a_path = np.full(burn_in + periods, np.nan)

        a = float(self.y[states[0]])
        for t in range(burn_in + periods):
            a_path[t] = a
            c = float(policy(np.array([a]), states[t:t + 1])[0])
            if not (math.isfinite(c) and c > 0):
                break
            if t + 1 < burn_in + periods:
                a = self.R * (a - c) + float(self.y[states[t + 1]])
        return a_path[burn_in:], states[burn_in:]

    def income_path(self, periods: int, seed: int) -> np.ndarray:
        """Return a seeded path of income-state indices (periods,), starting at the mean state."""
        uniform = np.random.default_rng(seed).random(periods)
        cumulative = np.cumsum(self.P, axis=1)
        states = np.empty(periods, dtype=np.int64)
        states[0] = int(np.argmin(np.abs(self.y - self.mean_income)))

        for t in range(1, periods):
            row = cumulative[states[t - 1]]
            states[t] = min(int(np.searchsorted(row, uniform[t], side="right")), self.n_states - 1)
        return states

    def egm_reference(self, n_grid: int = 10_000, tol: float = 1e-12, max_iterations: int = 20_000,
                      initial: SavingsPolicy | None = None, kink_weight_min: float = 1e-3) -> "EGMSolution":
        """Solve the model by the endogenous grid method; see `solve_egm`."""
        return solve_egm(self, n_grid=n_grid, tol=tol, max_iterations=max_iterations,
                         initial=initial, kink_weight_min=kink_weight_min)


class ConstraintStatus(NamedTuple):
    """Boolean masks (N,) that split points into interior, binding, infeasible and invalid."""

    interior: np.ndarray
    binding: np.ndarray
    infeasible: np.ndarray
    invalid: np.ndarray


def complementarity_error(euler_errors: np.ndarray) -> np.ndarray:
    """Return `max(0, e)`, the violation of the Euler inequality at points where the constraint binds."""
    return np.maximum(euler_errors, 0.0)


# ---------------------------------------------------------------------------
# Endogenous grid method
#
# The policy of an income state j has a kink at a_star[j], where the constraint starts
# to bind. Through the expectation, c_i(s) then has a kink at every savings level s
# with `R s + y[j] = a_star[j]`, so the policy of state i has a kink at `s + c_i(s)`,
# which in turn makes kinks one period earlier, and so on. A linear interpolant that
# cuts across a kink is wrong to first order in the grid spacing. The solver therefore
# adds the savings levels of these kinks to the grid. A kink inherits its parent's
# weight times the transition probability that carries it, and kinks whose weight falls
# below `kink_weight_min` are dropped, which keeps their number finite.


@dataclass(frozen=True, eq=False)
class EGMSolution:
    """Policy found by the endogenous grid method, callable as `c(a, i)`.

    savings: end-of-period savings s on [-b, a_max], the base grid merged with the
    tracked kinks, shape (M,). cash_on_hand, consumption: the endogenous grid
    `a = s + c` and consumption per income state, shape (n, M). a_star: the kink per
    income state, shape (n,), the cash on hand below which the constraint binds, equal
    to `cash_on_hand[:, 0]`. Between grid points the policy interpolates linearly. Below
    a_star it is `c = a + b`. Above the last grid point it extrapolates the last segment
    linearly. iterations, max_change: the EGM iterations run and the last sup-norm
    change of consumption on the base grid. n_kinks: kink savings levels in the grid.
    """

    b: float
    savings: np.ndarray
    cash_on_hand: np.ndarray
    consumption: np.ndarray
    iterations: int
    max_change: float
    seconds: float
    n_kinks: int
    a_star: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "a_star", self.cash_on_hand[:, 0].copy())

    def __call__(self, a: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Return consumption at cash on hand a and integer income states i, same shape."""
        a = np.asarray(a, dtype=float)
        i = np.asarray(i)
        consumption = np.empty(a.shape)
        for state in range(self.cash_on_hand.shape[0]):
            mask = i == state
            if mask.any():
                consumption[mask] = interpolate_consumption(
                    a[mask], self.cash_on_hand[state], self.consumption[state], self.b)
        return consumption


class Kinks(NamedTuple):
    """Savings levels (K,) where the next-period policy of `source` (K,) has a kink, with weights (K,)."""

    savings: np.ndarray
    source: np.ndarray
    weight: np.ndarray


def interpolate_consumption(a: np.ndarray, a_nodes: np.ndarray, c_nodes: np.ndarray, b: float) -> np.ndarray:
    """Return consumption at a for one income state from its endogenous grid, shape of a.

    Linear between nodes, `a + b` below the first node (the kink) and the last
    segment's line above the last node.
    """
    consumption = np.interp(a, a_nodes, c_nodes)

    below = a < a_nodes[0]
    consumption[below] = a[below] + b

    above = a > a_nodes[-1]
    slope = (c_nodes[-1] - c_nodes[-2]) / (a_nodes[-1] - a_nodes[-2])
    consumption[above] = c_nodes[-1] + slope * (a[above] - a_nodes[-1])
    return consumption


def savings_grid(model: SavingsModel, n_grid: int, power: float = 2.0) -> np.ndarray:
    """Return G = n_grid savings levels on [-b, a_max], denser near -b, shape (G,).

    Point k is `-b + (a_max + b) (k / (G - 1))^power`. Savings up to a_max make the
    endogenous grid `a = s + c` reach past a_max in every state because c > 0. The
    policy bends most near the borrowing limit, where the grid is densest.
    """
    unit = np.linspace(0.0, 1.0, n_grid) ** power
    return -model.b + (model.a_max + model.b) * unit


def propagate_kinks(model: SavingsModel, savings: np.ndarray, cash_on_hand: np.ndarray,
                    kinks: Kinks, weight_min: float) -> Kinks:
    """Return the kinks of the next EGM step from the current policy nodes.

    savings (M,), cash_on_hand (n, M): current nodes, whose grid contains every savings
    level of `kinks` exactly. In state j the current policy has a kink at a_star[j]
    (weight 1) and at `cash_on_hand[j, s_k]` for each kink k whose weight times
    `P[j, source_k]` is at least weight_min. Each becomes a savings kink
    `(a - y[j]) / R` with source j, kept when it lies in (-b, a_max).
    """
    index = np.searchsorted(savings, kinks.savings)
    parts_savings, parts_source, parts_weight = [], [], []

    for state in range(model.n_states):
        weight = kinks.weight * model.P[state, kinks.source]
        carried = weight >= weight_min
        cash = np.concatenate([cash_on_hand[state, :1], cash_on_hand[state, index[carried]]])
        weight = np.concatenate([[1.0], weight[carried]])

        kink_savings = (cash - model.y[state]) / model.R
        inside = (kink_savings > -model.b) & (kink_savings < model.a_max)
        parts_savings.append(kink_savings[inside])
        parts_source.append(np.full(int(inside.sum()), state))
        parts_weight.append(weight[inside])

    return Kinks(np.concatenate(parts_savings), np.concatenate(parts_source), np.concatenate(parts_weight))


def merge_kinks(base: np.ndarray, kinks: Kinks, spacing: float = 1e-12) -> tuple[np.ndarray, Kinks]:
    """Return the base grid merged with the kink savings levels, and the kinks as placed.

    Kinks within `spacing` of a base point move onto it, and the rest are rounded to
    multiples of spacing, so no two grid points are closer than spacing / 2. Closer
    points could make the endogenous grid non-increasing through rounding.
    """
    position = np.clip(np.searchsorted(base, kinks.savings), 1, base.size - 1)
    left, right = base[position - 1], base[position]
    nearest = np.where(kinks.savings - left < right - kinks.savings, left, right)
    snapped = np.where(np.abs(kinks.savings - nearest) < spacing, nearest,
                       np.round(kinks.savings / spacing) * spacing)

    merged = np.unique(np.concatenate([base, snapped]))
    return merged, kinks._replace(savings=snapped)


def egm_step(model: SavingsModel, savings: np.ndarray, cash_on_hand: np.ndarray,
             consumption: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply one endogenous-grid update to the policy given on an endogenous grid.

    savings: the new grid (M,). cash_on_hand, consumption: current policy nodes (n, M0).
    Returns the new nodes (n, M): `c = (beta R E[c'^-gamma | i])^(-1/gamma)` at each
    savings level, with c' from the current policy at `a' = R s + y[j]`, and `a = s + c`.
    """
    a_next = model.R * savings[None, :] + model.y[:, None]
    c_next = np.empty_like(a_next)
    for state in range(model.n_states):
        c_next[state] = interpolate_consumption(a_next[state], cash_on_hand[state],
                                                consumption[state], model.b)

    expectation = model.P @ c_next ** (-model.gamma)
    new_consumption = (model.beta * model.R * expectation) ** (-1.0 / model.gamma)
    return savings[None, :] + new_consumption, new_consumption


def _initial_nodes(model: SavingsModel, n_nodes: int,
                   initial: SavingsPolicy | None) -> tuple[np.ndarray, np.ndarray]:
    """Return policy nodes (n, n_nodes) that reproduce `initial`, or `c = a + b` when it is None.

    The nodes are the initial policy's values on an even cash-on-hand grid from each
    state's lower end to `R a_max + max(y)`, the most cash on hand that the first step
    reads. The first EGM step then reads the initial policy through linear
    interpolation like every later one.
    """
    top = model.R * model.a_max + model.y.max()
    cash = np.stack([np.linspace(low, top, n_nodes) for low in model.bounds[:, 0]])
    if initial is None:
        return cash, cash + model.b

    states = np.broadcast_to(np.arange(model.n_states)[:, None], cash.shape)
    consumption = np.asarray(initial(cash.ravel(), states.ravel()), dtype=float).reshape(cash.shape)
    return cash, consumption


def solve_egm(model: SavingsModel, n_grid: int = 10_000, tol: float = 1e-12,
              max_iterations: int = 20_000, initial: SavingsPolicy | None = None,
              kink_weight_min: float = 1e-3) -> EGMSolution:
    """Iterate the endogenous grid method to a fixed point and return the policy.

    n_grid: base savings grid size G, 10 <= G <= 1,000,000 (see `savings_grid`). tol:
    stop when the sup-norm change of consumption on the base grid falls below tol, in
    units of mean income. The iteration contracts at a rate below 1, so the distance to
    the fixed point is a multiple of tol, not tol itself. initial: starting policy, by
    default `c = a + b` (the last period of a finite horizon). kink_weight_min: weight
    below which kinks are no longer added to the grid, 0 < kink_weight_min <= 1 (see
    the section comment above). Raises RuntimeError when the change is still above tol
    after max_iterations, or when consumption stops being a positive finite number.

    NOTE: the dropped kinks still lie between grid points. With the defaults, the
    Euler error of the result at off-grid interior points of the default calibration
    is at most about 1.5e-8 (measured in tests/solvers/test_savings.py). Other
    calibrations may need a smaller kink_weight_min or a larger n_grid.
    """
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)) or not 10 <= n_grid <= 1_000_000:
        raise ValueError(f"n_grid = {n_grid!r} is out of range; valid range is an integer "
                         "10 <= n_grid <= 1000000")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol = {tol!r} is out of range; valid range is 0 < tol (finite)")
    if not (math.isfinite(kink_weight_min) and 0 < kink_weight_min <= 1):
        raise ValueError(f"kink_weight_min = {kink_weight_min!r} is out of range; valid range "
                         "is 0 < kink_weight_min <= 1")

    started = time.perf_counter()
    base = savings_grid(model, n_grid)
    savings = base
    cash_on_hand, consumption = _initial_nodes(model, n_grid, initial)
    kinks = Kinks(np.empty(0), np.empty(0, dtype=np.int64), np.empty(0))
    previous = None
    change = math.inf

    for iteration in range(1, max_iterations + 1):
        kinks = propagate_kinks(model, savings, cash_on_hand, kinks, kink_weight_min)
        savings, kinks = merge_kinks(base, kinks)
        cash_on_hand, consumption = egm_step(model, savings, cash_on_hand, consumption)
        if not np.all(np.isfinite(consumption) & (consumption > 0)):
            raise RuntimeError(f"EGM iteration {iteration} produced consumption that is not a "
                               "positive finite number; check the initial policy")

        on_base = consumption[:, np.searchsorted(savings, base)]
        if previous is not None:
            change = float(np.abs(on_base - previous).max())
            if change < tol:
                break
        previous = on_base
    else:
        raise RuntimeError(f"EGM did not converge: sup-norm change {change:.3g} after "
                           f"{max_iterations} iterations is above tol = {tol:g}")

    seconds = time.perf_counter() - started
    logger.info("EGM converged: %d iterations, sup-norm change %.2e, %d grid points with "
                "%d kinks, %.2f s", iteration, change, savings.size, kinks.savings.size, seconds)
    return EGMSolution(b=model.b, savings=savings, cash_on_hand=cash_on_hand,
                       consumption=consumption, iterations=iteration, max_change=change,
                       seconds=seconds, n_kinks=int(kinks.savings.size))


# ---------------------------------------------------------------------------
# Accuracy of a policy


@dataclass
class PointSetAccuracy:
    """Accuracy of a policy on one set of points.

    The counts split the points as in `SavingsModel.constraint_status`, so
    `n_points = n_interior + n_binding + n_infeasible + n_invalid`. Interior figures
    are `log10` of the max and mean of |e| over interior points. Binding figures are
    the max and mean of the complementarity error `max(0, e)` over binding points, not
    in logs because they are often exactly 0. A figure is None when its set of points
    is empty and NaN when an error there is not finite. Infeasible and invalid points
    enter no figure. max_infeasibility is the largest `c - (a + b)` over infeasible
    points. n_outside_box counts points outside their income state's box, and
    n_next_outside_box counts interior and binding points with a next state of
    positive probability outside the box, where the policy is extrapolated.
    """

    n_points: int
    n_interior: int
    n_binding: int
    n_infeasible: int
    n_invalid: int
    n_outside_box: int
    n_next_outside_box: int
    interior_max_log10: float | None
    interior_mean_log10: float | None
    binding_max: float | None
    binding_mean: float | None
    max_infeasibility: float | None

    def as_dict(self) -> dict:
        """Return the figures as a plain dict."""
        return dict(self.__dict__)


@dataclass
class SavingsAccuracy:
    """Accuracy of a policy on the fixed box points and on the simulated path."""

    box: PointSetAccuracy
    path: PointSetAccuracy

    @property
    def finite(self) -> bool:
        """True when every point has positive finite consumption and no figure is NaN or infinite."""
        if self.box.n_invalid or self.path.n_invalid:
            return False
        figures = [self.box.interior_max_log10, self.box.interior_mean_log10,
                   self.box.binding_max, self.box.binding_mean,
                   self.path.interior_max_log10, self.path.interior_mean_log10,
                   self.path.binding_max, self.path.binding_mean]
        return all(f is None or math.isfinite(f) for f in figures)

    def as_errors(self) -> dict:
        """Return the `errors` block of a result record."""
        return {"box": self.box.as_dict(), "path": self.path.as_dict()}


def box_points(model: SavingsModel) -> tuple[np.ndarray, np.ndarray]:
    """Return the fixed evaluation points: a (10000,) and i (10000,) integer.

    Each point draws an income state uniformly and then a uniformly on that state's
    box `[-R b + y[i], a_max]`, from fixed-seed unit draws.
    """
    unit = np.random.default_rng(BOX_SEED).random((BOX_POINTS, 2))
    states = np.minimum((unit[:, 0] * model.n_states).astype(np.int64), model.n_states - 1)
    bounds = model.bounds[states]
    a = bounds[:, 0] + unit[:, 1] * (bounds[:, 1] - bounds[:, 0])
    return a, states


def score_points(model: SavingsModel, policy: SavingsPolicy, a: np.ndarray, i: np.ndarray,
                 binding_tol: float = BINDING_TOL) -> PointSetAccuracy:
    """Score a policy at states (a, i) of shape (N,); see `PointSetAccuracy`.

    A state with a NaN, as on a path that was cut short, counts as invalid.
    """
    i = _state_indices(i, model.n_states)
    bounds = model.bounds[i]

    with np.errstate(all="ignore"):
        consumption = np.full(a.shape, np.nan)
        known = np.isfinite(a)
        consumption[known] = policy(a[known], i[known])
        status = model.constraint_status(a, consumption, binding_tol)
        feasible = status.interior | status.binding

        errors = np.full(a.shape, np.nan)
        errors[feasible] = model._euler_error_given(policy, a[feasible], i[feasible], consumption[feasible])

        next_outside = np.zeros(a.shape, dtype=bool)
        next_outside[feasible] = model.next_outside_box(a[feasible], i[feasible], consumption[feasible])
        outside = (a < bounds[:, 0]) | (a > bounds[:, 1])

        over = consumption - model.borrowing_bound(a)
        over_infeasible = over[status.infeasible]

    interior_max, interior_mean = _log10_summary(np.abs(errors[status.interior]))
    binding_max, binding_mean = _summary(complementarity_error(errors[status.binding]))
    return PointSetAccuracy(
        n_points=int(a.size),
        n_interior=int(status.interior.sum()),
        n_binding=int(status.binding.sum()),
        n_infeasible=int(status.infeasible.sum()),
        n_invalid=int(status.invalid.sum()),
        n_outside_box=int(outside.sum()),
        n_next_outside_box=int(next_outside.sum()),
        interior_max_log10=interior_max,
        interior_mean_log10=interior_mean,
        binding_max=binding_max,
        binding_mean=binding_mean,
        max_infeasibility=float(over_infeasible.max()) if over_infeasible.size else None,
    )


def accuracy(model: SavingsModel, policy: SavingsPolicy, binding_tol: float = BINDING_TOL) -> SavingsAccuracy:
    """Measure a policy on the fixed box points and on a 10,000-period simulated path.

    The path runs 1,000 burn-in periods first and uses a fixed seed for income, so every
    policy meets the same income path.
    """
    a_box, i_box = box_points(model)
    box = score_points(model, policy, a_box, i_box, binding_tol)

    with np.errstate(all="ignore"):
        a_path, i_path = model.simulate(policy, PATH_PERIODS, PATH_BURN_IN, PATH_SEED)
    path = score_points(model, policy, a_path, i_path, binding_tol)
    return SavingsAccuracy(box=box, path=path)


def _log10_summary(errors: np.ndarray) -> tuple[float | None, float | None]:
    """Return (log10 max, log10 mean) of |e|; None for no points, NaN when any is not finite."""
    if errors.size == 0:
        return None, None
    if not np.all(np.isfinite(errors)):
        return math.nan, math.nan
    with np.errstate(divide="ignore"):
        return float(np.log10(errors.max())), float(np.log10(errors.mean()))


def _summary(values: np.ndarray) -> tuple[float | None, float | None]:
    """Return (max, mean); None for no points, NaN when any value is not finite."""
    if values.size == 0:
        return None, None
    if not np.all(np.isfinite(values)):
        return math.nan, math.nan
    return float(values.max()), float(values.mean())


# ---------------------------------------------------------------------------
# Parameter checks


def _state_indices(i, n_states: int) -> np.ndarray:
    """Return i as an integer array after checking every index is in [0, n_states)."""
    i = np.asarray(i)
    if i.size and not np.issubdtype(i.dtype, np.integer):
        raise ValueError(f"income-state indices must be integers; got dtype {i.dtype}")
    if i.size and (i.min() < 0 or i.max() >= n_states):
        raise ValueError(f"income-state indices span [{i.min()}, {i.max()}], which is out of range; "
                         f"valid range is 0 <= i <= {n_states - 1}")
    return i.astype(np.int64, copy=False)


def _check_preferences(R: float, beta: float, gamma: float) -> None:
    """Raise ValueError naming the first of R, beta, gamma, beta*R outside its valid range."""
    if not (math.isfinite(R) and R > 0):
        raise ValueError(f"R = {R!r} is out of range; valid range is 0 < R (finite)")
    if not (math.isfinite(beta) and 0 < beta < 1):
        raise ValueError(f"beta = {beta!r} is out of range; valid range is 0 < beta < 1")
    if not (math.isfinite(gamma) and 0 < gamma <= 20):
        raise ValueError(f"gamma = {gamma!r} is out of range; valid range is 0 < gamma <= 20")
    if beta * R >= 1:
        raise ValueError(f"beta*R = {beta * R!r} is out of range; valid range is beta*R < 1, "
                         "because with beta*R >= 1 assets have no stationary distribution")


def _check_income(y: np.ndarray, P: np.ndarray) -> None:
    """Raise ValueError unless y is (n,) positive and finite and P is (n, n)."""
    if y.ndim != 1 or y.size != P.shape[0]:
        raise ValueError(f"income levels y have shape {y.shape}, but the transition matrix has "
                         f"shape {P.shape}; y must have shape ({P.shape[0]},)")
    if not np.all(np.isfinite(y) & (y > 0)):
        raise ValueError(f"income levels y = {y.tolist()} must be positive finite numbers")


def _check_borrowing_limit(b: float, R: float, y: np.ndarray) -> None:
    """Raise ValueError unless 0 <= b and, when R > 1, b < min(y) / (R - 1).

    The upper limit is the natural borrowing limit. A consumer who enters the period
    with the maximum debt `R b` and the lowest income can consume at most
    `min(y) - (R - 1) b`, which must be positive.
    """
    if not (math.isfinite(b) and b >= 0):
        raise ValueError(f"borrowing limit b = {b!r} is out of range; valid range is 0 <= b (finite)")
    if R > 1:
        natural = float(y.min()) / (R - 1)
        if b >= natural:
            raise ValueError(f"borrowing limit b = {b!r} is out of range; valid range is "
                             f"0 <= b < min(y) / (R - 1) = {natural:g}, the natural borrowing limit")


def _check_a_max(a_max: float, R: float, b: float, y: np.ndarray) -> None:
    """Raise ValueError unless a_max lies above every income state's lower end of cash on hand."""
    highest_lower = float(-R * b + y.max())
    if not (math.isfinite(a_max) and a_max > highest_lower):
        raise ValueError(f"a_max = {a_max!r} is out of range; valid range is a_max > "
                         f"-R b + max(y) = {highest_lower:g} (finite)")
