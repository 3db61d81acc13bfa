"""The N-country real business cycle model: a planner who pools the resources of N countries.

The state of country j is its capital k_j and log productivity log a_j, so the state
vector has d = 2N entries ordered `[k_1..k_N, log a_1..log a_N]`. A policy maps states
of shape (n, 2N) to next-period capital k' of shape (n, N). The planner solves

    max E sum_t beta^t sum_j tau_j u_j(c_j),    u_j(c) = (c^(1 - gamma_j) - 1) / (1 - gamma_j)

subject to one resource constraint for the whole world,

    sum_j c_j = sum_j [A a_j k_j^alpha + (1 - delta) k_j - k_j' - (phi / 2) k_j (k_j' / k_j - 1)^2],

and `log a_j' = rho log a_j + eps_j` with eps ~ N(0, sigma^2 (I + 1 1')), so each
country has a shock of its own and one common to all. Consumption is shared so that
`tau_j u_j'(c_j) = lambda` for every j (risk sharing). The Euler equation of country j
has the unit-free error

    e_j = beta E[(c_j' / c_j)^(-gamma_j) R_j'] / (1 + phi (k_j' / k_j - 1)) - 1,
    R_j' = 1 - delta + alpha A a_j' k_j'^(alpha - 1) + (phi / 2) ((k_j'' / k_j')^2 - 1).

The default calibration is the test model of Judd, Maliar and Maliar (2011),
"Numerically stable and accurate stochastic simulation approaches for solving dynamic
economic models", Quantitative Economics 2(2). It has log utility, equal weights, no
adjustment cost, alpha 0.36, beta 0.99, delta 0.025, rho 0.95, sigma 0.01, and
`A = (1 / beta - 1 + delta) / alpha`, so that steady-state capital is 1 in every country.
Without explicit weights, `tau_j` is proportional to `css^gamma_j`, which gives every
country the same steady-state consumption `css = A - delta`.

With log utility in every country, delta = 1 and phi = 0, total investment is
`alpha beta Y`, Y being world output. For N = 1 this is the Brock-Mirman rule
`k' = alpha beta A a k^alpha`. For N >= 2 pooling makes the split of investment depend
on expected productivity: `k_j' = alpha beta Y s_j(log a)`, where the shares s solve
`s_j = E[a_j' s_j^alpha / sum_i a_i' s_i^alpha]`. The shares depend on log a alone and
are computed to rounding with an integration rule (`closed_form_capital`). Each country
following its own Brock-Mirman rule is not the planner's solution when N >= 2.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from solvers.integration import cholesky_factor, gauss_hermite_product, monomial_m2

logger = logging.getLogger(__name__)

# A policy maps states (n, 2N), ordered [k_1..k_N, log a_1..log a_N], to k' of shape (n, N).
Policy = Callable[[np.ndarray], np.ndarray]

MAX_COUNTRIES = 200
ALLOCATION_NEWTON_STEPS = 100
ALLOCATION_TOL = 1e-15  # |log(sum c) - log C| at which the risk-sharing Newton stops
SHARE_ITERATIONS = 400
SHARE_TOL = 1e-15
MAX_WEIGHT_RATIO = 1e6  # largest / smallest welfare weight


@dataclass(frozen=True)
class MultiCountryModel:
    """Calibrated N-country model with its state box; see the module docstring.

    gamma: one curvature for every country, or a tuple of N. weights: None (weights
    that equalise steady-state consumption) or a tuple of N positive welfare weights.
    k_box: the capital interval relative to steady-state capital. loga_box_sd: the
    half-width of each log-productivity interval in unconditional standard deviations.
    """

    countries: int = 2
    alpha: float = 0.36
    beta: float = 0.99
    delta: float = 0.025
    rho: float = 0.95
    sigma: float = 0.01
    phi: float = 0.0
    gamma: float | tuple[float, ...] = 1.0
    weights: tuple[float, ...] | None = None
    k_box: tuple[float, float] = (0.8, 1.2)
    loga_box_sd: float = 3.0

    def __post_init__(self):
        _check_parameters(self)

    @property
    def n_states(self) -> int:
        """Number of states d = 2N."""
        return 2 * self.countries

    @property
    def gammas(self) -> np.ndarray:
        """Curvature of each country's utility, shape (N,)."""
        return np.broadcast_to(np.asarray(self.gamma, dtype=float), (self.countries,)).copy()

    @property
    def A(self) -> float:
        """Total factor productivity that puts steady-state capital at 1: (1/beta - 1 + delta) / alpha."""
        return (1 / self.beta - 1 + self.delta) / self.alpha

    @property
    def kss(self) -> float:
        """Deterministic steady-state capital of every country, 1 by the choice of A."""
        return 1.0

    @property
    def css(self) -> float:
        """Steady-state consumption of every country under the default weights: A - delta."""
        return self.A * self.kss ** self.alpha - self.delta * self.kss

    @property
    def tau(self) -> np.ndarray:
        """Welfare weights tau_j, shape (N,), scaled to sum to 1."""
        if self.weights is None:
            tau = self.css ** self.gammas
        else:
            tau = np.asarray(self.weights, dtype=float)
            # Scaled by the largest first, so that weights near the float maximum do not
            # overflow in the sum (only their ratios matter).
            tau = tau / tau.max()
        return tau / tau.sum()

    @property
    def shock_cov(self) -> np.ndarray:
        """Covariance of the innovations eps, sigma^2 (I + 1 1'), shape (N, N)."""
        n = self.countries
        return self.sigma ** 2 * (np.eye(n) + np.ones((n, n)))

    @property
    def sigma_loga(self) -> float:
        """Unconditional standard deviation of each log a_j: sigma sqrt(2 / (1 - rho^2))."""
        return self.sigma * math.sqrt(2.0 / (1 - self.rho ** 2))

    @property
    def bounds(self) -> np.ndarray:
        """State box, shape (2N, 2): N rows for k, then N rows for log a; columns lower, upper."""
        n = self.countries
        k_rows = np.tile([self.k_box[0] * self.kss, self.k_box[1] * self.kss], (n, 1))
        half = self.loga_box_sd * self.sigma_loga
        return np.vstack([k_rows, np.tile([-half, half], (n, 1))])

    @property
    def log_bounds(self) -> np.ndarray:
        """State box with the capital rows in logs, shape (2N, 2): log k, then log a."""
        bounds = self.bounds
        return np.vstack([np.log(bounds[:self.countries]), bounds[self.countries:]])

    @property
    def has_closed_form(self) -> bool:
        """True for log utility in every country, delta = 1 and phi = 0."""
        return bool(np.all(self.gammas == 1.0)) and self.delta == 1.0 and self.phi == 0.0

    def steady_state(self) -> np.ndarray:
        """Return the deterministic steady state, shape (2N,): k = kss, log a = 0."""
        return np.concatenate([np.full(self.countries, self.kss), np.zeros(self.countries)])

    def split(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return k and log a, each shape (n, N), from states of shape (n, 2N)."""
        states = np.asarray(states, dtype=float)
        if states.ndim != 2 or states.shape[1] != self.n_states:
            raise ValueError(f"states must have shape (n, {self.n_states}) ordered "
                             f"[k_1..k_N, log a_1..log a_N]; got {states.shape}")
        return states[:, :self.countries], states[:, self.countries:]

    def output(self, k: np.ndarray, loga: np.ndarray) -> np.ndarray:
        """Return output A a_j k_j^alpha, the shape of k."""
        return self.A * np.exp(loga) * k ** self.alpha

    def adjustment_cost(self, k: np.ndarray, k_next: np.ndarray) -> np.ndarray:
        """Return (phi / 2) k (k' / k - 1)^2, the shape of k."""
        if self.phi == 0.0:
            return np.zeros_like(k)
        return 0.5 * self.phi * k * (k_next / k - 1) ** 2

    def total_consumption(self, states: np.ndarray, k_next: np.ndarray) -> np.ndarray:
        """Return world consumption from the resource constraint, shape (n,)."""
        k, loga = self.split(states)
        available = self.output(k, loga) + (1 - self.delta) * k
        return (available - k_next - self.adjustment_cost(k, k_next)).sum(axis=1)

    def allocate(self, total: np.ndarray) -> np.ndarray:
        """Return the risk-sharing consumption c (n, N) that sums to total (n,).

        `tau_j c_j^(-gamma_j) = lambda` gives `c_j = (tau_j / lambda)^(1 / gamma_j)`. With
        one gamma this is `total tau_j^(1/gamma) / sum_i tau_i^(1/gamma)`. Otherwise a
        Newton iteration on x = log lambda solves `log sum_j c_j(x) = log total`; the left
        side is convex and decreasing in x, so Newton's method converges from any start.
        Rows with total <= 0 or not finite give NaN.
        """
        total = np.asarray(total, dtype=float)
        feasible = np.isfinite(total) & (total > 0)
        safe_total = np.where(feasible, total, 1.0)
        gammas, log_tau = self.gammas, np.log(self.tau)

        if np.all(gammas == gammas[0]):
            share = np.exp(log_tau / gammas[0])
            c = safe_total[:, None] * (share / share.sum())[None, :]
        else:
            c = _allocate_newton(safe_total, log_tau, gammas)
        c[~feasible] = np.nan
        return c

    def consumption(self, states: np.ndarray, k_next: np.ndarray) -> np.ndarray:
        """Return the consumption (n, N) of every country at states given k' (n, N)."""
        return self.allocate(self.total_consumption(states, k_next))

    def next_loga(self, loga: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Return log a' for every state and node: loga (n, N), eps (J, N) -> (n, J, N)."""
        return self.rho * loga[:, None, :] + eps[None, :, :]

    def euler_errors(self, policy: Policy, states: np.ndarray, eps: np.ndarray,
                     weights: np.ndarray) -> np.ndarray:
        """Return the signed errors at states (n, 2N): shape (n, N + 1).

        Columns 0..N-1 are the unit-free Euler errors e_j of the module docstring, with
        the expectation taken by the rule (eps (J, N), weights (J,)). Column N is the
        resource-constraint error, `(sum_j c_j - C) / sum_j y_j` with C the world
        consumption from the constraint. Consumption is allocated from C, so this column
        is rounding (or the risk-sharing Newton tolerance) unless consumption is
        infeasible, where every column is NaN.
        """
        k_next = np.asarray(policy(states), dtype=float)
        next_states = self.next_states(k_next, self.split(states)[1], eps)
        k_next_next = np.asarray(policy(next_states), dtype=float)
        return self.euler_errors_from_values(states, k_next, k_next_next, eps, weights)

    def next_states(self, k_next: np.ndarray, loga: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Return the next-period states for every state and node, shape (n J, 2N), node fastest."""
        n, n_nodes = k_next.shape[0], eps.shape[0]
        loga_next = self.next_loga(loga, eps)
        k_rep = np.broadcast_to(k_next[:, None, :], (n, n_nodes, self.countries))
        return np.concatenate([k_rep, loga_next], axis=2).reshape(n * n_nodes, self.n_states)

    def euler_errors_from_values(self, states: np.ndarray, k_next: np.ndarray,
                                 k_next_next: np.ndarray, eps: np.ndarray,
                                 weights: np.ndarray) -> np.ndarray:
        """Return the errors (n, N + 1) of `euler_errors` from policy values already computed.

        k_next: k' at states, (n, N). k_next_next: k'' at `next_states(k_next, log a, eps)`,
        shape (n J, N) in that order.
        """
        return self.euler_parts(states, k_next, k_next_next, eps, weights)["errors"]

    def euler_parts(self, states: np.ndarray, k_next: np.ndarray, k_next_next: np.ndarray,
                    eps: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Return the errors (n, N + 1) with the intermediate arrays solvers need.

        Keys: "errors"; "c" (n, N) consumption; "marginal_cost" (n, N), `1 + phi (k'/k - 1)`;
        "return_slope" (n, N), `E[(c'/c)^-gamma dR'/dk'] / E[(c'/c)^-gamma R']` of each
        country, the own-capital slope of the expected return with c' and k'' held fixed.
        """
        k, loga = self.split(states)
        n, n_nodes, gammas = k.shape[0], eps.shape[0], self.gammas
        total = self.total_consumption(states, k_next)
        c = self.allocate(total)

        loga_next = self.next_loga(loga, eps)
        next_states = np.concatenate(
            [np.broadcast_to(k_next[:, None, :], loga_next.shape), loga_next], axis=2)
        c_next = self.consumption(next_states.reshape(n * n_nodes, -1), k_next_next)
        c_next = c_next.reshape(n, n_nodes, self.countries)
        k_next_next = k_next_next.reshape(n, n_nodes, self.countries)

        k_now = k_next[:, None, :]
        marginal_product = self.alpha * self.A * np.exp(loga_next) * k_now ** (self.alpha - 1)
        gross_return = 1 - self.delta + marginal_product
        return_slope = (self.alpha - 1) * marginal_product / k_now
        if self.phi != 0.0:
            growth = k_next_next / k_now
            gross_return = gross_return + 0.5 * self.phi * (growth ** 2 - 1)
            return_slope = return_slope - self.phi * growth ** 2 / k_now
        discount = (c_next / c[:, None, :]) ** (-gammas)
        expectation = np.einsum("j,njc->nc", weights, discount * gross_return)
        slope = np.einsum("j,njc->nc", weights, discount * return_slope) / expectation
        marginal_cost = 1 + self.phi * (k_next / k - 1)

        errors = np.empty((n, self.countries + 1))
        errors[:, :self.countries] = self.beta * expectation / marginal_cost - 1
        world_output = self.output(k, loga).sum(axis=1)
        errors[:, self.countries] = (c.sum(axis=1) - total) / world_output
        errors[~np.all(np.isfinite(c), axis=1)] = np.nan
        return {"errors": errors, "c": c, "marginal_cost": marginal_cost, "return_slope": slope}

    def shock_series(self, periods: int, seed: int) -> np.ndarray:
        """Return `periods` innovations eps_t ~ N(0, shock_cov), shape (periods, N), from seed."""
        z = np.random.default_rng(seed).standard_normal((periods, self.countries))
        return z @ cholesky_factor(self.shock_cov).T

    def simulate(self, policy: Policy, periods: int, burn_in: int, seed: int,
                 start: np.ndarray | None = None, shocks: np.ndarray | None = None) -> np.ndarray:
        """Simulate the model under policy; return the states after burn_in, shape (periods, 2N).

        The path starts at `start` (default: the steady state). The innovations are
        `shocks` (burn_in + periods, N) when given, otherwise `shock_series(..., seed)`,
        so every policy meets the same shocks. A path that becomes infeasible (k' <= 0,
        not finite, or world consumption <= 0) stops there and is padded with NaN.
        """
        if shocks is None:
            shocks = self.shock_series(burn_in + periods, seed)
        starts = None if start is None else np.asarray(start, dtype=float)[None, :]
        return self.simulate_paths(policy, shocks[:, None, :], starts)[burn_in:, 0, :]

    def simulate_paths(self, policy: Policy, shocks: np.ndarray,
                       starts: np.ndarray | None = None) -> np.ndarray:
        """Simulate P paths at once; return their states, shape (T, P, 2N).

        shocks: innovations (T, P, N), the shock of period t moving state t to t + 1.
        starts: first states (P, 2N), default the steady state. The policy is called
        once per period on the (P, 2N) states. A path that becomes infeasible is NaN
        from that period on, and the loop stops when every path has.
        """
        periods, n_paths, n = shocks.shape[0], shocks.shape[1], self.countries
        state = np.tile(self.steady_state(), (n_paths, 1)) if starts is None else starts.copy()
        paths = np.full((periods, n_paths, self.n_states), np.nan)
        for t in range(periods):
            paths[t] = state
            with np.errstate(all="ignore"):
                k_next = np.asarray(policy(state), dtype=float)
                feasible = self._feasible_step(state, k_next)
            if not feasible.any():
                logger.debug("every simulated path became infeasible by period %d", t)
                break
            state = np.hstack([k_next, self.rho * state[:, n:] + shocks[t]])
            state[~feasible] = np.nan
        return paths

    def _feasible_step(self, states: np.ndarray, k_next: np.ndarray) -> np.ndarray:
        """Return per row (P,) whether k' is finite and positive and world consumption positive."""
        k, loga = states[:, :self.countries], states[:, self.countries:]
        available = self.A * np.exp(loga) * k ** self.alpha + (1 - self.delta) * k - k_next
        if self.phi != 0.0:
            available = available - 0.5 * self.phi * k * (k_next / k - 1) ** 2
        positive = np.all(k_next > 0, axis=1) & np.isfinite(k_next.sum(axis=1))
        return positive & (available.sum(axis=1) > 0)

    def closed_form_capital(self, states: np.ndarray, eps: np.ndarray | None = None,
                            weights: np.ndarray | None = None) -> np.ndarray:
        """Return the exact k' (n, N) when `has_closed_form`; see the module docstring.

        For N >= 2 the investment shares solve a fixed point with an expectation, taken
        with the rule (eps, weights). The default rule is a 10-node Gauss-Hermite product
        for N <= 2 and M2 above, exact to rounding for the default sigma.
        """
        if not self.has_closed_form:
            raise ValueError(f"the closed form needs gamma = 1 in every country, delta = 1 and "
                             f"phi = 0; got gamma = {self.gamma}, delta = {self.delta}, phi = {self.phi}")
        k, loga = self.split(states)
        world_output = self.output(k, loga).sum(axis=1)
        if self.countries == 1:
            return self.alpha * self.beta * self.output(k, loga)
        if eps is None:
            eps, weights = self.accurate_rule()
        shares = investment_shares(self, loga, eps, weights)
        return self.alpha * self.beta * world_output[:, None] * shares

    def accurate_rule(self) -> tuple[np.ndarray, np.ndarray]:
        """Return a rule at least as accurate as M2: a 10-node Gauss-Hermite product for N <= 2, else M2."""
        if self.countries <= 2:
            return gauss_hermite_product(self.shock_cov, 10)
        return monomial_m2(self.shock_cov)


def investment_shares(model: MultiCountryModel, loga: np.ndarray, eps: np.ndarray,
                      weights: np.ndarray) -> np.ndarray:
    """Return the investment shares s (n, N) of the closed-form case at log a (n, N).

    Iterates `s_j <- E[b_j s_j^alpha / sum_i b_i s_i^alpha]`, `b = exp(rho log a + eps)`,
    from `s_j` proportional to `exp(rho log a_j / (1 - alpha))`, the solution without shocks.
    The map contracts at about rate alpha.
    """
    b = np.exp(model.next_loga(loga, eps))
    shares = np.exp(model.rho * loga / (1 - model.alpha))
    shares /= shares.sum(axis=1, keepdims=True)
    for _ in range(SHARE_ITERATIONS):
        weighted = b * shares[:, None, :] ** model.alpha
        updated = np.einsum("j,njc->nc", weights, weighted / weighted.sum(axis=2, keepdims=True))
        change = np.max(np.abs(updated - shares))
        shares = updated
        if change < SHARE_TOL:
            break
    return shares


def _allocate_newton(total: np.ndarray, log_tau: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """Return c (n, N) with tau_j c_j^(-gamma_j) equal across j and sum_j c_j = total (n,)."""
    log_total = np.log(total)
    # Start from the one-curvature solution with the mean curvature.
    gamma_bar = gammas.mean()
    x = gamma_bar * (np.log(np.exp(log_tau / gamma_bar).sum()) - log_total)
    for _ in range(ALLOCATION_NEWTON_STEPS):
        c = np.exp((log_tau[None, :] - x[:, None]) / gammas[None, :])
        sum_c = c.sum(axis=1)
        gap = np.log(sum_c) - log_total
        if np.max(np.abs(gap)) < ALLOCATION_TOL:
            break
        slope = -(c / gammas[None, :]).sum(axis=1) / sum_c
        x = x - gap / slope
    return np.exp((log_tau[None, :] - x[:, None]) / gammas[None, :])


def _check_parameters(model: MultiCountryModel) -> None:
    """Raise ValueError naming the first parameter outside its valid range."""
    n = model.countries
    if int(n) != n or not 1 <= n <= MAX_COUNTRIES:
        raise ValueError(f"countries must be an integer from 1 to {MAX_COUNTRIES}; got {n}")
    checks = [
        ("alpha", model.alpha, 0 < model.alpha < 1, "0 < alpha < 1"),
        ("beta", model.beta, 0 < model.beta < 1, "0 < beta < 1"),
        ("delta", model.delta, 0 < model.delta <= 1, "0 < delta <= 1"),
        ("rho", model.rho, -1 < model.rho < 1, "-1 < rho < 1"),
        ("sigma", model.sigma, model.sigma > 0, "sigma > 0"),
        ("phi", model.phi, model.phi >= 0, "phi >= 0"),
        ("loga_box_sd", model.loga_box_sd, model.loga_box_sd >= 0.1, "loga_box_sd >= 0.1"),
    ]
    for name, value, valid, valid_range in checks:
        if not (math.isfinite(value) and valid):
            raise ValueError(f"{name} must satisfy {valid_range}; got {value}")

    gammas = np.asarray(model.gamma, dtype=float)
    if gammas.ndim > 1 or (gammas.ndim == 1 and gammas.size != n) or np.any(gammas <= 0):
        raise ValueError(f"gamma must be one positive number or a tuple of {n} positive "
                         f"numbers (one per country); got {model.gamma}")
    if model.weights is not None:
        tau = np.asarray(model.weights, dtype=float)
        if tau.shape != (n,) or np.any(~np.isfinite(tau)) or np.any(tau <= 0):
            raise ValueError(f"weights must be None or a tuple of {n} positive welfare weights; "
                             f"got {model.weights}")
        # Compared in logs: the plain ratio of 1e300 and 1e-300 overflows.
        log_ratio = math.log(tau.max()) - math.log(tau.min())
        if log_ratio > math.log(MAX_WEIGHT_RATIO):
            raise ValueError(f"weights must lie within a factor {MAX_WEIGHT_RATIO:g} of each other, "
                             f"or a country's consumption is too small to solve for; got largest / "
                             f"smallest = 1e{log_ratio / math.log(10):.1f}")

    low, high = model.k_box
    if not 0 < low < 1 < high:
        raise ValueError(f"k_box must be (low, high) relative to steady-state capital with "
                         f"0 < low < 1 < high; got {model.k_box}")
