import numpy as np
import pytest

from solvers.quadrature import gauss_hermite


@pytest.mark.parametrize("n", [2, 5, 10, 20])
def test_weights_sum_to_one(n):
    _, weights = gauss_hermite(n)
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)


def test_normal_moments_exact():
    nodes, weights = gauss_hermite(5)
    assert weights @ nodes == pytest.approx(0.0, abs=1e-14)
    assert weights @ nodes ** 2 == pytest.approx(1.0, abs=1e-14)
    assert weights @ nodes ** 4 == pytest.approx(3.0, abs=1e-13)
    assert weights @ nodes ** 8 == pytest.approx(105.0, rel=1e-13)


def test_lognormal_mean():
    # E[exp(s eps)] = exp(s^2 / 2) for eps ~ N(0, 1).
    nodes, weights = gauss_hermite(10)
    s = 0.3
    assert weights @ np.exp(s * nodes) == pytest.approx(np.exp(s ** 2 / 2), rel=1e-14)


def test_invalid_count_rejected():
    with pytest.raises(ValueError, match="1 <= n <= 200"):
        gauss_hermite(0)
