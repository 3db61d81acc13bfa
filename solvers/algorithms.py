"""Algorithms for a residual system R(theta) = 0 (square) or min ||R(theta)||^2 (M > K).

Each algorithm takes `system(theta, with_jacobian)`, which returns the residual vector
R of shape (M,) and, when asked, its Jacobian J = dR/dtheta of shape (M, K) as a dense
array or a scipy.sparse matrix. Every iteration is reported to the `SolveControl`, so
the convergence history, progress, time limit and cancellation work the same way for
all of them. A residual that becomes non-finite and cannot be recovered by damping
raises `SolveDiverged`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from solvers.control import SolveControl, SolveDiverged

logger = logging.getLogger(__name__)

System = Callable[[np.ndarray, bool], tuple[np.ndarray, object]]

LINE_SEARCH_HALVINGS = 30
ROUNDING_FLOOR = 1e3 * np.finfo(float).eps  # max |R| reachable in float64 when R is O(1)


@dataclass
class AlgorithmResult:
    """Coefficients theta of shape (K,) and how the iteration ended."""

    theta: np.ndarray
    iterations: int
    converged: bool
    residual_max: float
    jacobian: object | None = None
    fallback_steps: int | None = None  # Newton on least squares: steps that took the Gauss-Newton direction


def newton(system: System, theta: np.ndarray, tol: float, max_iterations: int,
           control: SolveControl) -> AlgorithmResult:
    """Solve a square system by Newton steps with a backtracking line search on ||R||_2.

    Stops when max |R| < tol, when no damped step lowers ||R||_2 (rounding sets that
    floor, accepted as converged below ROUNDING_FLOOR), or after max_iterations.
    """
    return _descend(system, theta, tol, max_iterations, control,
                    lambda theta, residual, jacobian: _solve_linear(jacobian, residual))


def gauss_newton(system: System, theta: np.ndarray, tol: float, max_iterations: int,
                 control: SolveControl, square: bool = False) -> AlgorithmResult:
    """Minimise ||R||^2 by Gauss-Newton steps (the linear least-squares step), with line search.

    For a square system (square=True) only R near zero counts as converged; otherwise a
    minimum of ||R||^2 does.
    """
    return _descend(system, theta, tol, max_iterations, control,
                    lambda theta, residual, jacobian: _least_squares_step(jacobian, residual, 0.0),
                    stationary_is_solution=not square)


def newton_least_squares(system: System, hessian: Callable[[np.ndarray], np.ndarray],
                         theta: np.ndarray, tol: float, max_iterations: int,
                         control: SolveControl) -> AlgorithmResult:
    """Minimise L = ||R||^2 / (2M) by Newton steps on the full Hessian of L, with line search.

    hessian(theta) returns the (K, K) matrix `H = J'J / M + sum_i r_i Hess(r_i) / M`. The
    step solves `H d = g` with the gradient `g = J'R / M`. Away from the minimum the
    second term can make H indefinite: where its Cholesky factorisation fails, or d is
    not a descent direction (g'd <= 0), the step is the Gauss-Newton one instead, whose
    matrix J'J / M is positive semi-definite. The line search and the stopping rules are
    those of `gauss_newton`; `fallback_steps` in the result counts the Gauss-Newton steps.
    """
    fallbacks = 0

    def direction(theta: np.ndarray, residual: np.ndarray, jacobian) -> np.ndarray:
        nonlocal fallbacks
        step = _newton_step(hessian(theta), jacobian.T @ residual / residual.size)
        if step is None:
            fallbacks += 1
            step = _least_squares_step(jacobian, residual, 0.0)
        return step

    result = _descend(system, theta, tol, max_iterations, control, direction,
                      stationary_is_solution=True)
    if fallbacks:
        logger.info("newton on least squares: %d of %d steps took the Gauss-Newton direction",
                    fallbacks, result.iterations)
    result.fallback_steps = fallbacks
    return result


def _newton_step(hessian: np.ndarray, gradient: np.ndarray) -> np.ndarray | None:
    """Return d with H d = g when H is positive definite and d is a descent direction, else None."""
    try:
        factor = scipy.linalg.cho_factor(hessian)
    except np.linalg.LinAlgError:
        return None
    step = scipy.linalg.cho_solve(factor, gradient)
    if not np.all(np.isfinite(step)) or gradient @ step <= 0:
        return None
    return step


def _descend(system: System, theta: np.ndarray, tol: float, max_iterations: int,
             control: SolveControl, direction: Callable,
             stationary_is_solution: bool = False) -> AlgorithmResult:
    """Run damped steps theta - lambda d along a direction d(theta, R, J) until a stopping rule holds.

    With stationary_is_solution (least squares), a point where no damped step lowers
    ||R|| is a minimum of ||R||^2 to rounding, so it counts as converged; for a square
    system it does only when R itself is near zero.
    """
    residual, jacobian = _evaluate(system, theta, True)
    if not np.all(np.isfinite(residual)):
        raise SolveDiverged("the first guess gives a non-finite residual", 0, None)
    control.report(0, _max(residual))

    iteration, converged = 0, _max(residual) < tol
    while not converged and iteration < max_iterations:
        iteration += 1
        step = direction(theta, residual, jacobian)
        control.check()
        candidate = _line_search(system, theta, step, _norm(residual), control)
        if candidate is None:
            # No damped step lowers ||R||: rounding, or a stationary point of ||R||^2.
            converged = (stationary_is_solution or _max(residual) < max(tol, ROUNDING_FLOOR)
                         or _small_step(step, theta, tol))
            break
        previous = theta
        theta, residual, jacobian = candidate
        control.report(iteration, _max(residual))
        converged = _max(residual) < tol or _small_step(theta - previous, theta, tol)
    return AlgorithmResult(theta, iteration, bool(converged), _max(residual), jacobian)


def levenberg_marquardt(system: System, theta: np.ndarray, tol: float, max_iterations: int,
                        damping: float, control: SolveControl, square: bool = False) -> AlgorithmResult:
    """Minimise ||R||^2 by Levenberg-Marquardt steps.

    Each step solves (J'J + mu diag(J'J)) d = J'R. A step that lowers ||R|| is taken
    and mu shrinks by 3; otherwise mu grows by 4 and the step is tried again. For a
    square system (square=True) only R near zero counts as converged.
    """
    residual, jacobian = _evaluate(system, theta, True)
    if not np.all(np.isfinite(residual)):
        raise SolveDiverged("the first guess gives a non-finite residual", 0, None)
    control.report(0, _max(residual))
    mu, iteration, converged = damping, 0, _max(residual) < tol

    while not converged and iteration < max_iterations:
        iteration += 1
        step = _least_squares_step(jacobian, residual, mu)
        control.check()
        new_residual, new_jacobian = _evaluate(system, theta - step, True)
        if np.all(np.isfinite(new_residual)) and _norm(new_residual) < _norm(residual):
            theta = theta - step
            residual, jacobian, mu = new_residual, new_jacobian, max(mu / 3, 1e-30)
            converged = _max(residual) < tol or _small_step(step, theta, tol)
        else:
            mu *= 4
            if mu > 1e12:
                # No damped step lowers ||R||: a minimum of ||R||^2 to rounding.
                converged = not square or _max(residual) < max(tol, ROUNDING_FLOOR)
                break
        control.report(iteration, _max(residual))
    return AlgorithmResult(theta, iteration, bool(converged), _max(residual), jacobian)


def gradient_descent(system: System, theta: np.ndarray, tol: float, max_iterations: int,
                     step_size: float | None, control: SolveControl) -> AlgorithmResult:
    """Minimise L = ||R||^2 / (2M) by theta <- theta - alpha J'R / M.

    Without a step size, alpha = 1 / L_J with L_J = ||J||_2^2 / M at the first iterate,
    the Lipschitz constant of the gradient of the linearised loss. A step that would
    raise the loss or make it non-finite is halved until it does not, and alpha keeps
    the halved value. Convergence is linear at best, at a rate set by the condition
    number of J'J.
    """
    residual, jacobian = _evaluate(system, theta, True)
    if not np.all(np.isfinite(residual)):
        raise SolveDiverged("the first guess gives a non-finite residual", 0, None)
    m = residual.size
    alpha = step_size if step_size is not None else m / _spectral_norm(jacobian) ** 2
    control.report(0, _max(residual))

    iteration = 0
    while _max(residual) >= tol and iteration < max_iterations:
        iteration += 1
        gradient = (jacobian.T @ residual) / m
        for _ in range(LINE_SEARCH_HALVINGS):
            candidate, (new_residual, new_jacobian) = theta - alpha * gradient, _evaluate(
                system, theta - alpha * gradient, True)
            if _norm(new_residual) <= _norm(residual):
                break
            alpha /= 2
        else:
            logger.info("gradient descent: no step lowers the loss at iteration %d", iteration)
            break
        theta, residual, jacobian = candidate, new_residual, new_jacobian
        control.report(iteration, _max(residual))
    return AlgorithmResult(theta, iteration, bool(_max(residual) < tol), _max(residual), jacobian)


def condition_number(matrix) -> float | None:
    """Return the 2-norm condition number of a dense matrix, or None for a sparse one."""
    if matrix is None or sp.issparse(matrix):
        return None
    return float(np.linalg.cond(matrix))


def _line_search(system: System, theta: np.ndarray, step: np.ndarray, norm: float,
                 control: SolveControl):
    """Return (theta, R, J) at the first of theta - lambda step, lambda = 1, 1/2, ..., that
    lowers ||R||_2, or None when none of LINE_SEARCH_HALVINGS tries does."""
    lam = 1.0
    for _ in range(LINE_SEARCH_HALVINGS):
        control.check()
        candidate = theta - lam * step
        residual, jacobian = _evaluate(system, candidate, True)
        if _norm(residual) < norm:
            return candidate, residual, jacobian
        lam /= 2
    return None


def _evaluate(system: System, theta: np.ndarray, with_jacobian: bool):
    """Call the system with floating-point warnings silenced: non-finite values are handled."""
    with np.errstate(all="ignore"):
        return system(theta, with_jacobian)


def _least_squares_step(jacobian, residual: np.ndarray, mu: float) -> np.ndarray:
    """Solve (J'J + mu diag(J'J)) d = J'R; with mu = 0 the Gauss-Newton step."""
    if sp.issparse(jacobian):
        normal = (jacobian.T @ jacobian).tocsc()
        if mu > 0:
            normal = normal + mu * sp.diags(normal.diagonal())
        return spla.spsolve(normal, jacobian.T @ residual)
    if mu == 0:
        return np.linalg.lstsq(jacobian, residual, rcond=None)[0]
    # The augmented problem [J; sqrt(mu) D] d = [R; 0], with D the column norms of J, has
    # the same solution as the normal equations without squaring J's condition number.
    scale = np.sqrt(mu) * np.linalg.norm(jacobian, axis=0)
    augmented = np.vstack([jacobian, np.diag(scale)])
    rhs = np.concatenate([residual, np.zeros(scale.size)])
    return np.linalg.lstsq(augmented, rhs, rcond=None)[0]


