"""Monomial and complete polynomial bases, node families, oversampling and spline knots."""

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.polynomial import polynomial as nppoly
from scipy.interpolate import BSpline

from solvers.bases import (NODE_FAMILIES, ChebyshevBasis, MonomialBasis, SplineBasis,
                           family_nodes)

BOUNDS = np.array([[2.0, 5.0], [-0.3, 0.2]])
BOUNDS_3D = np.array([[2.0, 5.0], [-0.3, 0.2], [0.0, 1.0]])
rng = np.random.default_rng(1)
POINTS = np.column_stack([rng.uniform(1.8, 5.2, 40), rng.uniform(-0.35, 0.25, 40)])
UNIT = (POINTS - BOUNDS[:, 0]) / (BOUNDS[:, 1] - BOUNDS[:, 0])


def report_condition(label: str, value: float) -> None:
    """Print a measured condition number, shown by `pytest -s`."""
    print(f"\n{label}: condition number {value:.3e}")


# Monomials

def test_monomial_matches_numpy():
    basis = MonomialBasis(BOUNDS, [5, 3])
    coef = rng.standard_normal((6, 4))
    expected = nppoly.polyval2d(UNIT[:, 0], UNIT[:, 1], coef)
    np.testing.assert_allclose(basis.matrix(POINTS) @ coef.ravel(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(basis.evaluate(coef.ravel(), POINTS), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dim", [0, 1])
def test_monomial_derivative_matches_numpy(dim):
    basis = MonomialBasis(BOUNDS, [5, 3])
    coef = rng.standard_normal((6, 4))
    width = BOUNDS[dim, 1] - BOUNDS[dim, 0]
    d_coef = nppoly.polyder(coef, axis=dim) / width
    expected = nppoly.polyval2d(UNIT[:, 0], UNIT[:, 1], d_coef)
    np.testing.assert_allclose(basis.matrix(POINTS, derivative=dim) @ coef.ravel(), expected,
                               rtol=1e-10, atol=1e-10)


def test_monomial_uses_unit_interval():
    basis = MonomialBasis(np.array([[2.0, 5.0]]), [3])
    values = basis.matrix(np.array([[2.0], [5.0]]))
    np.testing.assert_allclose(values[0], [1, 0, 0, 0])
    np.testing.assert_allclose(values[1], [1, 1, 1, 1])


# Complete (total-degree) products

@pytest.mark.parametrize("cls", [ChebyshevBasis, MonomialBasis])
@pytest.mark.parametrize("bounds, degree", [(BOUNDS[:1], 6), (BOUNDS, 0), (BOUNDS, 1),
                                            (BOUNDS, 5), (BOUNDS_3D, 4)])
def test_complete_size_is_binomial(cls, bounds, degree):
    d = bounds.shape[0]
    basis = cls(bounds, [degree] * d, product="complete")
    assert basis.n_params == math.comb(d + degree, d)
    assert basis.multi_indices.sum(axis=1).max() == degree


@pytest.mark.parametrize("cls", [ChebyshevBasis, MonomialBasis])
@pytest.mark.parametrize("derivative", [None, 0, 2])
def test_complete_matrix_is_tensor_subset(cls, derivative):
    degree = 4
    points = np.column_stack([POINTS, rng.uniform(0, 1, POINTS.shape[0])])
    complete = cls(BOUNDS_3D, [degree] * 3, product="complete")
    tensor = cls(BOUNDS_3D, [degree] * 3)
    grids = np.meshgrid(*[np.arange(degree + 1)] * 3, indexing="ij")
    total = sum(g.ravel() for g in grids)
    expected = tensor.matrix(points, derivative=derivative)[:, total <= degree]
    np.testing.assert_allclose(complete.matrix(points, derivative=derivative), expected, rtol=1e-13)


@pytest.mark.parametrize("cls", [ChebyshevBasis, MonomialBasis])
def test_complete_evaluate_equals_matrix(cls):
    basis = cls(BOUNDS, [3, 6], product="complete")
    theta = rng.standard_normal(basis.n_params)
    assert basis.total_degree == 6
    np.testing.assert_allclose(basis.evaluate(theta, POINTS), basis.matrix(POINTS) @ theta,
                               rtol=1e-12, atol=1e-12)


def test_complete_square_nodes_raise():
    basis = ChebyshevBasis(BOUNDS, [4, 4], product="complete")
    with pytest.raises(ValueError, match="no unisolvent tensor grid of K = 15") as error:
        basis.nodes()
    assert "'least_squares'" in str(error.value)
    assert "'galerkin'" in str(error.value)


def test_complete_one_state_has_square_nodes():
    basis = MonomialBasis(BOUNDS[:1], [5], product="complete")
    assert basis.nodes().shape == (6, 1)


# Node families

@pytest.mark.parametrize("family", NODE_FAMILIES)
@pytest.mark.parametrize("cls", [ChebyshevBasis, MonomialBasis])
def test_node_family_inside_bounds(family, cls):
    basis = cls(BOUNDS, [6, 3], nodes=family, seed=3)
    nodes = basis.nodes()
    assert nodes.shape == (basis.n_params, 2)
    assert np.all(nodes >= BOUNDS[:, 0])
    assert np.all(nodes <= BOUNDS[:, 1])
    for j, size in enumerate([7, 4]):
        points = basis.nodes_1d(j)
        assert points.shape == (size,)
        assert np.all(np.diff(points) > 0)


@pytest.mark.parametrize("family", ["chebyshev_extrema", "equispaced"])
def test_node_family_includes_end_points(family):
    points = ChebyshevBasis(BOUNDS, [6, 3], nodes=family).nodes_1d(1)
    assert points[0] == pytest.approx(-0.3, abs=1e-15)
    assert points[-1] == pytest.approx(0.2, abs=1e-15)


def test_chebyshev_extrema_are_lobatto_points():
    xi = 2 * (family_nodes("chebyshev_extrema", 7, 2.0, 5.0) - 2.0) / 3.0 - 1
    np.testing.assert_allclose(xi, -np.cos(np.arange(7) * np.pi / 6), atol=1e-15)


def test_chebyshev_zeros_are_interior():
    points = family_nodes("chebyshev_zeros", 7, 2.0, 5.0)
    assert points.min() > 2.0
    assert points.max() < 5.0


def test_random_nodes_follow_seed():
    first = ChebyshevBasis(BOUNDS, [5, 5], nodes="random", seed=7)
    again = ChebyshevBasis(BOUNDS, [5, 5], nodes="random", seed=7)
    other = ChebyshevBasis(BOUNDS, [5, 5], nodes="random", seed=8)
    np.testing.assert_array_equal(first.nodes(), again.nodes())
    assert not np.allclose(first.nodes(), other.nodes())
    unit = (first.nodes() - BOUNDS[:, 0]) / (BOUNDS[:, 1] - BOUNDS[:, 0])
    assert not np.allclose(np.unique(unit[:, 0]), np.unique(unit[:, 1]))


def test_single_node_is_midpoint():
    for family in ("chebyshev_extrema", "equispaced", "chebyshev_zeros"):
        np.testing.assert_allclose(family_nodes(family, 1, 2.0, 5.0), [3.5])


@pytest.mark.parametrize("family", NODE_FAMILIES)
def test_node_family_square_system_solves(family):
    basis = ChebyshevBasis(BOUNDS, [6, 5], nodes=family, seed=0)
    nodes = basis.nodes()
    values = np.sin(nodes[:, 0]) * np.cos(3 * nodes[:, 1])
    theta = np.linalg.solve(basis.matrix(nodes), values)
    np.testing.assert_allclose(basis.evaluate(theta, nodes), values, atol=1e-9)


# Oversampling

OVERSAMPLED = [
    lambda: ChebyshevBasis(BOUNDS, [6, 4]),
    lambda: MonomialBasis(BOUNDS_3D, [3, 2, 4], nodes="chebyshev_extrema"),
    lambda: ChebyshevBasis(BOUNDS, [5, 5], product="complete", nodes="equispaced"),
    lambda: MonomialBasis(BOUNDS_3D, [4, 4, 4], product="complete", nodes="random"),
    lambda: SplineBasis(BOUNDS, [9, 7]),
    lambda: SplineBasis(BOUNDS, [None, 6], order=2, knots=[[2.5, 3.0, 3.0, 4.9], None]),
]


@pytest.mark.parametrize("make", OVERSAMPLED)
@pytest.mark.parametrize("ratio", [1.01, 1.5, 2.0, 3.7])
def test_oversampled_nodes_exceed_ratio(make, ratio):
    basis = make()
    nodes = basis.nodes(ratio)
    assert nodes.shape[0] >= ratio * basis.n_params
    assert np.all(nodes >= basis.bounds[:, 0])
    assert np.all(nodes <= basis.bounds[:, 1])
    assert np.linalg.matrix_rank(_as_dense(basis.matrix(nodes))) == basis.n_params


def test_oversampled_counts_per_state():
    basis = ChebyshevBasis(BOUNDS, [6, 4])
    assert basis.grid_counts(2.0) == [math.ceil(7 * 2 ** 0.5), math.ceil(5 * 2 ** 0.5)]
    assert basis.nodes(2.0).shape == (10 * 8, 2)


def test_complete_oversampled_grid_is_smallest():
    basis = ChebyshevBasis(BOUNDS, [4, 4], product="complete")
    assert basis.grid_counts(2.0) == [6, 6]
    assert basis.grid_counts(1.01) == [5, 5]
    cube = ChebyshevBasis(BOUNDS_3D, [2, 2, 2], product="complete")
    assert cube.grid_counts(2.7) == [3, 3, 3]


def test_oversampling_below_one_raises():
    with pytest.raises(ValueError, match="oversampling must be a finite ratio M / K >= 1; got 0.5"):
        ChebyshevBasis(BOUNDS, [3, 3]).nodes(0.5)


def test_spline_oversampled_nodes_cover_intervals():
    basis = SplineBasis(BOUNDS[:1], [None], order=3, knots=[[2.5, 2.51, 3.0, 3.0, 3.0, 4.0]])
    nodes = basis.nodes(1.2)[:, 0]
    breaks = np.unique(basis.knots[0])
    for lo, hi in zip(breaks[:-1], breaks[1:]):
        assert np.any((nodes > lo) & (nodes < hi)), (lo, hi)
    assert np.all(np.isin(basis.greville(0), nodes))


# Conditioning

@pytest.mark.parametrize("d", [1, 2])
def test_monomial_degree_15_is_ill_conditioned(d):
    basis = MonomialBasis(BOUNDS[:d], [15] * d)
    condition = np.linalg.cond(basis.matrix(basis.nodes()))
    report_condition(f"monomial degree 15, {d}-D, Chebyshev zeros", condition)
    assert condition > 1e10


@pytest.mark.parametrize("d", [1, 2])
def test_chebyshev_degree_15_is_well_conditioned(d):
    basis = ChebyshevBasis(BOUNDS[:d], [15] * d)
    condition = np.linalg.cond(basis.matrix(basis.nodes()))
    report_condition(f"chebyshev degree 15, {d}-D, Chebyshev zeros", condition)
    assert condition < 1e3
    assert condition == pytest.approx(2 ** (d / 2), rel=1e-10)


# Splines

KNOTS_BY_ORDER = {1: [2.6, 3.3, 4.1], 2: [2.6, 3.3, 3.3, 4.1], 3: [2.6, 3.3, 3.3, 3.3, 4.1]}


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("given", [False, True])
def test_spline_orders_match_scipy(order, given):
    knots = [KNOTS_BY_ORDER.get(order, [3.0, 3.5]), [-0.2, -0.05, 0.1]] if given else None
    n_basis = [None, None] if given else [order + 4, order + 3]
    basis = SplineBasis(BOUNDS, n_basis, order=order, knots=knots)
    theta = rng.standard_normal(basis.n_params)
    grid = theta.reshape(basis.sizes)
    t0, t1 = basis.knots
    values = np.array([BSpline(t1, BSpline(t0, grid, order)(x), order)(z) for x, z in POINTS])
    slopes = np.array([BSpline(t1, BSpline(t0, grid, order).derivative()(x), order)(z)
                       for x, z in POINTS])
    across = np.array([BSpline(t1, BSpline(t0, grid, order)(x), order).derivative()(z)
                       for x, z in POINTS])

    matrix = basis.matrix(POINTS)
    assert sp.issparse(matrix)
    assert matrix.getnnz(axis=1).max() <= (order + 1) ** 2
    np.testing.assert_allclose(matrix @ theta, values, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(basis.evaluate(theta, POINTS), values, rtol=1e-12, atol=1e-12)
    derivative = basis.matrix(POINTS, derivative=0)
    assert derivative.format == "csr"
    np.testing.assert_allclose(derivative @ theta, slopes, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(basis.matrix(POINTS, derivative=1) @ theta, across, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_spline_repeated_knot_fits_kink(order):
    kink = 3.3
    basis = SplineBasis(BOUNDS[:1], [None], order=order, knots=[KNOTS_BY_ORDER[order]])
    nodes = basis.nodes()
    theta = spla.spsolve(basis.matrix(nodes).tocsc(), np.maximum(nodes[:, 0] - kink, 0))
    x = np.concatenate([np.linspace(1.9, 5.1, 641), [kink]])[:, None]
    error = np.abs(basis.evaluate(theta, x) - np.maximum(x[:, 0] - kink, 0)).max()
    assert error < 1e-12


def test_spline_lower_multiplicity_misses_kink():
    kink = 3.3
    basis = SplineBasis(BOUNDS[:1], [None], order=3, knots=[[2.6, 3.3, 3.3, 4.1]])
    nodes = basis.nodes()
    theta = spla.spsolve(basis.matrix(nodes).tocsc(), np.maximum(nodes[:, 0] - kink, 0))
    x = np.linspace(2.0, 5.0, 301)[:, None]
    assert np.abs(basis.evaluate(theta, x) - np.maximum(x[:, 0] - kink, 0)).max() > 1e-3


def test_spline_kink_in_two_states():
    kink = 3.3
    basis = SplineBasis(BOUNDS, [None, 6], order=3, knots=[KNOTS_BY_ORDER[3], None])
    nodes = basis.nodes()
    target = lambda p: np.maximum(p[:, 0] - kink, 0) * (1 + p[:, 1] ** 2)
    theta = spla.spsolve(basis.matrix(nodes).tocsc(), target(nodes))
    np.testing.assert_allclose(basis.evaluate(theta, POINTS), target(POINTS), atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_spline_repeated_knot_square_system(order):
    basis = SplineBasis(BOUNDS, [None, 7], order=order, knots=[KNOTS_BY_ORDER[order], None])
    greville = basis.greville(0)
    assert np.all(np.diff(greville) > 0)
    assert 3.3 in greville
    condition = np.linalg.cond(basis.matrix(basis.nodes()).toarray())
    report_condition(f"spline order {order} with knot 3.3 repeated {order} times, 2-D", condition)
    assert np.isfinite(condition)
    assert condition < 1e2


def test_spline_derivative_at_kink_is_right_hand():
    basis = SplineBasis(BOUNDS[:1], [None], order=2, knots=[KNOTS_BY_ORDER[2]])
    nodes = basis.nodes()
    theta = spla.spsolve(basis.matrix(nodes).tocsc(), np.maximum(nodes[:, 0] - 3.3, 0))
    slopes = basis.matrix(np.array([[3.3 - 1e-9], [3.3]]), derivative=0) @ theta
    np.testing.assert_allclose(slopes, [0.0, 1.0], atol=1e-9)


def test_spline_uniform_default_unchanged():
    basis = SplineBasis(BOUNDS, [9, 7])
    expected = np.concatenate([[2.0] * 3, np.linspace(2.0, 5.0, 7), [5.0] * 3])
    np.testing.assert_array_equal(basis.knots[0], expected)
    assert basis.knot_placement == ["uniform", "uniform"]


@pytest.mark.parametrize("n_basis, knots, message", [
    ([None, 6], [[2.5, 5.0], None], r"contains 5.0, which is not strictly inside .*\(2.0, 5.0\)"),
    ([None, 6], [[2.0, 3.0], None], r"contains 2.0, which is not strictly inside"),
    ([None, 6], [[1.5], None], r"contains 1.5"),
    ([None, 6], [[3.0, np.nan], None], r"contains nan"),
    ([None, 6], [[3.5, 3.0], None], r"knots\[0\] must be sorted in increasing order; 3.0 follows 3.5"),
    ([6, None], [None, [0.0, 0.0, 0.0, 0.0]], r"knots\[1\] repeats 0.0 4 times; .* multiplicity 1 to 3"),
    ([6, 6], [None], r"one entry per state \(2\)"),
    ([None, 6], [[[3.0]], None], r"flat sequence"),
    ([None, 6], [None, None], r"at least order \+ 1 = 4 functions per state; got n_basis\[0\] = None"),
])
def test_spline_rejects_invalid_knots(n_basis, knots, message):
    with pytest.raises(ValueError, match=message):
        SplineBasis(BOUNDS, n_basis, order=3, knots=knots)


def test_spline_given_knots_set_size():
    basis = SplineBasis(BOUNDS, [30, 6], order=3, knots=[[3.0, 4.0, 4.5], None])
    assert basis.sizes == [7, 6]
    assert basis.n_params == 42


def test_spline_rejects_order_out_of_range():
    with pytest.raises(ValueError, match="spline order must be an integer from 1 to 5"):
        SplineBasis(BOUNDS, [8, 8], order=0)


# Input checks and records

@pytest.mark.parametrize("kwargs, message", [
    ({"product": "sparse"}, r"product must be one of 'tensor', 'complete'; got 'sparse'"),
    ({"nodes": "gauss"}, r"nodes must be one of 'chebyshev_zeros', .*'random'; got 'gauss'"),
])
def test_polynomial_rejects_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MonomialBasis(BOUNDS, [3, 3], **kwargs)


def test_matrix_rejects_bad_derivative():
    with pytest.raises(ValueError, match="state index from 0 to 1; got 2"):
        ChebyshevBasis(BOUNDS, [3, 3]).matrix(POINTS, derivative=2)


@pytest.mark.parametrize("basis", [
    ChebyshevBasis(BOUNDS, [4, 4], product="complete", nodes="random", seed=5),
    MonomialBasis(BOUNDS, [3, 2]),
    SplineBasis(BOUNDS, [None, 6], order=2, knots=[[3.0, 3.0], None]),
])
def test_describe_is_json_ready(basis):
    record = json.loads(json.dumps(basis.describe()))
    assert record["n_params"] == basis.n_params
    assert record["kind"] == basis.kind
    assert record["sizes"] == basis.sizes
    assert {"product", "nodes", "bounds"} <= set(record)


def test_describe_lists_spline_knots():
    record = SplineBasis(BOUNDS, [None, 6], order=2, knots=[[3.0, 3.0], None]).describe()
    assert record["interior_knots"][0] == [3.0, 3.0]
    assert record["knot_placement"] == ["given", "uniform"]
    assert record["order"] == 2


def _as_dense(matrix):
    return matrix.toarray() if sp.issparse(matrix) else matrix
