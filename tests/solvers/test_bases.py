import numpy as np
import pytest
import scipy.sparse as sp
from numpy.polynomial import chebyshev as npcheb
from scipy.interpolate import BSpline

from solvers.bases import ChebyshevBasis, SplineBasis, row_kron

BOUNDS = np.array([[2.0, 5.0], [-0.3, 0.2]])
rng = np.random.default_rng(0)
POINTS = np.column_stack([rng.uniform(1.8, 5.2, 40), rng.uniform(-0.35, 0.25, 40)])


def test_chebyshev_matches_numpy():
    basis = ChebyshevBasis(BOUNDS, [6, 4])
    theta = rng.standard_normal(basis.n_params)
    xi = 2 * (POINTS - BOUNDS[:, 0]) / (BOUNDS[:, 1] - BOUNDS[:, 0]) - 1
    expected = npcheb.chebval2d(xi[:, 0], xi[:, 1], theta.reshape(7, 5))
    np.testing.assert_allclose(basis.evaluate(theta, POINTS), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(basis.matrix(POINTS) @ theta, expected, rtol=1e-12, atol=1e-12)


def test_chebyshev_derivative_matches_numpy():
    basis = ChebyshevBasis(BOUNDS, [6, 4])
    theta = rng.standard_normal(basis.n_params)
    xi = 2 * (POINTS - BOUNDS[:, 0]) / (BOUNDS[:, 1] - BOUNDS[:, 0]) - 1
    d_coef = npcheb.chebder(theta.reshape(7, 5), axis=0) * 2 / (BOUNDS[0, 1] - BOUNDS[0, 0])
    expected = npcheb.chebval2d(xi[:, 0], xi[:, 1], d_coef)
    np.testing.assert_allclose(basis.matrix(POINTS, derivative=0) @ theta, expected, rtol=1e-10, atol=1e-10)


def test_chebyshev_nodes_are_zeros():
    basis = ChebyshevBasis(BOUNDS, [4, 4])
    xi = 2 * (basis.nodes_1d(0) - 2.0) / 3.0 - 1
    np.testing.assert_allclose(npcheb.chebval(xi, [0] * 5 + [1]), 0, atol=1e-13)
    assert basis.nodes().shape == (25, 2)


def test_spline_matches_scipy():
    basis = SplineBasis(BOUNDS, [9, 7])
    theta = rng.standard_normal(basis.n_params)
    grid = theta.reshape(9, 7)
    expected = np.array([BSpline(basis.knots[1], BSpline(basis.knots[0], grid, 3)(x), 3)(z)
                         for x, z in POINTS])
    values = basis.matrix(POINTS)
    assert sp.issparse(values)
    assert values.getnnz(axis=1).max() <= 16
    np.testing.assert_allclose(values @ theta, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(basis.evaluate(theta, POINTS), expected, rtol=1e-12, atol=1e-12)


def test_spline_derivative_matches_scipy():
    basis = SplineBasis(BOUNDS, [9, 7])
    theta = rng.standard_normal(basis.n_params)
    grid = theta.reshape(9, 7)
    expected = np.array([BSpline(basis.knots[1], BSpline(basis.knots[0], grid, 3).derivative()(x), 3)(z)
                         for x, z in POINTS])
    np.testing.assert_allclose(basis.matrix(POINTS, derivative=0) @ theta, expected, rtol=1e-10, atol=1e-10)


def test_spline_interpolates_at_greville_nodes():
    basis = SplineBasis(BOUNDS, [8, 8])
    nodes = basis.nodes()
    values = np.sin(nodes[:, 0]) * np.cos(nodes[:, 1])
    theta = sp.linalg.spsolve(basis.matrix(nodes).tocsc(), values)
    np.testing.assert_allclose(basis.evaluate(theta, nodes), values, atol=1e-12)


def test_row_kron_sparse_equals_dense():
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    a[a < 0] = 0
    dense = row_kron(a, b)
    sparse = row_kron(sp.csr_matrix(a), sp.csr_matrix(b))
    assert dense.shape == (5, 12)
    np.testing.assert_allclose(sparse.toarray(), dense)
    np.testing.assert_allclose(dense[2], np.kron(a[2], b[2]))


def test_spline_rejects_too_few_functions():
    with pytest.raises(ValueError, match="at least order \\+ 1 = 4"):
        SplineBasis(BOUNDS, [3, 8])


def test_bounds_must_increase():
    with pytest.raises(ValueError, match="increasing"):
        ChebyshevBasis(np.array([[1.0, 1.0], [0.0, 1.0]]), [3, 3])
