import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from solvers.markov import (
    check_transition,
    discretize_ar1,
    rouwenhorst,
    stationary_distribution,
    tauchen,
    unit_mean_levels,
)


def chain_moments(states, transition):
    """Return the stationary mean, variance and first-order autocorrelation of a chain."""
    stationary = stationary_distribution(transition)
    mean = stationary @ states
    deviation = states - mean
    variance = stationary @ deviation ** 2
    autocovariance = (stationary * deviation) @ (transition @ deviation)
    return mean, variance, autocovariance / variance


@pytest.mark.parametrize("n", [2, 5, 11, 25])
@pytest.mark.parametrize("rho", [-0.5, 0.0, 0.5, 0.9, 0.99])
def test_rouwenhorst_moments_exact(n, rho):
    sigma_eps = 0.1
    states, transition = rouwenhorst(n, rho, sigma_eps)
    mean, variance, autocorrelation = chain_moments(states, transition)

    assert mean == pytest.approx(0.0, abs=1e-13)
    assert variance == pytest.approx(sigma_eps ** 2 / (1 - rho ** 2), rel=1e-12)
    assert autocorrelation == pytest.approx(rho, abs=1e-12)


def test_rouwenhorst_conditional_mean_is_linear():
    rho = 0.9
    states, transition = rouwenhorst(7, rho, 0.2, mean=1.5)
    conditional_mean = transition @ states
    assert np.allclose(conditional_mean, 1.5 * (1 - rho) + rho * states, atol=1e-13)


def test_rouwenhorst_grid_and_mean_shift():
    sigma_eps, rho, n = 0.1, 0.9, 5
    states, _ = rouwenhorst(n, rho, sigma_eps, mean=2.0)
    half_width = math.sqrt(n - 1) * sigma_eps / math.sqrt(1 - rho ** 2)
    assert states[0] == pytest.approx(2.0 - half_width, rel=1e-14)
    assert states[-1] == pytest.approx(2.0 + half_width, rel=1e-14)
    assert np.allclose(np.diff(states), 2 * half_width / (n - 1), rtol=1e-12)


def test_rouwenhorst_stationary_is_binomial():
    n = 9
    _, transition = rouwenhorst(n, 0.7, 0.1)
    expected = binom.pmf(np.arange(n), n - 1, 0.5)
    assert np.allclose(stationary_distribution(transition), expected, atol=1e-14)


@pytest.mark.parametrize("method", ["rouwenhorst", "tauchen"])
@pytest.mark.parametrize("n", [2, 5, 51])
def test_transition_rows_sum_to_one(method, n):
    _, transition = discretize_ar1(method, n, 0.9, 0.1)
    assert np.abs(transition.sum(axis=1) - 1).max() < 1e-14
    assert transition.min() >= 0


def test_tauchen_approximates_moments():
    rho, sigma_eps = 0.9, 0.1
    states, transition = tauchen(25, rho, sigma_eps, m=3)
    mean, variance, autocorrelation = chain_moments(states, transition)

    # Measured: variance 1.3% above the AR(1)'s, autocorrelation 0.8988.
    assert mean == pytest.approx(0.0, abs=1e-13)
    assert variance == pytest.approx(sigma_eps ** 2 / (1 - rho ** 2), rel=0.02)
    assert autocorrelation == pytest.approx(rho, abs=0.005)


def test_tauchen_grid_half_width():
    rho, sigma_eps, m = 0.5, 0.2, 2.5
    states, _ = tauchen(7, rho, sigma_eps, m=m, mean=-1.0)
    half_width = m * sigma_eps / math.sqrt(1 - rho ** 2)
    assert states[0] == pytest.approx(-1.0 - half_width, rel=1e-14)
    assert states[-1] == pytest.approx(-1.0 + half_width, rel=1e-14)


