"""The residual-system algorithms on small problems with known solutions."""

import numpy as np
import pytest
import scipy.sparse as sp

from solvers import algorithms
from solvers.control import SolveControl, SolveDiverged

TARGET = np.array([1.0, 2.0, 3.0])


def cubic_system(theta, with_jacobian):
    """R(theta) = theta^3 - target^3, root theta = target; Jacobian diag(3 theta^2)."""
    residual = theta ** 3 - TARGET ** 3
    return residual, (np.diag(3 * theta ** 2) if with_jacobian else None)


def sparse_cubic_system(theta, with_jacobian):
    residual, jacobian = cubic_system(theta, with_jacobian)
    return residual, (sp.csr_matrix(jacobian) if with_jacobian else None)


X = np.linspace(0, 1, 20)


def exponential_fit(theta, with_jacobian):
    """R_i = a exp(b x_i) - 2 exp(-x_i): an overdetermined system with the exact fit a=2, b=-1."""
    a, b = theta
    model = a * np.exp(b * X)
    residual = model - 2 * np.exp(-X)
    jacobian = np.column_stack([np.exp(b * X), a * X * np.exp(b * X)]) if with_jacobian else None
    return residual, jacobian


def test_newton_converges_quadratically():
    control = SolveControl()
    result = algorithms.newton(cubic_system, np.array([1.5, 1.5, 1.5]), 1e-13, 50, control)
    assert result.converged
    np.testing.assert_allclose(result.theta, TARGET, rtol=1e-12)
    residuals = [row[1] for row in control.history]
    # Once close, each residual is about the square of the previous one (times a constant).
    tail = [r for r in residuals if 1e-12 < r < 1e-2]
    ratios = [np.log(tail[i + 1]) / np.log(tail[i]) for i in range(len(tail) - 1)]
    assert ratios, residuals
    assert min(ratios) > 1.6


def test_newton_sparse_jacobian():
    result = algorithms.newton(sparse_cubic_system, np.array([1.5, 1.5, 1.5]), 1e-13, 50, SolveControl())
    np.testing.assert_allclose(result.theta, TARGET, rtol=1e-12)


@pytest.mark.parametrize("method", ["gauss_newton", "levenberg_marquardt"])
def test_least_squares_recovers_exact_fit(method):
    control = SolveControl()
    if method == "gauss_newton":
        result = algorithms.gauss_newton(exponential_fit, np.array([1.0, 0.0]), 1e-13, 100, control)
    else:
        result = algorithms.levenberg_marquardt(exponential_fit, np.array([1.0, 0.0]), 1e-13, 200, 1e-3, control)
    assert result.converged
    np.testing.assert_allclose(result.theta, [2.0, -1.0], atol=1e-10)
    assert result.residual_max < 1e-10


def test_gradient_descent_converges_linearly():
    matrix = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    solution = np.array([1.0, -1.0])
    rhs = matrix @ solution

    def linear(theta, with_jacobian):
        return matrix @ theta - rhs, matrix

    control = SolveControl()
    result = algorithms.gradient_descent(linear, np.zeros(2), 1e-10, 10_000, None, control)
    assert result.converged
    np.testing.assert_allclose(result.theta, solution, atol=1e-9)
    residuals = np.array([row[1] for row in control.history])
    middle = residuals[(residuals < 1e-2) & (residuals > 1e-9)]
    ratios = middle[1:] / middle[:-1]
    # Linear convergence: the ratio of successive residuals settles below 1 but well above 0.
    assert 0.1 < np.median(ratios) < 1.0


def test_gradient_descent_stops_at_cap():
    result = algorithms.gradient_descent(exponential_fit, np.array([1.0, 0.0]), 1e-14, 5, None, SolveControl())
    assert result.iterations == 5
    assert not result.converged


def test_non_finite_first_guess_diverges():
    def broken(theta, with_jacobian):
        return np.array([np.nan, 1.0]), np.eye(2)

    with pytest.raises(SolveDiverged):
        algorithms.newton(broken, np.zeros(2), 1e-10, 10, SolveControl())


def test_condition_number_dense_only():
    assert algorithms.condition_number(np.diag([1.0, 1e-3])) == pytest.approx(1e3)
    assert algorithms.condition_number(sp.eye(3, format="csr")) is None


NOISE = 0.3 * np.sin(7 * X)


def noisy_exponential_fit(theta, with_jacobian):
    """R_i = a exp(b x_i) - 2 exp(-x_i) - 0.3 sin(7 x_i): no exact fit, so the residual at the
    least-squares minimum is far from zero and the Hessian's second-order term matters."""
    a, b = theta
    growth = np.exp(b * X)
    residual = a * growth - 2 * np.exp(-X) - NOISE
    jacobian = np.column_stack([growth, a * X * growth]) if with_jacobian else None
    return residual, jacobian


def noisy_exponential_hessian(theta):
    """Hessian of L = ||R||^2 / (2M) for noisy_exponential_fit, from its second derivatives
    d2R/da db = x e^(bx) and d2R/db2 = a x^2 e^(bx)."""
    a, b = theta
    residual, jacobian = noisy_exponential_fit(theta, True)
    growth = np.exp(b * X)
    cross = np.sum(residual * X * growth)
    second = np.array([[0.0, cross], [cross, np.sum(residual * a * X ** 2 * growth)]])
    return (jacobian.T @ jacobian + second) / X.size


def test_newton_least_squares_finds_minimum():
    newton = algorithms.newton_least_squares(noisy_exponential_fit, noisy_exponential_hessian,
                                             np.array([1.0, 0.0]), 1e-13, 50, SolveControl())
    gauss = algorithms.gauss_newton(noisy_exponential_fit, np.array([1.0, 0.0]), 1e-13, 100, SolveControl())
    residual, jacobian = noisy_exponential_fit(newton.theta, True)

    assert newton.converged
    assert newton.fallback_steps == 0
    assert np.max(np.abs(jacobian.T @ residual)) < 1e-12
    np.testing.assert_allclose(newton.theta, gauss.theta, atol=1e-6)
    assert newton.residual_max > 0.2


def test_newton_least_squares_indefinite_fallback():
    # R(theta) = theta^2 - 1 with one residual: L = R^2 / 2 has Hessian 6 theta^2 - 2, which
    # is negative at theta = 0.3, where Newton's step would head for the maximum at 0.
    def square(theta, with_jacobian):
        return theta ** 2 - 1, (np.array([[2 * theta[0]]]) if with_jacobian else None)

    def hessian(theta):
        return np.array([[6 * theta[0] ** 2 - 2]])

    result = algorithms.newton_least_squares(square, hessian, np.array([0.3]), 1e-13, 50, SolveControl())

    assert result.converged
    assert result.fallback_steps >= 1
    np.testing.assert_allclose(result.theta, [1.0], rtol=1e-12)
