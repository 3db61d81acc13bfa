"""Smolyak sparse grids: node counts, nesting, exact interpolation, derivatives and speed."""

import itertools
import json
import time

import numpy as np
import pytest
from numpy.polynomial import chebyshev as npcheb
from numpy.polynomial import polynomial as nppoly

from solvers import smolyak
from solvers.bases import ChebyshevBasis
from solvers.smolyak import SmolyakBasis, smolyak_size

BOUNDS_4D = np.array([[0.5, 1.5], [-0.2, 0.2], [0.0, 1.0], [1.0, 2.0]])
rng = np.random.default_rng(3)


def unit_box(d: int) -> np.ndarray:
    """Return the bounds of [-1, 1]^d, shape (d, 2)."""
    return np.tile([-1.0, 1.0], (d, 1))


def to_unit(bounds: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Return the points x (N, d) of the box mapped to [-1, 1]^d."""
    return 2 * (x - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0]) - 1


def uniform_points(bounds: np.ndarray, n: int) -> np.ndarray:
    """Return n uniform draws in the box, shape (n, d)."""
    return rng.uniform(bounds[:, 0], bounds[:, 1], size=(n, bounds.shape[0]))


def brute_force_grid(levels: list[int]) -> set:
    """Return the rounded points of the union of tensor grids over the kept multi-indices i.

    Built from numpy's Chebyshev extrema directly: i ranges over {1, ..., mu_j + 1} per
    state with |i| <= d + max(mu), and level i has m(i) = 1 or 2^(i-1) + 1 points.
    """
    d, top = len(levels), max(levels)
    rules = {1: [0.0]}
    for i in range(2, top + 2):
        rules[i] = npcheb.chebpts2(2 ** (i - 1) + 1)

    points = set()
    for index in itertools.product(*[range(1, mu_j + 2) for mu_j in levels]):
        if sum(index) <= d + top:
            for point in itertools.product(*[rules[i] for i in index]):
                points.add(tuple(np.round(point, 12) + 0.0))
    return points


def rounded_set(points: np.ndarray) -> set:
    """Return the rows of points rounded to 12 decimals as a set of tuples."""
    return {tuple(row) for row in np.round(points, 12) + 0.0}


def level_three_size(d: int) -> int:
    """Return the closed form 1 + 8d + 6d(d - 1) + 4d(d - 1)(d - 2)/3 of the level-3 count."""
    return 1 + 8 * d + 6 * d * (d - 1) + 4 * d * (d - 1) * (d - 2) // 3


# Node counts

@pytest.mark.parametrize("d", [1, 2, 3, 5, 10, 20, 50, 100])
def test_size_closed_forms(d):
    assert smolyak_size(d, 0) == 1
    assert smolyak_size(d, 1) == 2 * d + 1
    assert smolyak_size(d, 2) == 2 * d ** 2 + 2 * d + 1
    assert smolyak_size(d, 3) == level_three_size(d)


def test_size_known_values():
    assert smolyak_size(2, 3) == 29
    assert smolyak_size(20, 2) == 841
    assert smolyak_size(20, 3) == 11_561
    assert smolyak_size(100, 2) == 20_201
    assert smolyak_size(2, 4) == 65
    print(f"\nnode counts: d = 20 level 2: {smolyak_size(20, 2)}, level 3: {smolyak_size(20, 3)}; "
          f"d = 100 level 1: {smolyak_size(100, 1)}, level 2: {smolyak_size(100, 2)}")


@pytest.mark.parametrize("levels", [[0], [3], [4], [1, 1], [2, 2], [3, 3], [1, 2], [3, 0],
                                    [4, 4], [2, 2, 2], [3, 3, 3], [1, 3, 2], [2, 2, 2, 2],
                                    [3, 3, 3, 3], [0, 2, 1, 3]])
def test_grid_matches_brute_force(levels):
    expected = brute_force_grid(levels)
    basis = SmolyakBasis(unit_box(len(levels)), levels)
    nodes = basis.nodes()

    assert smolyak_size(len(levels), levels) == len(expected)
    assert basis.n_params == len(expected)
    assert nodes.shape == (len(expected), len(levels))
    assert rounded_set(nodes) == expected


@pytest.mark.parametrize("d, level", [(2, 1), (3, 2), (4, 3), (20, 2)])
def test_nodes_are_nested(d, level):
    bounds = np.column_stack([np.arange(d) - 1.0, np.arange(d) + 0.5])
    coarse = SmolyakBasis(bounds, level)
    fine = SmolyakBasis(bounds, level + 1)

    assert rounded_set(coarse.nodes()) <= rounded_set(fine.nodes())
    np.testing.assert_array_equal(fine.nodes()[:coarse.n_params], coarse.nodes())
    np.testing.assert_array_equal(fine.multi_indices[:coarse.n_params], coarse.multi_indices)


@pytest.mark.parametrize("d, level", [(1, 3), (3, 2), (4, 3), (6, 1)])
def test_equal_levels_match_isotropic(d, level):
    isotropic = SmolyakBasis(unit_box(d), level)
    anisotropic = SmolyakBasis(unit_box(d), [level] * d)

    np.testing.assert_array_equal(anisotropic.multi_indices, isotropic.multi_indices)
    np.testing.assert_array_equal(anisotropic.nodes(), isotropic.nodes())
    assert anisotropic.sizes == isotropic.sizes


def test_anisotropic_drops_indices():
    basis = SmolyakBasis(unit_box(2), [1, 2])
    degrees = {tuple(row) for row in basis.multi_indices}

    # Isotropic level 2 (13 points) less the rule i = (3, 1), whose 2 new points are
    # at -+1/sqrt(2) in state 0.
    assert basis.n_params == 11
    assert (3, 0) not in degrees
    assert (0, 3) in degrees
    assert basis.sizes == [3, 5]


def test_nodes_in_box_and_distinct():
    basis = SmolyakBasis(BOUNDS_4D, 3)
    nodes = basis.nodes()

    assert np.all(nodes >= BOUNDS_4D[:, 0])
    assert np.all(nodes <= BOUNDS_4D[:, 1])
    assert len(rounded_set(nodes)) == basis.n_params
    np.testing.assert_allclose(basis.nodes_1d(0), BOUNDS_4D[0, 0] + (npcheb.chebpts2(9) + 1) / 2,
                               rtol=0, atol=1e-15)


# Basis matrix and derivatives

@pytest.mark.parametrize("derivative", [None, 0, 1, 2])
def test_matrix_matches_tensor_columns(derivative):
    bounds = np.array([[2.0, 5.0], [-0.3, 0.2], [0.0, 1.0]])
    basis = SmolyakBasis(bounds, [2, 1, 3])
    tensor = ChebyshevBasis(bounds, [n - 1 for n in basis.sizes])
    points = uniform_points(bounds, 50) * 1.02
    columns = np.ravel_multi_index(basis.multi_indices.T, basis.sizes)

    expected = tensor.matrix(points, derivative=derivative)[:, columns]
    np.testing.assert_allclose(basis.matrix(points, derivative=derivative), expected,
                               rtol=1e-12, atol=1e-12)


def test_derivative_matches_numpy():
    basis = SmolyakBasis(BOUNDS_4D, 2)
    theta = rng.standard_normal(basis.n_params)
    points = uniform_points(BOUNDS_4D, 30)
    xi = to_unit(BOUNDS_4D, points)

    for dim in range(4):
        expected = np.zeros(points.shape[0])
        for coefficient, degrees in zip(theta, basis.multi_indices):
            factors = [npcheb.chebval(xi[:, j], np.eye(n + 1)[n]) for j, n in enumerate(degrees)]
            factors[dim] = npcheb.chebval(xi[:, dim], npcheb.chebder(np.eye(degrees[dim] + 1)[degrees[dim]]))
            expected += coefficient * np.prod(factors, axis=0)
        expected *= 2 / (BOUNDS_4D[dim, 1] - BOUNDS_4D[dim, 0])
        np.testing.assert_allclose(basis.matrix(points, derivative=dim) @ theta, expected,
                                   rtol=1e-10, atol=1e-10)


def test_evaluate_in_blocks(monkeypatch):
    basis = SmolyakBasis(BOUNDS_4D, [3, 1, 2, 2])
    theta = rng.standard_normal(basis.n_params)
    points = uniform_points(BOUNDS_4D, 97)
    expected = basis.matrix(points) @ theta

    np.testing.assert_allclose(basis.evaluate(theta, points), expected, rtol=1e-13, atol=1e-13)
    monkeypatch.setattr(smolyak, "EVALUATE_BLOCK_ENTRIES", 10 * basis.n_params)
    np.testing.assert_allclose(basis.evaluate(theta, points), expected, rtol=1e-13, atol=1e-13)
    assert basis.evaluate(theta, np.zeros((0, 4))).shape == (0,)


def test_torch_basis_matches():
    torch = pytest.importorskip("torch")
    from solvers.autodiff import TorchBasis

    basis = SmolyakBasis(BOUNDS_4D, [2, 1, 3, 0])
    theta = rng.standard_normal(basis.n_params)
    points = uniform_points(BOUNDS_4D, 40)
    values = TorchBasis(basis).evaluate(torch.as_tensor(theta), torch.as_tensor(points))
    np.testing.assert_allclose(values.numpy(), basis.evaluate(theta, points), rtol=1e-12, atol=1e-12)


# Interpolation

@pytest.mark.parametrize("levels", [[1, 1, 1], [2, 2, 2], [3, 3, 3, 3], [2, 1, 3], [0, 2, 2]])
def test_fit_matches_dense_solve(levels):
    bounds = BOUNDS_4D[:len(levels)]
    basis = SmolyakBasis(bounds, levels)
    node_matrix = basis.matrix(basis.nodes())
    values = rng.standard_normal((basis.n_params, 2))

    inverse = basis.interpolation_matrix()
    np.testing.assert_allclose((inverse @ node_matrix), np.eye(basis.n_params), atol=1e-12)
    np.testing.assert_allclose(basis.fit(values), np.linalg.solve(node_matrix, values), atol=1e-11)
    np.testing.assert_allclose(basis.fit(values[:, 0]), np.linalg.solve(node_matrix, values[:, 0]),
                               atol=1e-11)


@pytest.mark.parametrize("d, level", [(2, 3), (4, 3), (2, 4)])
def test_condition_number_small(d, level):
    basis = SmolyakBasis(BOUNDS_4D[:d], level)
    condition = np.linalg.cond(basis.matrix(basis.nodes()))
    print(f"\nd = {d}, level {level}, K = {basis.n_params}: condition number {condition:.2f}")
    assert condition < 100


def random_polynomial(d: int, degree: int):
    """Return a random polynomial of total degree `degree` on [-1, 1]^d in monomials, as a callable."""
    terms = [n for n in itertools.product(range(degree + 1), repeat=d) if sum(n) <= degree]
    coefficients = rng.standard_normal(len(terms))

    def f(xi: np.ndarray) -> np.ndarray:
        return sum(c * np.prod(xi ** np.array(n), axis=1) for c, n in zip(coefficients, terms))

    return f


def interpolation_error(basis: SmolyakBasis, f, points: np.ndarray) -> float:
    """Return max |interpolant - f| at points, f given on [-1, 1]^d."""
    theta = basis.fit(f(to_unit(basis.bounds, basis.nodes())))
    return float(np.max(np.abs(basis.evaluate(theta, points) - f(to_unit(basis.bounds, points)))))


@pytest.mark.parametrize("d, level", [(1, 3), (3, 1), (3, 2), (4, 3), (5, 2), (20, 1)])
def test_total_degree_reproduced(d, level):
    bounds = np.column_stack([-np.arange(d) - 1.0, np.arange(d) + 2.0])
    basis = SmolyakBasis(bounds, level)
    points = uniform_points(bounds, 200)

    assert interpolation_error(basis, random_polynomial(d, level), points) < 1e-12


def test_extra_terms_reproduced():
    points = uniform_points(BOUNDS_4D, 200)
    quadratic = lambda xi: 3 * xi[:, 0] ** 2 - xi[:, 3] ** 2 + 0.5
    quartic_pairs = lambda xi: xi[:, 0] ** 2 * xi[:, 1] ** 2 + xi[:, 2] ** 4 - xi[:, 3] ** 3

    assert interpolation_error(SmolyakBasis(BOUNDS_4D, 1), quadratic, points) < 1e-12
    assert interpolation_error(SmolyakBasis(BOUNDS_4D, 2), quartic_pairs, points) < 1e-12
    # x_3^3 x_0 has increment levels 2 + 1 = 3, so level 3 reproduces it and level 2 does not.
    assert interpolation_error(SmolyakBasis(BOUNDS_4D, 3), lambda xi: xi[:, 3] ** 3 * xi[:, 0], points) < 1e-12
    assert interpolation_error(SmolyakBasis(BOUNDS_4D, 2), lambda xi: xi[:, 3] ** 3 * xi[:, 0], points) > 0.1


def test_terms_outside_span_not_reproduced():
    points = uniform_points(BOUNDS_4D, 200)
    pair = lambda xi: xi[:, 0] * xi[:, 1]
    triple = lambda xi: xi[:, 0] * xi[:, 1] * xi[:, 2]

    assert interpolation_error(SmolyakBasis(BOUNDS_4D, 1), pair, points) > 0.1
    assert interpolation_error(SmolyakBasis(BOUNDS_4D, 2), triple, points) > 0.1
    assert interpolation_error(SmolyakBasis(BOUNDS_4D, [2, 2, 3, 2]), triple, points) < 1e-12


def test_hundred_states_level_two():
    d = 100
    bounds = np.column_stack([np.zeros(d), np.linspace(1.0, 2.0, d)])
    basis = SmolyakBasis(bounds, 2)
    f = random_polynomial(3, 2)
    restricted = lambda xi: f(xi[:, [0, 50, 99]]) + xi[:, 7] * xi[:, 8] - xi[:, 30] ** 2

    assert basis.n_params == 20_201
    assert interpolation_error(basis, restricted, uniform_points(bounds, 100)) < 1e-12


def test_accuracy_improves_with_level():
    points = uniform_points(BOUNDS_4D, 2000)
    f = lambda xi: np.exp(0.25 * xi.sum(axis=1))
    errors = [interpolation_error(SmolyakBasis(BOUNDS_4D, level), f, points) for level in (1, 2, 3)]
    print(f"\nexp(sum xi / 4) in d = 4, max error at levels 1, 2, 3: "
          f"{errors[0]:.2e}, {errors[1]:.2e}, {errors[2]:.2e}")

    assert errors[1] < errors[0] / 5
    assert errors[2] < errors[1] / 5
    assert errors[2] < errors[0] / 100


# Oversampling, validation and records

def test_oversampled_nodes_raise_level():
    basis = SmolyakBasis(BOUNDS_4D, 2)
    nodes = basis.nodes(oversampling=2.0)

    assert nodes.shape == (smolyak_size(4, 3), 4)
    assert rounded_set(basis.nodes()) <= rounded_set(nodes)
    assert np.linalg.matrix_rank(basis.matrix(nodes)) == basis.n_params
    assert basis.nodes(oversampling=4.0).shape[0] == smolyak_size(4, 4)


@pytest.mark.parametrize("level, match", [(-1, "integer >= 0"), (1.5, "integer >= 0"),
                                          (True, "integer >= 0"), (None, "integer >= 0"),
                                          (float("nan"), "integer >= 0"), ("2", "integer >= 0"),
                                          ([1, 2], "one level per state"),
                                          ([1, 2, 3, -2], "state 3")])
def test_invalid_level_rejected(level, match):
    with pytest.raises(ValueError, match=match):
        SmolyakBasis(BOUNDS_4D, level)


def test_invalid_use_rejected():
    basis = SmolyakBasis(BOUNDS_4D, 2)
    with pytest.raises(ValueError, match="no tensor grid"):
        basis.grid_counts()
    with pytest.raises(ValueError, match="oversampling"):
        basis.nodes(oversampling=0.5)
    with pytest.raises(ValueError, match=r"shape \(K,\) or \(K, q\)"):
        basis.fit(np.zeros(basis.n_params + 1))
    with pytest.raises(ValueError, match="increasing"):
        SmolyakBasis(np.array([[1.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="d >= 1"):
        smolyak_size(0, 1)


def test_describe_is_json():
    record = json.loads(json.dumps(SmolyakBasis(BOUNDS_4D, np.array([1, 2, 3, 1])).describe()))

    assert record["kind"] == "chebyshev"
    assert record["product"] == "smolyak"
    assert record["level"] == [1, 2, 3, 1]
    assert record["n_params"] == smolyak_size(4, [1, 2, 3, 1])
    assert SmolyakBasis(BOUNDS_4D, np.int64(2)).describe()["level"] == 2


# Speed (printed, not asserted)

@pytest.mark.parametrize("level", [2, 3])
def test_matrix_speed_twenty_states(level):
    d = 20
    bounds = unit_box(d)
    points = uniform_points(bounds, 1000)
    start = time.perf_counter()
    basis = SmolyakBasis(bounds, level)
    built = time.perf_counter()
    cpu = time.process_time()
    values = basis.matrix(points)
    cpu = time.process_time() - cpu
    done = time.perf_counter()

    assert values.shape == (1000, smolyak_size(d, level))
    print(f"\nd = 20, level {level}, K = {basis.n_params}: grid {built - start:.3f} s, "
          f"matrix at 1000 points {done - built:.3f} s wall, {cpu:.3f} s CPU")
