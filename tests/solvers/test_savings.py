import numpy as np
import pytest

from solvers.savings import (
    SavingsModel,
    accuracy,
    box_points,
    complementarity_error,
    score_points,
)


@pytest.fixture(scope="module")
def model():
    return SavingsModel.from_ar1()


@pytest.fixture(scope="module")
def reference(model):
    """EGM policy at the default calibration with the default grid (about 0.5 s)."""
    return model.egm_reference()


def interior_sample(model, solution, size, seed, a_high=None):
    """Return off-grid states drawn uniformly above each state's kink and lower end."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, model.n_states, size)
    low = np.maximum(model.bounds[i, 0], solution.a_star[i])
    high = model.a_max if a_high is None else np.minimum(a_high, model.a_max)
    a = low + rng.random(size) * (high - low)
    return a, i


def test_default_calibration(model):
    assert (model.R, model.beta, model.gamma, model.b, model.a_max) == (1.01, 0.96, 1.5, 0.0, 20.0)
    assert model.n_states == 5
    assert model.mean_income == pytest.approx(1.0, abs=1e-14)
    assert np.all(np.diff(model.y) > 0)


def test_box_lower_ends(model):
    shifted = SavingsModel.from_ar1(b=0.5)
    assert np.array_equal(model.bounds[:, 0], model.y)
    assert np.allclose(shifted.bounds[:, 0], shifted.y - 1.01 * 0.5, rtol=0, atol=1e-15)
    assert np.all(shifted.bounds[:, 1] == 20.0)


def test_borrowing_bound():
    model = SavingsModel.from_ar1(b=0.3)
    assert np.array_equal(model.borrowing_bound(np.array([1.0, 2.0])), np.array([1.3, 2.3]))


def test_euler_error_matches_formula(model):
    def policy(a, i):
        return 0.5 * (a + model.b) + 0.01 * i

    a, i = 2.0, 1
    c = policy(a, i)
    expectation = sum(model.P[i, j] * policy(model.R * (a - c) + model.y[j], j) ** -model.gamma
                      for j in range(model.n_states))
    expected = model.beta * model.R * expectation / c ** -model.gamma - 1

    error = model.euler_error(policy, np.array([a]), np.array([i]))
    assert error[0] == pytest.approx(expected, rel=1e-13)


def test_euler_error_rejects_float_states(model):
    with pytest.raises(ValueError, match="income-state indices must be integers; got dtype float64"):
        model.euler_error(lambda a, i: a, np.array([1.0]), np.array([0.0]))


def test_euler_error_rejects_state_out_of_range(model):
    with pytest.raises(ValueError, match=r"valid range is 0 <= i <= 4"):
        model.euler_error(lambda a, i: a, np.array([1.0]), np.array([5]))


def test_constraint_status(model):
    a = np.ones(6)
    c = np.array([1.0, 1.0 - 5e-11, 1.0 - 1e-6, 1.0 + 1e-9, np.nan, 0.0])
    status = model.constraint_status(a, c)
    assert status.binding.tolist() == [True, True, False, False, False, False]
    assert status.interior.tolist() == [False, False, True, False, False, False]
    assert status.infeasible.tolist() == [False, False, False, True, False, False]
    assert status.invalid.tolist() == [False, False, False, False, True, True]


def test_complementarity_error():
    assert complementarity_error(np.array([-0.3, 0.0, 0.2])).tolist() == [0.0, 0.0, 0.2]


def test_beta_r_at_least_one_rejected():
    with pytest.raises(ValueError, match=r"beta\*R = 1\.0 is out of range; valid range is beta\*R < 1"):
        SavingsModel.from_ar1(R=1.25, beta=0.8)
    with pytest.raises(ValueError, match=r"beta\*R = 1\.0\d* is out of range"):
        SavingsModel.from_ar1(R=1.05, beta=0.96)


def test_borrowing_limit_above_natural_limit_rejected(model):
    natural = model.y.min() / (model.R - 1)
    message = r"b = .* is out of range; valid range is 0 <= b < min\(y\) / \(R - 1\)"
    with pytest.raises(ValueError, match=message):
        SavingsModel.from_ar1(b=natural)
    with pytest.raises(ValueError, match=r"b = -0\.1 is out of range; valid range is 0 <= b"):
        SavingsModel.from_ar1(b=-0.1)


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": 1.0}, r"beta = 1\.0 is out of range; valid range is 0 < beta < 1"),
    ({"gamma": 0.0}, r"gamma = 0\.0 is out of range; valid range is 0 < gamma <= 20"),
    ({"R": -1.0}, r"R = -1\.0 is out of range; valid range is 0 < R"),
    ({"a_max_multiple": 1.5}, r"a_max = 1\.5 is out of range; valid range is a_max > -R b \+ max\(y\)"),
])
def test_parameter_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SavingsModel.from_ar1(**kwargs)


def test_explicit_chain_checked():
    with pytest.raises(ValueError, match=r"row 1 sums to 0\.75"):
        SavingsModel.from_chain([0.5, 1.5], [[0.5, 0.5], [0.25, 0.5]])
    with pytest.raises(ValueError, match=r"y must have shape \(2,\)"):
        SavingsModel.from_chain([0.5, 1.0, 1.5], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="must be positive finite numbers"):
        SavingsModel.from_chain([0.0, 1.5], [[0.5, 0.5], [0.5, 0.5]])


def test_explicit_chain_levels_kept():
    model = SavingsModel.from_chain([0.5, 2.5], [[0.9, 0.1], [0.3, 0.7]])
    assert model.y.tolist() == [0.5, 2.5]
    assert model.mean_income == pytest.approx(0.75 * 0.5 + 0.25 * 2.5)
    assert model.a_max == pytest.approx(20 * model.mean_income)


def test_tauchen_income():
    model = SavingsModel.from_ar1(method="tauchen", n_states=7)
    assert model.n_states == 7
    assert model.mean_income == pytest.approx(1.0, abs=1e-14)


def test_egm_euler_error_off_grid(model, reference):
    a, i = interior_sample(model, reference, 100_000, seed=1)
    errors = np.abs(model.euler_error(reference, a, i))
    # Measured: max 1.3e-8 and mean 6.9e-10 (at most 1.4e-8 with seeds 2 to 4).
    assert errors.max() < 1e-7


def test_egm_euler_error_near_kinks(model, reference):
    a, i = interior_sample(model, reference, 100_000, seed=2, a_high=3.0)
    errors = np.abs(model.euler_error(reference, a, i))
    # Measured: max 1.5e-8 and mean 4.6e-10 on cash on hand below 3.
    assert errors.max() < 1e-7


def test_egm_euler_holds_at_kink(model, reference):
    states = np.arange(model.n_states)
    errors = model.euler_error(reference, reference.a_star, states)
    assert np.abs(errors).max() < 1e-10


def test_egm_consumes_bound_below_kink(model, reference):
    for state in range(model.n_states):
        low = model.bounds[state, 0]
        if reference.a_star[state] <= low:
            continue
        a = np.linspace(low, reference.a_star[state], 50, endpoint=False)
        c = reference(a, np.full(a.size, state))
        assert np.array_equal(c, a + model.b)


def test_egm_binding_points_satisfy_inequality(model, reference):
    a = np.concatenate([np.linspace(model.bounds[s, 0], reference.a_star[s], 20, endpoint=False)
                        for s in range(3)])
    i = np.repeat(np.arange(3), 20)
    errors = model.euler_error(reference, a, i)
    assert errors.max() < 0


def test_egm_consumes_bound_below_kink_with_borrowing():
    model = SavingsModel.from_ar1(b=0.5)
    solution = model.egm_reference(n_grid=2_000)
    reachable = np.flatnonzero(solution.a_star > model.bounds[:, 0])
    assert reachable.size > 0
    for state in reachable:
        a = np.linspace(model.bounds[state, 0], solution.a_star[state], 50, endpoint=False)
        c = solution(a, np.full(a.size, state))
        assert np.array_equal(c, a + 0.5)


def test_kink_increases_with_income(reference, model):
    # Income is persistent (rho = 0.9), so a consumer with higher income now expects
    # higher income later, saves less and is constrained up to more cash on hand.
    # Measured at the default calibration: a_star = 0.6535, 0.8030, 0.9851, 1.1838, 1.3651.
    assert np.all(np.diff(reference.a_star) > 0)
    # In assets carried in, a_star - y, the threshold falls with income instead.
    assert np.all(np.diff(reference.a_star - model.y) < 0)


def test_kink_reachable_in_low_income_states(reference, model):
    # The constraint binds on part of the box in the three lowest income states only.
    assert (reference.a_star > model.bounds[:, 0]).tolist() == [True, True, True, False, False]


def test_kink_same_for_iid_income():
    model = SavingsModel.from_ar1(rho=0.0)
    solution = model.egm_reference(n_grid=2_000)
    assert np.ptp(solution.a_star) < 1e-12


def test_egm_converges_from_two_starts(model, reference):
    def save_half(a, i):
        return 0.5 * (a + model.b)

    other = model.egm_reference(initial=save_half)
    a, i = interior_sample(model, reference, 20_000, seed=3)
    gap = np.abs(other(a, i) - reference(a, i)) / reference(a, i)
    assert gap.max() < 1e-8
    assert np.allclose(other.a_star, reference.a_star, rtol=1e-10, atol=0)


def test_egm_rejects_bad_grid(model):
    with pytest.raises(ValueError, match="n_grid = 5 is out of range"):
        model.egm_reference(n_grid=5)


def test_egm_reports_no_convergence(model):
    with pytest.raises(RuntimeError, match="EGM did not converge"):
        model.egm_reference(n_grid=200, max_iterations=5)


def test_simulate_is_seeded(model, reference):
    a_first, i_first = model.simulate(reference, 2_000, 100, seed=7)
    a_again, i_again = model.simulate(reference, 2_000, 100, seed=7)
    a_other, i_other = model.simulate(reference, 2_000, 100, seed=8)
    assert np.array_equal(a_first, a_again)
    assert np.array_equal(i_first, i_again)
    assert not np.array_equal(i_first, i_other)


def test_simulate_income_path_same_for_every_policy(model, reference):
    _, i_reference = model.simulate(reference, 1_000, 0, seed=7)
    _, i_other = model.simulate(lambda a, i: 0.5 * (a + model.b), 1_000, 0, seed=7)
    assert np.array_equal(i_reference, i_other)
    assert i_reference[0] == 2


def test_simulate_income_frequencies(model):
    states = model.income_path(200_000, seed=11)
    frequencies = np.bincount(states, minlength=model.n_states) / states.size
    assert np.abs(frequencies - model.stationary).max() < 0.01


def test_simulated_path_stays_inside_box(model, reference):
    a, i = model.simulate(reference, 10_000, 1_000, seed=1)
    assert np.all(a >= model.bounds[i, 0])
    assert a.max() < 4.0


def test_simulate_cuts_path_at_nonpositive_consumption(model):
    def failing(a, i):
        return a - 2.0

    a, _ = model.simulate(failing, 10, 0, seed=1)
    assert np.isfinite(a[0])
    assert np.isnan(a[1:]).all()


def test_accuracy_of_reference(model, reference):
    result = accuracy(model, reference)
    assert result.finite
    for part in (result.box, result.path):
        assert part.n_points == 10_000
        assert part.n_interior + part.n_binding == part.n_points
        assert part.n_infeasible == 0
        assert part.n_invalid == 0
        assert part.n_next_outside_box == 0
        assert part.interior_max_log10 < -7
        assert part.binding_max == 0.0
        assert part.max_infeasibility is None
    # Measured: 5,641 of the 10,000 path points are at the borrowing limit.
    assert result.path.n_binding > 4_000


def test_accuracy_counts_infeasible(model, reference):
    def overspend(a, i):
        return reference(a, i) + 0.01

    a, i = box_points(model)
    scores = score_points(model, overspend, a, i)
    expected = np.count_nonzero(overspend(a, i) > a + model.b + 1e-12)
    assert expected > 0
    assert scores.n_infeasible == expected
    assert scores.n_binding == 0
    assert scores.n_interior == a.size - expected
    assert scores.n_invalid == 0
    assert scores.max_infeasibility == pytest.approx(0.01, rel=1e-6)


def test_accuracy_reports_infeasible_on_path(model, reference):
    result = accuracy(model, lambda a, i: reference(a, i) + 0.01)
    assert result.path.n_infeasible > 0
    assert result.path.n_outside_box > 0


def test_accuracy_counts_next_states_outside_box(model):
    def save_most(a, i):
        return 0.01 * (a + model.b)

    a, i = box_points(model)
    scores = score_points(model, save_most, a, i)
    a_next = model.R * (a - save_most(a, i))[:, None] + model.y[None, :]
    expected = np.count_nonzero((a_next > model.a_max).any(axis=1))
    assert expected > 0
    assert scores.n_next_outside_box == expected


def test_accuracy_flags_nan_policy(model):
    result = accuracy(model, lambda a, i: np.full(np.shape(a), np.nan))
    assert not result.finite
    assert result.box.n_invalid == 10_000
    assert result.box.n_infeasible == 0
    assert result.box.interior_max_log10 is None
    assert result.box.binding_max is None
    # The path is cut short after its first period.
    assert result.path.n_invalid == 10_000


def test_accuracy_flags_nan_next_consumption(model, reference):
    def broken_above(a, i):
        return np.where(a > 10.0, np.nan, reference(a, i))

    scores = score_points(model, broken_above, *box_points(model))
    assert scores.n_invalid > 0
    assert np.isnan(scores.interior_max_log10)


def test_accuracy_as_errors(model, reference):
    errors = accuracy(model, reference).as_errors()
    assert set(errors) == {"box", "path"}
    assert set(errors["box"]) >= {"interior_max_log10", "binding_max", "n_infeasible", "n_next_outside_box"}