def test_tauchen_entries_are_normal_interval_probabilities():
    rho, sigma_eps = 0.6, 0.1
    states, transition = tauchen(5, rho, sigma_eps)
    step = states[1] - states[0]

    upper = (states[2] + step / 2 - rho * states[1]) / sigma_eps
    lower = (states[2] - step / 2 - rho * states[1]) / sigma_eps
    assert transition[1, 2] == pytest.approx(norm.cdf(upper) - norm.cdf(lower), rel=1e-12)
    lower_tail = (states[0] + step / 2 - rho * states[1]) / sigma_eps
    assert transition[1, 0] == pytest.approx(norm.cdf(lower_tail), rel=1e-12)


@pytest.mark.parametrize("method", ["rouwenhorst", "tauchen"])
def test_stationary_distribution_invariant(method):
    _, transition = discretize_ar1(method, 7, 0.95, 0.05)
    stationary = stationary_distribution(transition)
    assert np.abs(stationary @ transition - stationary).max() < 1e-14
    assert stationary.sum() == pytest.approx(1.0, abs=1e-14)
    assert stationary.min() >= 0


def test_stationary_distribution_of_explicit_chain():
    transition = np.array([[0.9, 0.1], [0.3, 0.7]])
    assert np.allclose(stationary_distribution(transition), [0.75, 0.25], atol=1e-15)


def test_stationary_distribution_not_unique():
    with pytest.raises(ValueError, match="more than one stationary distribution"):
        stationary_distribution(np.eye(2))


def test_unit_mean_levels():
    states, transition = rouwenhorst(5, 0.9, 0.1)
    levels = unit_mean_levels(states, transition)
    assert stationary_distribution(transition) @ levels == pytest.approx(1.0, abs=1e-14)
    assert np.allclose(levels / levels[0], np.exp(states - states[0]), rtol=1e-13)


def test_check_transition_row_sum_message():
    transition = [[0.5, 0.5], [0.25, 0.5]]
    with pytest.raises(ValueError, match=r"row 1 sums to 0\.75; each row must sum to 1 within 1e-10"):
        check_transition(transition)


def test_check_transition_tolerance():
    check_transition([[0.5, 0.5 + 5e-11], [0.2, 0.8]])
    with pytest.raises(ValueError, match="row 0 sums to"):
        check_transition([[0.5, 0.5 + 5e-10], [0.2, 0.8]])


def test_check_transition_negative_entry_message():
    with pytest.raises(ValueError, match=r"row 1 has entry -0\.1 in column 0"):
        check_transition([[1.0, 0.0], [-0.1, 1.1]])


def test_check_transition_nan_entry_message():
    with pytest.raises(ValueError, match="row 0 has entry nan in column 1"):
        check_transition([[1.0, np.nan], [0.5, 0.5]])


@pytest.mark.parametrize("matrix, shape", [
    ([[0.5, 0.5]], r"\(1, 2\)"),
    ([0.5, 0.5], r"\(2,\)"),
    (np.empty((0, 0)), r"\(0, 0\)"),
])
def test_check_transition_shape_message(matrix, shape):
    with pytest.raises(ValueError, match=f"square matrix; got shape {shape}"):
        check_transition(matrix)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 1}, r"n = 1 is out of range; valid range is an integer 2 <= n <= 1000"),
    ({"n": 2.0}, r"n = 2\.0 is out of range"),
    ({"rho": 1.0}, r"rho = 1\.0 is out of range; valid range is -1 < rho < 1"),
    ({"sigma_eps": 0.0}, r"sigma_eps = 0\.0 is out of range; valid range is 0 < sigma_eps"),
])
@pytest.mark.parametrize("method", ["rouwenhorst", "tauchen"])
def test_ar1_parameter_messages(method, kwargs, message):
    arguments = {"n": 5, "rho": 0.9, "sigma_eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        discretize_ar1(method, **arguments)


def test_tauchen_m_message():
    with pytest.raises(ValueError, match=r"m = 0 is out of range; valid range is 0 < m <= 10"):
        tauchen(5, 0.9, 0.1, m=0)


def test_unknown_method_message():
    message = "'tauchen-hussey' is not known; valid choices: rouwenhorst, tauchen"
    with pytest.raises(ValueError, match=message):
        discretize_ar1("tauchen-hussey", 5, 0.9, 0.1)
