import numpy as np
import pytest

from solvers.evaluate import EVALUATION_QUADRATURE_NODES, box_points, evaluate
from solvers.growth import GrowthModel
from solvers.quadrature import gauss_hermite


def test_steady_state_solves_euler_equation():
    model = GrowthModel()
    gross_return = 1 - model.delta + model.alpha * model.kss ** (model.alpha - 1)
    assert model.beta * gross_return == pytest.approx(1.0, abs=1e-14)


def test_steady_state_known_value():
    # kss = (alpha / (1 / beta - 1 + delta))^(1 / (1 - alpha)) at the default calibration.
    assert GrowthModel().kss == pytest.approx(37.98925, rel=1e-6)


def test_closed_form_steady_state():
    model = GrowthModel(gamma=1.0, delta=1.0)
    assert model.kss == pytest.approx((model.alpha * model.beta) ** (1 / (1 - model.alpha)), rel=1e-14)
    assert model.has_closed_form


def test_box_bounds():
    model = GrowthModel()
    (k_low, k_high), (z_low, z_high) = model.bounds
    assert k_low == pytest.approx(0.8 * model.kss)
    assert k_high == pytest.approx(1.2 * model.kss)
    assert z_high == pytest.approx(3 * 0.01 / np.sqrt(1 - 0.95 ** 2))
    assert z_low == pytest.approx(-z_high)


def test_approximation_bounds_keep_capital_positive():
    model = GrowthModel(k_box=(0.1, 5.0))
    wide = model.approximation_bounds(1.0)
    assert wide[0, 0] == pytest.approx(0.05 * model.kss)
    assert wide[1, 1] > model.bounds[1, 1]


def closed_form_policy(model):
    def policy(k, logz):
        return model.cash_on_hand(k, logz) - model.closed_form_capital(k, logz)
    return policy


def test_closed_form_policy_has_zero_euler_error():
    model = GrowthModel(gamma=1.0, delta=1.0)
    k, logz = box_points(model)
    eps, weights = gauss_hermite(EVALUATION_QUADRATURE_NODES)
    errors = model.euler_error(closed_form_policy(model), k, logz, eps, weights)
    assert np.max(np.abs(errors)) < 1e-13


def test_euler_error_works_on_torch_tensors():
    torch = pytest.importorskip("torch")
    model = GrowthModel(gamma=1.0, delta=1.0)
    k, logz = box_points(model)
    eps, weights = gauss_hermite(10)
    errors = model.euler_error(closed_form_policy(model), torch.from_numpy(k[:50]),
                               torch.from_numpy(logz[:50]), torch.from_numpy(eps), torch.from_numpy(weights))
    assert float(errors.abs().max()) < 1e-13


def test_evaluator_on_exact_policy():
    model = GrowthModel(gamma=1.0, delta=1.0)
    accuracy = evaluate(model, closed_form_policy(model))
    assert accuracy.finite
    assert accuracy.box_max_log10 < -13
    assert accuracy.path_max_log10 < -13
    assert accuracy.closed_form_max_rel_distance < 1e-14


def test_evaluator_flags_nan_policy():
    model = GrowthModel()
    accuracy = evaluate(model, lambda k, logz: np.full(np.shape(k), np.nan))
    assert not accuracy.finite


def test_evaluator_exposes_drifting_policy():
    # Consuming a fixed 90% of the steady-state level lets capital pile up far above
    # the box: the path errors and the share outside the box show it.
    model = GrowthModel()
    accuracy = evaluate(model, lambda k, logz: 0.9 * model.css * np.ones(np.shape(k)))
    assert accuracy.path_share_outside_box > 0.5


def test_box_points_fixed_and_inside():
    model = GrowthModel()
    k1, z1 = box_points(model)
    k2, z2 = box_points(model)
    assert k1.shape == (10_000,)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(z1, z2)
    assert np.all((k1 >= model.bounds[0, 0]) & (k1 <= model.bounds[0, 1]))
    assert np.all((z1 >= model.bounds[1, 0]) & (z1 <= model.bounds[1, 1]))


def test_simulation_is_seeded():
    model = GrowthModel()
    policy = lambda k, logz: model.initial_consumption(k, logz)
    a = model.simulate(policy, 200, 10, seed=3)
    b = model.simulate(policy, 200, 10, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (200,)
