import itertools

import numpy as np
import pytest

from solvers.integration import (
    gauss_hermite_product,
    make_rule,
    monomial_m1,
    monomial_m2,
    monte_carlo,
)
from solvers.multicountry import MultiCountryModel

COUNTRIES = range(1, 21)


def model_cov(n: int) -> np.ndarray:
    return MultiCountryModel(countries=n).shock_cov


def unit_scale_cov(n: int) -> np.ndarray:
    # A dense, unit-scale covariance with unequal variances and correlations.
    rng = np.random.default_rng(n)
    factor = rng.standard_normal((n, n))
    return factor @ factor.T / n + np.eye(n)


def rule_covariance(eps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (weights[:, None] * eps).T @ eps


def normal_moment(power: int) -> float:
    # E[z^p] for z ~ N(0, 1): 0 for odd p, (p - 1)!! for even p.
    if power % 2:
        return 0.0
    return float(np.prod(np.arange(power - 1, 0, -2))) if power else 1.0


@pytest.mark.parametrize("rule", [monomial_m1, monomial_m2])
@pytest.mark.parametrize("n", COUNTRIES)
def test_monomial_weights_sum_to_one(rule, n):
    _, weights = rule(model_cov(n))
    assert abs(weights.sum() - 1.0) <= 1e-14


@pytest.mark.parametrize("rule", [monomial_m1, monomial_m2])
@pytest.mark.parametrize("n", COUNTRIES)
def test_monomial_mean_is_zero(rule, n):
    cov = model_cov(n)
    eps, weights = rule(cov)
    scale = np.sqrt(np.max(np.diag(cov)))
    assert np.max(np.abs(weights @ eps)) <= 1e-14 * scale


@pytest.mark.parametrize("rule", [monomial_m1, monomial_m2])
@pytest.mark.parametrize("make_cov", [model_cov, unit_scale_cov])
@pytest.mark.parametrize("n", COUNTRIES)
def test_monomial_reproduces_covariance(rule, make_cov, n):
    cov = make_cov(n)
    eps, weights = rule(cov)
    error = np.max(np.abs(rule_covariance(eps, weights) - cov))
    assert error <= 1e-14 * np.max(np.abs(cov))


@pytest.mark.parametrize("n", COUNTRIES)
def test_monomial_node_counts(n):
    eps_m1, _ = monomial_m1(model_cov(n))
    eps_m2, _ = monomial_m2(model_cov(n))
    assert eps_m1.shape == (2 * n, n)
    assert eps_m2.shape == (2 * n * n + 1, n)


@pytest.mark.parametrize("n", range(1, 6))
def test_m2_exact_to_degree_five(n):
    z, weights = monomial_m2(np.eye(n))
    for powers in itertools.product(range(6), repeat=n):
        if sum(powers) > 5:
            continue
        expected = np.prod([normal_moment(p) for p in powers])
        computed = weights @ np.prod(z ** np.array(powers), axis=1)
        assert computed == pytest.approx(expected, abs=1e-13), powers


@pytest.mark.parametrize("n", COUNTRIES)
def test_m2_fourth_moments(n):
    z, weights = monomial_m2(np.eye(n))
    fourth = weights @ z ** 4
    assert np.max(np.abs(fourth - 3.0)) <= 1e-13
    if n >= 2:
        cross = (weights[:, None] * z ** 2).T @ z ** 2
        off_diagonal = cross[~np.eye(n, dtype=bool)]
        assert np.max(np.abs(off_diagonal - 1.0)) <= 1e-13


def test_m1_not_exact_for_fourth_moment():
    # M1 is a degree-3 rule: E[z^4] is N, not 3, for N != 3.
    z, weights = monomial_m1(np.eye(2))
    assert weights @ z[:, 0] ** 4 == pytest.approx(2.0, abs=1e-14)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_gauss_hermite_product_moments(n):
    cov = unit_scale_cov(n)
    eps, weights = gauss_hermite_product(cov, 5)
    assert eps.shape == (5 ** n, n)
    assert abs(weights.sum() - 1.0) <= 1e-14
    assert np.max(np.abs(weights @ eps)) <= 1e-14
    assert np.max(np.abs(rule_covariance(eps, weights) - cov)) <= 1e-14 * np.max(np.abs(cov))


def test_gauss_hermite_product_degree_nine():
    z, weights = gauss_hermite_product(np.eye(2), 5)
    assert weights @ (z[:, 0] ** 8) == pytest.approx(105.0, rel=1e-13)
    assert weights @ (z[:, 0] ** 4 * z[:, 1] ** 4) == pytest.approx(9.0, rel=1e-13)


def test_gauss_hermite_product_too_large_rejected():
    with pytest.raises(ValueError, match="above the limit"):
        gauss_hermite_product(np.eye(10), 5)


def test_monte_carlo_moments_and_seed():
    cov = unit_scale_cov(3)
    eps, weights = monte_carlo(cov, 200_000, seed=7)
    again, _ = monte_carlo(cov, 200_000, seed=7)
    assert np.array_equal(eps, again)
    assert abs(weights.sum() - 1.0) <= 1e-12
    # Sampling error of a covariance entry is about sqrt(2 / n) of its scale, 0.3% here.
    assert np.max(np.abs(rule_covariance(eps, weights) - cov)) <= 0.02 * np.max(np.abs(cov))


def test_invalid_covariance_rejected():
    with pytest.raises(ValueError, match="positive definite"):
        monomial_m1(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        monomial_m2(np.array([[1.0, 0.5], [0.0, 1.0]]))


def test_unknown_rule_rejected():
    with pytest.raises(ValueError, match="'m1'"):
        make_rule("m3", np.eye(2))
