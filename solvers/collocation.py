"""Collocation of the Euler equation with a linear basis, solved by Newton's method.

The consumption policy is `c(s) = Phi(s) theta` for a basis with K coefficients. The
residual vector stacks the unit-free Euler errors at the basis's K nodes (M = K), and
Newton's method finds `R(theta) = 0` with the analytic Jacobian below and a
backtracking line search on `||R||_2`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits

from solvers.bases import ChebyshevBasis, SplineBasis, TensorBasis
from solvers.control import SolveControl, SolveDiverged
from solvers.growth import GrowthModel
from solvers.quadrature import gauss_hermite
from solvers.solution import Solution

logger = logging.getLogger(__name__)

LINE_SEARCH_HALVINGS = 30
SINGLE_THREAD_MAX_PARAMS = 2_000


@dataclass
class NewtonResult:
    """Coefficients theta of shape (K,) and how the iteration ended."""

    theta: np.ndarray
    iterations: int
    converged: bool
    residual_max: float
    condition_number: float | None


def euler_system(model: GrowthModel, basis: TensorBasis, theta: np.ndarray,
                 nodes: np.ndarray, eps: np.ndarray, weights: np.ndarray,
                 with_jacobian: bool = True):
    """Return the Euler residuals R (M,) at the nodes and, if asked, the Jacobian dR/dtheta (M, K).

    nodes: (M, 2) states (k, log z); eps, weights: (J,) quadrature rule. With
    `c = Phi theta`, `k' = m - c`, next-period states `(k', log z'_j)` and
    `f_j = c'_j^-gamma R'_j`, the residual is `R = beta c^gamma sum_j w_j f_j - 1`.
    Differentiating, with `dk'/dtheta = -Phi` and `dc'_j/dtheta = Phi'_j + c'_k,j dk'/dtheta`,

        dR = beta c^gamma sum_j w_j (-gamma c'^(-gamma-1) R') Phi'_j
             + [beta c^gamma sum_j w_j (gamma c'^(-gamma-1) R' c'_k - c'^-gamma R'_k)
                + gamma beta c^(gamma-1) E] Phi

    where `R'_k = alpha (alpha - 1) z' k'^(alpha - 2)`. Dense or sparse, like the basis.
    """
    k, logz = nodes[:, 0], nodes[:, 1]
    m_nodes, n_quad = nodes.shape[0], eps.size
    phi = basis.matrix(nodes)
    c = phi @ theta
    k_next = model.cash_on_hand(k, logz) - c

    logz_next = (model.rho * logz[:, None] + model.sigma * eps[None, :]).ravel()
    k_next_all = np.repeat(k_next, n_quad)
    points_next = np.column_stack([k_next_all, logz_next])
    phi_next = basis.matrix(points_next)
    c_next = phi_next @ theta

    z_next = np.exp(logz_next)
    gross_return = 1 - model.delta + model.alpha * z_next * k_next_all ** (model.alpha - 1)
    marginal_next = c_next ** (-model.gamma)
    w = np.tile(weights, m_nodes)
    expectation = (w * marginal_next * gross_return).reshape(m_nodes, n_quad).sum(1)
    residual = model.beta * expectation * c ** model.gamma - 1
    if not with_jacobian:
        return residual, None

    scale = model.beta * c ** model.gamma
    slope_next = basis.matrix(points_next, derivative=0) @ theta
    return_slope = model.alpha * (model.alpha - 1) * z_next * k_next_all ** (model.alpha - 2)
    direct = -model.gamma * c_next ** (-model.gamma - 1) * gross_return
    through_k = (-direct * slope_next - marginal_next * return_slope) * w
    own = scale * through_k.reshape(m_nodes, n_quad).sum(1) + model.gamma * model.beta * expectation * c ** (model.gamma - 1)

    weigh = sp.csr_matrix((np.repeat(scale, n_quad) * w * direct,
                           (np.repeat(np.arange(m_nodes), n_quad), np.arange(m_nodes * n_quad))),
                          shape=(m_nodes, m_nodes * n_quad))
    jacobian = weigh @ phi_next + _scale_rows(own, phi)
    return residual, jacobian


def solve_newton(model: GrowthModel, basis: TensorBasis, eps: np.ndarray, weights: np.ndarray,
                 tol: float, max_iterations: int, control: SolveControl,
                 first_guess=None) -> NewtonResult:
    """Solve the collocation system by damped Newton steps from a first guess of consumption.

    first_guess(k, log z) defaults to the model's `initial_consumption`, which is the exact
    policy in the closed-form case.

    Stops when max |R| < tol, when no step along the Newton direction lowers ||R||_2
    (a floor set by rounding), or after max_iterations. Raises SolveDiverged when the
    first guess or every damped step gives a non-finite residual.
    """
    nodes = basis.nodes()
    first_guess = first_guess or model.initial_consumption
    theta = _fit(basis, nodes, first_guess(nodes[:, 0], nodes[:, 1]))
    with np.errstate(all="ignore"):
        residual, jacobian = euler_system(model, basis, theta, nodes, eps, weights)
    norm = _norm(residual)
    control.report(0, float(np.max(np.abs(residual))))

    iteration, converged = 0, bool(np.max(np.abs(residual)) < tol)
    while not converged and iteration < max_iterations:
        iteration += 1
        step = _solve_linear(jacobian, residual)
        control.check()
        theta, residual, jacobian, improved = _line_search(
            model, basis, theta, step, norm, nodes, eps, weights, iteration, control)
        norm = _norm(residual)
        residual_max = float(np.max(np.abs(residual)))
        control.report(iteration, residual_max)
        converged = residual_max < tol
        if not improved:
            # Rounding sets a floor on ||R||: accept it when it is near the tolerance.
            converged = residual_max < max(tol, 1e3 * np.finfo(float).eps)
            break

    condition = float(np.linalg.cond(jacobian)) if not sp.issparse(jacobian) else None
    return NewtonResult(theta, iteration, converged, float(np.max(np.abs(residual))), condition)


def _line_search(model, basis, theta, step, norm, nodes, eps, weights, iteration, control):
    """Return the first of theta - lambda step, lambda = 1, 1/2, ..., that lowers ||R||_2."""
    lam = 1.0
    for _ in range(LINE_SEARCH_HALVINGS):
        control.check()
        candidate = theta - lam * step
        with np.errstate(all="ignore"):
            residual, jacobian = euler_system(model, basis, candidate, nodes, eps, weights)
        candidate_norm = _norm(residual)
        if np.isfinite(candidate_norm) and candidate_norm < norm:
            return candidate, residual, jacobian, True
        lam /= 2
    if not np.isfinite(norm):
        raise SolveDiverged(f"Euler residual is not finite at iteration {iteration}", iteration, None)
    with np.errstate(all="ignore"):
        residual, jacobian = euler_system(model, basis, theta, nodes, eps, weights)
    return theta, residual, jacobian, False


def _fit(basis: TensorBasis, nodes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return theta that interpolates values at the basis nodes."""
    return _solve_linear(basis.matrix(nodes), values)


def _solve_linear(matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve matrix x = rhs for a dense array or a scipy.sparse matrix."""
    if sp.issparse(matrix):
        return spla.spsolve(matrix.tocsc(), rhs)
    return np.linalg.solve(matrix, rhs)


def _scale_rows(a: np.ndarray, matrix):
    """Return diag(a) @ matrix, keeping the matrix dense or sparse."""
    if sp.issparse(matrix):
        return sp.diags(a) @ matrix
    return a[:, None] * matrix


def _norm(residual: np.ndarray) -> float:
    """Return ||R||_2, or inf when any entry is not finite."""
    return float(np.linalg.norm(residual)) if np.all(np.isfinite(residual)) else np.inf


def build_basis(model: GrowthModel, basis_spec) -> TensorBasis:
    """Return the tensor basis a chebyshev or spline spec describes, on the widened box."""
    bounds = model.approximation_bounds(basis_spec.domain_margin)
    if basis_spec.kind == "chebyshev":
        return ChebyshevBasis(bounds, [basis_spec.degree, basis_spec.degree])
    return SplineBasis(bounds, [basis_spec.n_basis, basis_spec.n_basis], order=basis_spec.order)


def solve_collocation(model: GrowthModel, method, control: SolveControl) -> Solution:
    """Solve the growth model by collocation with a Chebyshev or spline basis and Newton's method."""
    basis = build_basis(model, method.basis)
    eps, weights = gauss_hermite(method.quadrature_nodes)
    algorithm = method.algorithm
    # Small dense systems gain nothing from BLAS threads, and when another process keeps
    # the cores busy, threads waiting on each other made a K = 121 solve 100 times slower
    # (1 s instead of 0.01 s, measured on a 2-core VM).
    threads = 1 if basis.n_params <= SINGLE_THREAD_MAX_PARAMS else None
    with threadpool_limits(limits=threads, user_api="blas"):
        result = solve_newton(model, basis, eps, weights, algorithm.tol, algorithm.max_iterations, control)
    logger.info("newton on %s: %d iterations, max |R| %.2e, converged %s",
                method.basis.kind, result.iterations, result.residual_max, result.converged)

    def policy(k: np.ndarray, logz: np.ndarray) -> np.ndarray:
        points = np.column_stack([np.ravel(k), np.ravel(logz)])
        return basis.evaluate(result.theta, points).reshape(np.shape(k))

    parameters = {"basis": method.basis.model_dump(), "bounds": basis.bounds.tolist(),
                  "theta": result.theta.tolist()}
    return Solution(policy=policy, n_params=basis.n_params, n_conditions=basis.n_params,
                    iterations=result.iterations, converged=result.converged,
                    parameters=parameters, condition_number=result.condition_number)
