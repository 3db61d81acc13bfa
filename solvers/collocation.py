"""Linear bases on the Euler equation: collocation, least squares and Galerkin systems.

The consumption policy is `c(s) = Phi(s) theta` for a basis with K coefficients. The
objective decides where the Euler residual is taken and how it becomes a system:

- collocation: the residuals at the basis's K nodes, a square system R(theta) = 0;
- least_squares: the residuals at M > K nodes, minimised in the sum of squares;
- galerkin: the K projections `sum_q w_q phi_j(s_q) R(s_q)` with a tensor
  Gauss-Legendre rule over the approximation domain, a square system.

The algorithms in `solvers.algorithms` then solve the system with the analytic Jacobian
from `euler_system`, or with one by torch automatic differentiation (`solvers.autodiff`,
the algorithm's `jacobian: autodiff`). Newton on least squares also takes the Hessian of
the loss from there. Time iteration works on consumption values rather than on the
residual system, so it is here too.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.polynomial import legendre
from threadpoolctl import threadpool_limits

from solvers import algorithms
from solvers.bases import ChebyshevBasis, MonomialBasis, SplineBasis, TensorBasis
from solvers.control import SolveControl, SolveDiverged
from solvers.growth import GrowthModel, Policy
from solvers.methods import AUTODIFF_MAX_PARAMS
from solvers.quadrature import gauss_hermite
from solvers.solution import Solution

logger = logging.getLogger(__name__)

SINGLE_THREAD_MAX_PARAMS = 2_000
TIME_ITERATION_NEWTON_STEPS = 30


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


def build_basis(model: GrowthModel, basis_spec, seed: int = 0) -> TensorBasis:
    """Return the linear basis a monomial, chebyshev or spline spec describes, on the widened box."""
    bounds = model.approximation_bounds(basis_spec.domain_margin)
    dims = bounds.shape[0]
    if basis_spec.kind in ("chebyshev", "monomial"):
        cls = ChebyshevBasis if basis_spec.kind == "chebyshev" else MonomialBasis
        return cls(bounds, [basis_spec.degree] * dims, product=basis_spec.product,
                   nodes=basis_spec.nodes, seed=seed)
    if basis_spec.kind == "spline":
        return SplineBasis(bounds, [basis_spec.n_basis] * dims, order=basis_spec.order,
                           knots=basis_spec.knots)
    if basis_spec.kind == "grid":
        # Linear B-splines on a uniform grid interpolate linearly between grid points,
        # and their Greville nodes are the grid points themselves.
        return SplineBasis(bounds, [basis_spec.points] * dims, order=1)
    raise ValueError(f"basis kind {basis_spec.kind!r} is not a linear basis; valid choices: "
                     f"monomial, chebyshev, spline, grid")


class Projection:
    """Map from residuals at points to equations, and from values at the points to theta.

    Collocation and least squares take the residuals at the basis's nodes as they are and
    fit values there (exactly, or in least squares). Galerkin takes the residuals at a
    tensor Gauss-Legendre rule's points and projects them on the basis, `P R` with
    `P = Phi_q' W`, and fits values by the same projection, `(P Phi_q) theta = P v`.
    """

    def __init__(self, basis: TensorBasis, objective):
        if objective.kind == "galerkin":
            self.points, rule_weights = gauss_legendre_box(
                basis.bounds, [n + objective.extra_points for n in basis.sizes])
            phi = basis.matrix(self.points)
            self.weigh = phi.T @ sp.diags(rule_weights) if sp.issparse(phi) else phi.T * rule_weights
            gram = self.weigh @ phi
            self.refit = lambda values: algorithms.solve_linear_least_squares(gram, self.weigh @ values)
        elif objective.kind in ("collocation", "least_squares"):
            self.points = basis.nodes() if objective.kind == "collocation" else \
                basis.nodes(oversampling=objective.oversampling)
            self.weigh = None
            self.refit = make_fitter(basis, self.points)
        else:
            raise ValueError(f"objective {objective.kind!r} does not apply to a linear basis; "
                             f"valid choices: collocation, least_squares, galerkin")

    def system(self, inner: Callable) -> Callable:
        """Return the system of equations that an objective makes of a residual system."""
        if self.weigh is None:
            return inner

        def projected(theta: np.ndarray, with_jacobian: bool):
            residual, jacobian = inner(theta, with_jacobian)
            return self.weigh @ residual, (self.weigh @ jacobian if with_jacobian else None)

        return projected


def objective_system(model: GrowthModel, basis: TensorBasis, objective, eps: np.ndarray,
                     weights: np.ndarray, jacobian: str = "analytic",
                     check: Callable[[], None] | None = None) -> tuple[Callable, np.ndarray]:
    """Return the Euler residual system of an objective and the states where residuals are taken.

    The system maps (theta, with_jacobian) to (R, J), R of shape (M,) or (K,) for Galerkin.
    jacobian 'analytic' takes J from `euler_system`; 'autodiff' takes a dense J from torch
    (`solvers.autodiff.autodiff_system`), calling check() between chunks of its columns.
    """
    projection = Projection(basis, objective)
    points = projection.points
    if jacobian == "autodiff":
        from solvers.autodiff import autodiff_system

        return projection.system(autodiff_system(model, basis, points, eps, weights, check)), points
    if jacobian != "analytic":
        raise ValueError(f"jacobian {jacobian!r} is not known; valid choices: analytic, autodiff")

    def system(theta: np.ndarray, with_jacobian: bool):
        return euler_system(model, basis, theta, points, eps, weights, with_jacobian)

    return projection.system(system), points


def _torch_threads(method, limit: int | None):
    """Return a context that caps torch's threads for a method that uses torch derivatives."""
    if not uses_autodiff(method):
        return contextlib.nullcontext()
    from solvers.autodiff import torch_threads

    return torch_threads(limit)