def solve_linear_least_squares(matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve matrix x = rhs exactly when square, in least squares otherwise; dense or sparse."""
    square = matrix.shape[0] == matrix.shape[1]
    if sp.issparse(matrix):
        if square:
            return spla.spsolve(matrix.tocsc(), rhs)
        return spla.spsolve((matrix.T @ matrix).tocsc(), matrix.T @ rhs)
    if square:
        return np.linalg.solve(matrix, rhs)
    return np.linalg.lstsq(matrix, rhs, rcond=None)[0]


def _solve_linear(matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve matrix x = rhs for a dense array or a scipy.sparse matrix."""
    if sp.issparse(matrix):
        return spla.spsolve(matrix.tocsc(), rhs)
    return np.linalg.solve(matrix, rhs)


def _spectral_norm(jacobian) -> float:
    """Return ||J||_2, the largest singular value."""
    if sp.issparse(jacobian):
        return float(spla.svds(jacobian.astype(float), k=1, return_singular_vectors=False)[0])
    return float(np.linalg.norm(jacobian, 2))


def _small_step(step: np.ndarray, theta: np.ndarray, tol: float) -> bool:
    """Return True when the step changed theta by less than tol relative to its size."""
    return bool(np.max(np.abs(step)) <= tol * max(1.0, float(np.max(np.abs(theta)))))


def _norm(residual: np.ndarray) -> float:
    """Return ||R||_2, or inf when any entry is not finite."""
    return float(np.linalg.norm(residual)) if np.all(np.isfinite(residual)) else np.inf


def _max(residual: np.ndarray) -> float:
    """Return max |R|, or inf when any entry is not finite."""
    return float(np.max(np.abs(residual))) if np.all(np.isfinite(residual)) else np.inf
