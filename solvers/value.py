"""Value-function methods for the growth model: Bellman and policy-evaluation residuals.

The value function is `V(s) = Phi(s) theta` for a linear basis. With cash on hand m,

    (T V)(s) = max_{0 < c < m} u(c) + beta E[V(m - c, log z')]

is the Bellman operator. The maximiser solves the first-order condition
`u'(c) = beta E[V_k(m - c, log z')]`. Its root is bracketed on (0, m), because the left
side falls and the right side rises in c when V is concave in k. The residuals are

- bellman: `R(s; theta) = V(s) - (T V)(s)`. By the envelope theorem its Jacobian is
  `Phi(s) - beta E[Phi(s')]` at the maximising policy, so Newton on it is policy
  iteration;
- policy_evaluation: `R(s; theta) = V(s) - u(c(s)) - beta E[V(s')]` for a fixed policy c,
  linear in theta: `(Phi - beta E[Phi(s')]) theta = u(c)`, one linear solve.

The consumption policy that the evaluator scores is the maximiser at the nodes, fitted
with the same basis (bellman), or the fixed policy itself (policy_evaluation).
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import scipy.sparse as sp

from solvers import algorithms
from solvers.bases import TensorBasis
from solvers.collocation import Projection, basis_diagnostics, build_basis, fit, linear_policy, make_fitter
from solvers.control import SolveControl
from solvers.growth import GrowthModel
from solvers.policies import PolicySource, fixed_policy
from solvers.quadrature import gauss_hermite
from solvers.solution import Solution

logger = logging.getLogger(__name__)

FALSE_POSITION_STEPS = 150  # cap on steps; smooth bases use about 10 to 20
BELLMAN_CHECK_POINTS = 1_000  # box points of the sup-norm Bellman residual diagnostic


def utility(model: GrowthModel, c: np.ndarray) -> np.ndarray:
    """Return CRRA utility `c^(1 - gamma) / (1 - gamma)`, log c at gamma = 1."""
    if model.gamma == 1.0:
        return np.log(c)
    return c ** (1 - model.gamma) / (1 - model.gamma)


def closed_form_value(model: GrowthModel, k: np.ndarray, logz: np.ndarray) -> np.ndarray:
    """Return the exact value function of the log, full-depreciation case.

    `V = A + B log k + C log z` with `B = alpha / (1 - alpha beta)`,
    `C = 1 / ((1 - alpha beta)(1 - rho beta))` and
    `A = [log(1 - alpha beta) + alpha beta / (1 - alpha beta) log(alpha beta)] / (1 - beta)`.
    """
    ab = model.alpha * model.beta
    b = model.alpha / (1 - ab)
    c = 1 / ((1 - ab) * (1 - model.rho * model.beta))
    a = (np.log(1 - ab) + ab / (1 - ab) * np.log(ab)) / (1 - model.beta)
    return a + b * np.log(k) + c * logz


class NextStates:
    """Next-period states of given nodes under a consumption choice, and `E[Phi(s')]`."""

    def __init__(self, model: GrowthModel, logz: np.ndarray, eps: np.ndarray, weights: np.ndarray):
        self.model = model
        self.n_nodes, self.n_quad = logz.size, eps.size
        self.logz_next = (model.rho * logz[:, None] + model.sigma * eps[None, :]).ravel()
        rows = np.repeat(np.arange(self.n_nodes), self.n_quad)
        self.average = sp.csr_matrix((np.tile(weights, self.n_nodes), (rows, np.arange(rows.size))),
                                     shape=(self.n_nodes, rows.size))

    def states(self, k_next: np.ndarray) -> np.ndarray:
        """Return the (n_nodes * n_quad, 2) next-period states for next capital k_next (n_nodes,)."""
        return np.column_stack([np.repeat(k_next, self.n_quad), self.logz_next])

    def expected_matrix(self, basis: TensorBasis, k_next: np.ndarray):
        """Return `E[Phi(s')]`, shape (n_nodes, K), dense or sparse like the basis."""
        return self.average @ basis.matrix(self.states(k_next))


def optimal_consumption(model: GrowthModel, basis: TensorBasis, theta: np.ndarray, cash: np.ndarray,
                        next_states: NextStates) -> np.ndarray:
    """Return the c in (0, m) solving `u'(c) = beta E[V_k(m - c, log z')]` at each node.

    The gap `u'(c) - beta E[V_k]` falls in c when V is concave, so the root is bracketed
    by the ends of (0, m) and found by the Illinois variant of false position, which
    converges superlinearly, with a bisection every third step. Where the gap keeps one sign over the whole interval, c is
    the end of the interval that the sign points to.
    """
    def gap(c: np.ndarray) -> np.ndarray:
        states = next_states.states(cash - c)
        slope = next_states.average @ (basis.matrix(states, derivative=0) @ theta)
        return c ** -model.gamma - model.beta * slope

    low, high = cash * 1e-9, cash * (1 - 1e-9)
    g_low, g_high = gap(low), gap(high)
    c = np.where(g_low <= 0, low, high)
    active = (g_low > 0) & (g_high < 0)
    last_side = np.zeros(cash.shape)
    for step in range(FALSE_POSITION_STEPS):
        if not active.any():
            break
        # Every third step bisects, which bounds the work when V_k is a step function
        # (the grid basis) and false position alone would creep.
        secant = (low * g_high - high * g_low) / (g_high - g_low)
        guess = np.where(active, secant if step % 3 != 2 else (low + high) / 2, c)
        g = gap(guess)
        right = active & (g > 0)
        left = active & (g <= 0)
        # Illinois: halve the stale end's value when the same end moved twice in a row.
        g_high = np.where(right & (last_side > 0), g_high / 2, g_high)
        g_low = np.where(left & (last_side < 0), g_low / 2, g_low)
        low, g_low = np.where(right, guess, low), np.where(right, g, g_low)
        high, g_high = np.where(left, guess, high), np.where(left, g, g_high)
        last_side = np.where(right, 1.0, np.where(left, -1.0, last_side))
        c = np.where(active, guess, c)
        active &= ((high - low) > 1e-13 * cash) & (np.abs(g) > 1e-15 * np.abs(guess ** -model.gamma))
    return c


def bellman_system(model: GrowthModel, basis: TensorBasis, points: np.ndarray, eps: np.ndarray,
                   weights: np.ndarray) -> Callable:
    """Return the Bellman residual system `R = Phi theta - T(Phi theta)` with its envelope Jacobian."""
    k, logz = points[:, 0], points[:, 1]
    cash = model.cash_on_hand(k, logz)
    next_states = NextStates(model, logz, eps, weights)
    phi = basis.matrix(points)

    def system(theta: np.ndarray, with_jacobian: bool):
        c = optimal_consumption(model, basis, theta, cash, next_states)
        expected = next_states.expected_matrix(basis, cash - c)
        residual = phi @ theta - utility(model, c) - model.beta * (expected @ theta)
        return residual, (phi - model.beta * expected if with_jacobian else None)

    return system


def policy_evaluation_system(model: GrowthModel, basis: TensorBasis, points: np.ndarray,
                             policy: Callable, eps: np.ndarray, weights: np.ndarray) -> Callable:
    """Return the linear system `R = (Phi - beta E[Phi(s')]) theta - u(c)` of a fixed policy."""
    k, logz = points[:, 0], points[:, 1]
    c = policy(k, logz)
    next_states = NextStates(model, logz, eps, weights)
    matrix = basis.matrix(points) - model.beta * next_states.expected_matrix(
        basis, model.cash_on_hand(k, logz) - c)
    reward = utility(model, c)

    def system(theta: np.ndarray, with_jacobian: bool):
        return matrix @ theta - reward, (matrix if with_jacobian else None)

    return system


def vfi(model: GrowthModel, basis: TensorBasis, points: np.ndarray, theta: np.ndarray,
        eps: np.ndarray, weights: np.ndarray, algorithm, control: SolveControl,
        refit: Callable | None = None) -> algorithms.AlgorithmResult:
    """Iterate `theta <- refit(T V)` with `howard_steps` policy-evaluation updates after each
    maximisation; the history's residual is the largest change of V at the points.

    refit maps values at the points to theta; the default fits at the points in least
    squares (exactly when there are K of them)."""
    k, logz = points[:, 0], points[:, 1]
    cash = model.cash_on_hand(k, logz)
    next_states = NextStates(model, logz, eps, weights)
    phi = basis.matrix(points)
    refit = refit or make_fitter(basis, points)
    values = phi @ theta
    change, iteration = np.inf, 0
    control.report(0, 1.0)

    while change >= algorithm.tol and iteration < algorithm.max_iterations:
        iteration += 1
        c = optimal_consumption(model, basis, theta, cash, next_states)
        expected = next_states.expected_matrix(basis, cash - c)
        reward = utility(model, c)
        theta = refit(reward + model.beta * (expected @ theta))
        for _ in range(algorithm.howard_steps):
            theta = refit(reward + model.beta * (expected @ theta))
        new_values = phi @ theta
        change = float(np.max(np.abs(new_values - values)) / max(1.0, float(np.max(np.abs(new_values)))))
        values = new_values
        control.report(iteration, change)

    residual, jacobian = bellman_system(model, basis, points, eps, weights)(theta, True)
    return algorithms.AlgorithmResult(theta, iteration, change < algorithm.tol,
                                      float(np.max(np.abs(residual))), jacobian)


def solve_value(model: GrowthModel, method, control: SolveControl, seed: int = 0,
                source: PolicySource | None = None) -> Solution:
    """Solve for the value function with the method's residual, objective and algorithm.

    source is the finished job whose policy a policy_evaluation residual of kind 'job'
    evaluates; None otherwise.
    """
    basis = build_basis(model, method.basis, seed)
    eps, weights = gauss_hermite(method.quadrature_nodes)
    projection = Projection(basis, method.objective)
    points = projection.points
    residual = method.residual

    if residual.kind == "policy_evaluation":
        # The system is linear, so one Newton (square) or Gauss-Newton (least-squares)
        # step from any start solves it: that step is the one linear solve done here.
        policy = fixed_policy(model, residual.policy, source)
        system = projection.system(policy_evaluation_system(model, basis, points, policy, eps, weights))
        reward_gap, matrix = system(np.zeros(basis.n_params), True)
        theta = algorithms.solve_linear_least_squares(matrix, -reward_gap)
        control.report(1, float(np.max(np.abs(system(theta, False)[0]))))
        result = algorithms.AlgorithmResult(theta, 1, True, control.last_residual, matrix)
    else:
        policy = None
        start = projection.system(
            policy_evaluation_system(model, basis, points, _starting_policy(model), eps, weights))
        gap, matrix = start(np.zeros(basis.n_params), True)
        theta = algorithms.solve_linear_least_squares(matrix, -gap)
        result = _solve_bellman(model, basis, projection, theta, eps, weights, method.algorithm, control)

    solution = _solution(model, basis, method, points, result, policy, eps, weights)
    if source is not None:
        solution.parameters["source"] = source.as_record()
    return solution


def _starting_policy(model: GrowthModel) -> Callable:
    """Return the policy whose value starts the Bellman solvers: keep capital constant,
    c = z k^alpha - delta k, floored at a tenth of output.

    It is feasible and stable, and it is not the solution even in the closed-form case,
    so iteration counts there measure the algorithm.
    """
    def policy(k, logz):
        output = np.exp(logz) * k ** model.alpha
        return np.maximum(output - model.delta * k, 0.1 * output)

    return policy


def _solve_bellman(model, basis, projection, theta, eps, weights, algorithm, control):
    """Run VFI, or Newton / Gauss-Newton on the Bellman residual (policy iteration)."""
    points = projection.points
    if algorithm.kind == "vfi":
        return vfi(model, basis, points, theta, eps, weights, algorithm, control, projection.refit)
    system = projection.system(bellman_system(model, basis, points, eps, weights))
    if algorithm.kind == "newton":
        return algorithms.newton(system, theta, algorithm.tol, algorithm.max_iterations, control)
    return algorithms.gauss_newton(system, theta, algorithm.tol, algorithm.max_iterations, control,
                                   square=False)


def _solution(model, basis, method, points, result, policy, eps, weights) -> Solution:
    """Build the Solution: the consumption policy to score, and value-function diagnostics."""
    theta = result.theta
    parameters = {"basis": method.basis.model_dump(), "bounds": basis.bounds.tolist(),
                  "value_theta": theta.tolist()}
    if policy is None:
        cash = model.cash_on_hand(points[:, 0], points[:, 1])
        c = optimal_consumption(model, basis, theta, cash, NextStates(model, points[:, 1], eps, weights))
        theta_c = fit(basis, points, c)
        policy = linear_policy(basis, theta_c)
        parameters["theta"] = theta_c.tolist()

    diagnostics = {**basis_diagnostics(basis, points), **value_diagnostics(model, basis, theta, eps, weights)}
    return Solution(policy=policy, n_params=basis.n_params, n_conditions=points.shape[0],
                    iterations=result.iterations, converged=result.converged, parameters=parameters,
                    condition_number=algorithms.condition_number(result.jacobian), extra=diagnostics)


def value_diagnostics(model: GrowthModel, basis: TensorBasis, theta: np.ndarray, eps: np.ndarray,
                      weights: np.ndarray) -> dict[str, float]:
    """Return the sup-norm Bellman residual on fixed box points, relative to max |V|, and the
    largest relative distance to the closed-form value function where there is one."""
    rng = np.random.default_rng(20_251_218)
    low, high = model.bounds[:, 0], model.bounds[:, 1]
    points = low + rng.random((BELLMAN_CHECK_POINTS, 2)) * (high - low)
    residual, _ = bellman_system(model, basis, points, eps, weights)(theta, False)
    values = basis.evaluate(theta, points)
    diagnostics = {"bellman_sup_residual": float(np.max(np.abs(residual)) / np.max(np.abs(values)))}
    if model.has_closed_form:
        exact = closed_form_value(model, points[:, 0], points[:, 1])
        diagnostics["value_closed_form_max_rel_distance"] = float(np.max(np.abs(values - exact) / np.abs(exact)))
    return diagnostics