def uses_autodiff(method) -> bool:
    """Return True when the method needs torch derivatives: an autodiff Jacobian, or Newton
    on least squares, whose Hessian comes from torch."""
    algorithm = method.algorithm
    return getattr(algorithm, "jacobian", "analytic") == "autodiff" or (
        algorithm.kind == "newton" and method.objective.kind == "least_squares")


def check_autodiff_size(basis: TensorBasis) -> None:
    """Raise ValueError when a basis has more coefficients than torch derivatives allow."""
    if basis.n_params > AUTODIFF_MAX_PARAMS:
        raise ValueError(
            f"the basis has K = {basis.n_params} coefficients, and a Jacobian or Hessian by "
            f"automatic differentiation allows at most K = {AUTODIFF_MAX_PARAMS}; use jacobian "
            f"'analytic' (and gauss_newton on least_squares), or a smaller basis")


def gauss_legendre_box(bounds: np.ndarray, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Return the tensor Gauss-Legendre rule on a box: points (Q, d) and weights (Q,).

    `sum_q w_q f(s_q)` integrates f over the box, exactly for polynomials of degree up to
    2 counts[j] - 1 in state j.
    """
    nodes_1d, weights_1d = [], []
    for (a, b), n in zip(bounds, counts):
        x, w = legendre.leggauss(n)
        nodes_1d.append(a + (x + 1) * (b - a) / 2)
        weights_1d.append(w * (b - a) / 2)
    grids = np.meshgrid(*nodes_1d, indexing="ij")
    weight = np.ones(1)
    for w in weights_1d:
        weight = np.outer(weight, w).ravel()
    return np.stack([g.ravel() for g in grids], axis=1), weight


def fit(basis: TensorBasis, points: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return theta with Phi(points) theta = values, exactly when square, in least squares otherwise."""
    return algorithms.solve_linear_least_squares(basis.matrix(points), values)


def make_fitter(basis: TensorBasis, points: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Return a function values -> theta that fits at fixed points, factorising Phi once.

    Iterative methods refit at the same points every iteration, so the factors are
    computed here once: LU for a square matrix, the normal matrix Phi'Phi for sparse least
    squares, and QR for dense least squares, which keeps an ill-conditioned basis accurate.
    """
    matrix = basis.matrix(points)
    square = matrix.shape[0] == matrix.shape[1]
    if sp.issparse(matrix):
        if square:
            return spla.factorized(matrix.tocsc())
        solve_normal = spla.factorized((matrix.T @ matrix).tocsc())
        return lambda values: solve_normal(matrix.T @ values)
    if square:
        factors = scipy.linalg.lu_factor(matrix)
        return lambda values: scipy.linalg.lu_solve(factors, values)
    q, r = scipy.linalg.qr(matrix, mode="economic")
    return lambda values: scipy.linalg.solve_triangular(r, q.T @ values)


def first_guess(model: GrowthModel, basis: TensorBasis, guess=None) -> np.ndarray:
    """Return theta fitted to the first guess of consumption (default: the model's) on twice K points."""
    guess = guess or model.initial_consumption
    points = basis.nodes(oversampling=2.0)
    return fit(basis, points, guess(points[:, 0], points[:, 1]))


def solve_collocation(model: GrowthModel, method, control: SolveControl, seed: int = 0) -> Solution:
    """Solve the growth model with a linear basis, the method's objective and its algorithm."""
    basis = build_basis(model, method.basis, seed)
    algorithm = method.algorithm
    if uses_autodiff(method):
        check_autodiff_size(basis)
    eps, weights = gauss_hermite(method.quadrature_nodes)
    system, points = objective_system(model, basis, method.objective, eps, weights,
                                      getattr(algorithm, "jacobian", "analytic"), control.check)

    # Small dense systems gain nothing from BLAS threads, and when another process keeps
    # the cores busy, threads waiting on each other made a K = 121 solve 100 times slower
    # (1 s instead of 0.01 s, measured on a 2-core VM). torch's threads behave the same:
    # an autodiff Hessian at K = 49 took 0.7 s of CPU time with 2 threads and 0.08 s with 1
    # on the same VM under load.
    threads = 1 if basis.n_params <= SINGLE_THREAD_MAX_PARAMS else None
    with threadpool_limits(limits=threads, user_api="blas"), _torch_threads(method, threads):
        theta = first_guess(model, basis)
        if algorithm.kind == "time_iteration":
            result = time_iteration(model, basis, points, theta, eps, weights, algorithm, control)
        else:
            square = method.objective.kind in ("collocation", "galerkin")
            hessian = None
            if algorithm.kind == "newton" and not square:
                from solvers.autodiff import loss_hessian

                hessian = loss_hessian(model, basis, points, eps, weights, control.check)
            result = run_algorithm(system, theta, algorithm, control, square, hessian)
    logger.info("%s / %s / %s: %d iterations, max |R| %.2e, converged %s", method.basis.kind,
                method.objective.kind, algorithm.kind, result.iterations, result.residual_max,
                result.converged)

    policy = linear_policy(basis, result.theta)
    parameters = {"basis": method.basis.model_dump(), "bounds": basis.bounds.tolist(),
                  "theta": result.theta.tolist()}
    diagnostics = basis_diagnostics(basis, points)
    if result.fallback_steps is not None:
        diagnostics["gauss_newton_fallback_steps"] = result.fallback_steps
    return Solution(policy=policy, n_params=basis.n_params, n_conditions=points.shape[0],
                    iterations=result.iterations, converged=result.converged, parameters=parameters,
                    condition_number=algorithms.condition_number(result.jacobian),
                    extra=diagnostics)


def linear_policy(basis: TensorBasis, theta: np.ndarray) -> Policy:
    """Return the policy `c(k, log z) = Phi(k, log z) theta`: numpy arrays k and log z of
    one shape in, consumption of that shape out."""
    def policy(k: np.ndarray, logz: np.ndarray) -> np.ndarray:
        states = np.column_stack([np.ravel(k), np.ravel(logz)])
        return basis.evaluate(theta, states).reshape(np.shape(k))

    return policy


def basis_diagnostics(basis: TensorBasis, points: np.ndarray) -> dict[str, float]:
    """Return the condition number of the basis matrix at the residual points (dense bases)
    and how many of those points lie outside the approximation domain."""
    low, high = basis.bounds[:, 0], basis.bounds[:, 1]
    outside = int(np.sum(np.any((points < low) | (points > high), axis=1)))
    diagnostics: dict[str, float] = {"nodes_outside_domain": outside}
    condition = algorithms.condition_number(basis.matrix(points))
    if condition is not None:
        diagnostics["basis_condition_number"] = condition
    return diagnostics


def run_algorithm(system, theta: np.ndarray, algorithm, control: SolveControl,
                  square: bool, hessian: Callable | None = None) -> algorithms.AlgorithmResult:
    """Dispatch a residual system (square, or least squares) to the algorithm the spec names.

    Newton on a least-squares system needs hessian, theta -> the (K, K) Hessian of the loss.
    """
    kind = algorithm.kind
    if kind == "newton" and not square:
        if hessian is None:
            raise ValueError("newton on a least-squares system needs the Hessian of the loss; "
                             "pass hessian, or use gauss_newton")
        return algorithms.newton_least_squares(system, hessian, theta, algorithm.tol,
                                               algorithm.max_iterations, control)
    if kind == "newton":
        return algorithms.newton(system, theta, algorithm.tol, algorithm.max_iterations, control)
    if kind == "gauss_newton":
        return algorithms.gauss_newton(system, theta, algorithm.tol, algorithm.max_iterations, control,
                                       square)
    if kind == "levenberg_marquardt":
        return algorithms.levenberg_marquardt(system, theta, algorithm.tol, algorithm.max_iterations,
                                              algorithm.damping, control, square)
    if kind == "gradient_descent":
        return algorithms.gradient_descent(system, theta, algorithm.tol, algorithm.max_iterations,
                                           algorithm.step_size, control)
    raise ValueError(f"algorithm {kind!r} does not solve a residual system; valid choices: "
                     f"newton, gauss_newton, levenberg_marquardt, gradient_descent")


def time_iteration(model: GrowthModel, basis: TensorBasis, points: np.ndarray, theta: np.ndarray,
                   eps: np.ndarray, weights: np.ndarray, algorithm, control: SolveControl
                   ) -> algorithms.AlgorithmResult:
    """Iterate on the policy: at each node solve the Euler equation for today's consumption
    given the previous policy tomorrow, then refit theta (damped by `algorithm.damping`).

    The history's residual is the largest relative change of consumption at the nodes.
    """
    k, logz = points[:, 0], points[:, 1]
    phi = basis.matrix(points)
    refit = make_fitter(basis, points)
    c = phi @ theta
    change, iteration = np.inf, 0
    control.report(0, change if np.isfinite(change) else 1.0)
    while change >= algorithm.tol and iteration < algorithm.max_iterations:
        iteration += 1
        c_new = _euler_consumption(model, basis, theta, k, logz, c, eps, weights)
        theta_new = refit(c_new)
        theta = (1 - algorithm.damping) * theta + algorithm.damping * theta_new
        c_next = phi @ theta
        change = float(np.max(np.abs(c_next - c) / np.abs(c)))
        c = c_next
        control.report(iteration, change)
    residual, jacobian = euler_system(model, basis, theta, points, eps, weights, True)
    return algorithms.AlgorithmResult(theta, iteration, change < algorithm.tol,
                                      float(np.max(np.abs(residual))), jacobian)


def _euler_consumption(model, basis, theta, k, logz, c, eps, weights) -> np.ndarray:
    """Solve `beta c^gamma E[c_n(k', z')^-gamma R'] = 1` for c at each node by safeguarded
    Newton steps, where c_n is the policy with coefficients theta and k' = m - c."""
    cash = model.cash_on_hand(k, logz)
    logz_next = (model.rho * logz[:, None] + model.sigma * eps[None, :]).ravel()
    n_nodes, n_quad = k.size, eps.size
    w = np.tile(weights, n_nodes)
    for _ in range(TIME_ITERATION_NEWTON_STEPS):
        k_next = np.repeat(cash - c, n_quad)
        states = np.column_stack([k_next, logz_next])
        c_next = basis.matrix(states) @ theta
        slope = basis.matrix(states, derivative=0) @ theta
        z_next = np.exp(logz_next)
        gross = 1 - model.delta + model.alpha * z_next * k_next ** (model.alpha - 1)
        gross_slope = model.alpha * (model.alpha - 1) * z_next * k_next ** (model.alpha - 2)
        expectation = (w * c_next ** -model.gamma * gross).reshape(n_nodes, n_quad).sum(1)
        # d/dc of the expectation, with dk'/dc = -1.
        d_expectation = -(w * (-model.gamma * c_next ** (-model.gamma - 1) * slope * gross
                               + c_next ** -model.gamma * gross_slope)).reshape(n_nodes, n_quad).sum(1)
        f = model.beta * c ** model.gamma * expectation - 1
        df = model.beta * (model.gamma * c ** (model.gamma - 1) * expectation + c ** model.gamma * d_expectation)
        step = f / df
        # Keep 0 < c < m: halve any step that would leave the interval.
        c_trial = c - step
        outside = (c_trial <= 0) | (c_trial >= cash)
        c_trial[outside] = np.where(step[outside] > 0, c[outside] / 2, (c[outside] + cash[outside]) / 2)
        if not np.all(np.isfinite(c_trial)):
            raise SolveDiverged("time iteration: the Euler equation has no finite solution at a node", 0, None)
        converged = np.max(np.abs(c_trial - c) / c) < 1e-15
        c = c_trial
        if converged:
            break
    return c


def _scale_rows(a: np.ndarray, matrix):
    """Return diag(a) @ matrix, keeping the matrix dense or sparse."""
    if sp.issparse(matrix):
        return sp.diags(a) @ matrix
    return a[:, None] * matrix
