import numpy as np
import pytest

from solvers.bases import ChebyshevBasis, MonomialBasis, total_degree_indices
from solvers.control import SolveControl, SolveDiverged
from solvers.multicountry import MultiCountryModel
from solvers.multicountry_evaluate import evaluate, scored_periods
from solvers.multicountry_solver import (
    LinearPolicy,
    Regression,
    build_policy,
    check_size,
    complete_indices,
    estimate_size,
    make_basis,
    resolve_settings,
    solve_multicountry,
)


def box_sample(model: MultiCountryModel, count: int, seed: int = 0) -> np.ndarray:
    low, high = model.bounds[:, 0], model.bounds[:, 1]
    return low + np.random.default_rng(seed).random((count, model.n_states)) * (high - low)


def constant_policy(model: MultiCountryModel):
    return lambda states: np.full((states.shape[0], model.countries), model.kss)


# --- model ---------------------------------------------------------------------------


def test_default_calibration():
    model = MultiCountryModel(countries=4)
    assert model.n_states == 8
    assert model.beta * (1 - model.delta + model.alpha * model.A) == pytest.approx(1.0, abs=1e-15)
    assert np.allclose(model.tau, 0.25)
    assert np.allclose(model.shock_cov, 1e-4 * (np.eye(4) + np.ones((4, 4))))


@pytest.mark.parametrize("model", [
    MultiCountryModel(countries=1),
    MultiCountryModel(countries=3),
    MultiCountryModel(countries=3, gamma=(0.5, 1.0, 4.0), phi=0.5),
    MultiCountryModel(countries=2, gamma=2.0, weights=(1.0, 3.0), delta=1.0),
])
def test_steady_state_residual_zero(model):
    # Deterministic part: k' = kss and a single node at eps = 0.
    states = model.steady_state()[None, :]
    zero = np.zeros((1, model.countries))
    errors = model.euler_errors(constant_policy(model), states, zero, np.ones(1))
    assert np.max(np.abs(errors)) <= 1e-14


def test_allocation_shares_risk():
    model = MultiCountryModel(countries=3, gamma=(0.5, 2.0, 5.0), weights=(1.0, 2.0, 0.5))
    total = np.array([0.05, 0.3, 2.0])
    c = model.allocate(total)
    assert np.allclose(c.sum(axis=1), total, rtol=1e-14, atol=0)
    marginal = model.tau * c ** (-model.gammas)
    assert np.allclose(marginal / marginal[:, :1], 1.0, rtol=1e-12, atol=0)


def test_allocation_infeasible_is_nan():
    model = MultiCountryModel(countries=2, gamma=(1.0, 3.0))
    c = model.allocate(np.array([-1.0, 0.0, 1.0]))
    assert np.all(np.isnan(c[:2]))
    assert np.all(np.isfinite(c[2]))


def test_default_weights_equalise_steady_state_consumption():
    model = MultiCountryModel(countries=3, gamma=(1.0, 2.0, 3.0))
    c = model.allocate(np.array([3 * model.css]))
    assert np.allclose(c, model.css, rtol=1e-13, atol=0)


def test_closed_form_n1_is_brock_mirman():
    model = MultiCountryModel(countries=1, delta=1.0)
    states = box_sample(model, 50)
    expected = model.alpha * model.beta * model.A * np.exp(states[:, 1]) * states[:, 0] ** model.alpha
    assert np.allclose(model.closed_form_capital(states)[:, 0], expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("countries", [1, 2, 3])
def test_closed_form_solves_euler_equations(countries):
    model = MultiCountryModel(countries=countries, delta=1.0)
    eps, weights = model.accurate_rule()
    errors = model.euler_errors(model.closed_form_capital, box_sample(model, 200), eps, weights)
    assert np.max(np.abs(errors)) <= 1e-12


def test_per_country_brock_mirman_not_planner_solution():
    # Pooling makes each country's investment depend on the others' productivity.
    model = MultiCountryModel(countries=2, delta=1.0)
    eps, weights = model.accurate_rule()

    def autarky(states):
        k, loga = model.split(states)
        return model.alpha * model.beta * model.output(k, loga)

    errors = model.euler_errors(autarky, box_sample(model, 200), eps, weights)
    assert np.max(np.abs(errors[:, :2])) > 1e-2


def test_simulation_is_seeded_and_stays_near_steady_state():
    model = MultiCountryModel(countries=2, delta=1.0)
    first = model.simulate(model.closed_form_capital, 300, 50, seed=3)
    second = model.simulate(model.closed_form_capital, 300, 50, seed=3)
    assert first.shape == (300, 4)
    assert np.array_equal(first, second)
    assert np.all((first[:, :2] > 0.5) & (first[:, :2] < 1.5))


def test_infeasible_path_padded_with_nan():
    model = MultiCountryModel(countries=2)
    path = model.simulate(lambda s: np.full((s.shape[0], 2), 5.0), 10, 0, seed=0)
    assert np.all(np.isnan(path[1:]))


def test_invalid_parameters_rejected():
    with pytest.raises(ValueError, match="countries must be an integer"):
        MultiCountryModel(countries=0)
    with pytest.raises(ValueError, match="gamma must be"):
        MultiCountryModel(countries=2, gamma=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="0 < delta <= 1"):
        MultiCountryModel(delta=1.5)


def test_weights_near_float_max_keep_their_ratio():
    np.testing.assert_allclose(MultiCountryModel(countries=2, weights=(1e308, 1e308)).tau, [0.5, 0.5])
    np.testing.assert_allclose(MultiCountryModel(countries=2, weights=(3e307, 1e308)).tau,
                               [0.3 / 1.3, 1 / 1.3])


def test_weights_too_far_apart_rejected():
    with pytest.raises(ValueError, match="within a factor 1e\\+06 of each other.*= 1e600.0"):
        MultiCountryModel(countries=2, weights=(1e-300, 1e300))


# --- bases and policies --------------------------------------------------------------


@pytest.mark.parametrize("n_states, degree", [(1, 4), (3, 2), (4, 3)])
def test_complete_indices_match_bases(n_states, degree):
    assert np.array_equal(complete_indices(n_states, degree), total_degree_indices(n_states, degree))


@pytest.mark.parametrize("kind, cls", [("chebyshev", ChebyshevBasis), ("monomial", MonomialBasis)])
def test_complete_matrix_matches_bases(kind, cls):
    model = MultiCountryModel(countries=2)
    settings = resolve_settings(model, {"basis": kind, "degree": 3})
    basis = make_basis(model, settings)
    reference = cls(model.bounds, [3] * 4, product="complete")
    states = box_sample(model, 40)
    fast = LinearPolicy(basis, np.zeros((basis.n_params, 2))).matrix(states)
    assert np.allclose(fast, reference.matrix(states), rtol=1e-13, atol=1e-13)


def test_complete_basis_size_at_d_20():
    model = MultiCountryModel(countries=10)
    basis = make_basis(model, resolve_settings(model, {"degree": 2}))
    assert basis.n_params == 231


def test_policy_rebuilds_from_parameters():
    model = MultiCountryModel(countries=2)
    basis = make_basis(model, resolve_settings(model, {"degree": 2}))
    theta = np.random.default_rng(0).standard_normal((basis.n_params, 2))
    policy = LinearPolicy(basis, theta)
    rebuilt = build_policy(policy.to_parameters())
    states = box_sample(model, 10)
    assert np.array_equal(rebuilt(states), policy(states))


def test_policy_in_logs_rebuilds_from_parameters():
    model = MultiCountryModel(countries=2)
    basis = make_basis(model, resolve_settings(model, {"degree": 2, "variables": "logs"}))
    theta = np.random.default_rng(0).standard_normal((basis.n_params, 2)) * 0.1
    policy = LinearPolicy(basis, theta, "logs")
    rebuilt = build_policy(policy.to_parameters())
    states = box_sample(model, 10)
    assert rebuilt.variables == "logs"
    assert np.array_equal(rebuilt(states), policy(states))


def test_logs_basis_box_is_log_of_capital_interval():
    model = MultiCountryModel(countries=2)
    basis = make_basis(model, resolve_settings(model, {"variables": "logs"}))
    expected = model.bounds.copy()
    expected[:2] = np.log(expected[:2])
    np.testing.assert_allclose(basis.bounds, expected, rtol=0, atol=1e-15)


def test_logs_policy_is_exponential_of_linear_form():
    # theta = e_0 picks the constant Chebyshev polynomial, so k' = exp(1) everywhere.
    model = MultiCountryModel(countries=1)
    basis = make_basis(model, resolve_settings(model, {"degree": 2, "variables": "logs"}))
    theta = np.zeros((basis.n_params, 1))
    theta[0] = 1.0
    values = LinearPolicy(basis, theta, "logs")(box_sample(model, 5))
    np.testing.assert_allclose(values, np.e, rtol=1e-15)


def test_unknown_variables_rejected():
    model = MultiCountryModel(countries=1)
    with pytest.raises(ValueError, match="variables must be one of 'auto', 'logs', 'levels'; got 'log'"):
        resolve_settings(model, {"variables": "log"})


@pytest.mark.parametrize("countries, expected", [(1, "logs"), (2, "levels"), (10, "levels")])
def test_auto_variables_follow_countries(countries, expected):
    model = MultiCountryModel(countries=countries)
    assert resolve_settings(model, {})["variables"] == expected
    assert resolve_settings(model, {"variables": "levels"})["variables"] == "levels"


def test_gssa_with_too_few_states_rejected():
    model = MultiCountryModel(countries=1)
    settings = {"algorithm": "gssa", "degree": 5, "periods": 2, "paths": 1, "burn_in": 0}
    with pytest.raises(ValueError, match="K = 21 coefficients per country on periods x paths = 2"):
        resolve_settings(model, settings)


def test_regression_with_two_constant_columns():
    # Few fit points can make several basis columns constant, and all but the first keep 0.
    x = np.linspace(0.0, 1.0, 6)
    matrix = np.column_stack([np.ones(6), x, np.full(6, 2.0), x ** 2])
    values = (1.0 + 3.0 * x - x ** 2)[:, None]
    theta = Regression(matrix, "svd", 1e-12).fit(values)
    assert theta.shape == (4, 1)
    assert theta[2, 0] == 0.0
    np.testing.assert_allclose(matrix @ theta, values, atol=1e-12)


def test_estimate_size_counts_parameters():
    model = MultiCountryModel(countries=2)
    assert estimate_size(model, {"degree": 3})[0] == 35 * 2
    assert estimate_size(model, {"algorithm": "fixed_grid", "basis": "spline",
                                 "product": "tensor", "n_basis": 6})[0] == 6 ** 4 * 2


def test_large_tensor_spline_rejected_with_parameter_count():
    model = MultiCountryModel(countries=4)
    settings = {"algorithm": "fixed_grid", "basis": "spline", "product": "tensor", "n_basis": 6}
    n_params, _ = estimate_size(model, settings)
    with pytest.raises(ValueError, match=f"{n_params} parameters"):
        check_size(model, resolve_settings(model, settings))


def test_invalid_settings_rejected():
    model = MultiCountryModel(countries=2)
    with pytest.raises(ValueError, match="unknown multi-country settings"):
        resolve_settings(model, {"degre": 2})
    with pytest.raises(ValueError, match="from 1 to 5"):
        resolve_settings(model, {"degree": 6})
    with pytest.raises(ValueError, match="'fixed_grid' only"):
        resolve_settings(model, {"basis": "spline", "product": "tensor"})


# --- solvers -------------------------------------------------------------------------

FIXED_GRID_METHODS = [
    {"algorithm": "fixed_grid", "degree": 5},
    {"algorithm": "fixed_grid", "basis": "monomial", "degree": 5},
]


@pytest.mark.parametrize("countries", [1, 2, 3])
@pytest.mark.parametrize("settings", FIXED_GRID_METHODS)
def test_fixed_grid_recovers_closed_form(countries, settings):
    model = MultiCountryModel(countries=countries, delta=1.0)
    solution = solve_multicountry(model, settings, SolveControl(), seed=0)
    assert solution.converged
    accuracy = evaluate(model, solution.policy, box_count=500, path_periods=1_000, sphere_count=50)
    assert accuracy.closed_form_max_rel_distance < 1e-6


@pytest.mark.parametrize("countries, limit", [(1, 1e-6), (2, 3e-6)])
def test_gssa_recovers_closed_form(countries, limit):
    # Fitted on the ergodic set, so compared on the path, not in the corners of the box.
    # Measured path distances: 1.6e-6 at N = 2 and 3.1e-6 at N = 3, from tail states.
    model = MultiCountryModel(countries=countries, delta=1.0)
    solution = solve_multicountry(model, {"algorithm": "gssa", "degree": 5}, SolveControl(), seed=0)
    assert solution.converged
    accuracy = evaluate(model, solution.policy, box_count=100, path_periods=1_000, sphere_count=20)
    assert accuracy.closed_form_path_max_rel_distance < limit


@pytest.mark.parametrize("settings", [
    {"algorithm": "fixed_grid", "product": "tensor", "degree": 6},
    {"algorithm": "fixed_grid", "basis": "spline", "product": "tensor", "n_basis": 12},
])
def test_tensor_methods_recover_closed_form_n1(settings):
    model = MultiCountryModel(countries=1, delta=1.0)
    solution = solve_multicountry(model, settings, SolveControl(), seed=0)
    accuracy = evaluate(model, solution.policy, box_count=500, path_periods=1_000, sphere_count=50)
    assert accuracy.closed_form_max_rel_distance < 1e-6


# In logs the one-country closed form log k' = log(alpha beta A) + log a + alpha log k is
# in every basis, so each method recovers it up to its stopping rule, in the corners of
# the box and in the path's tails too. (From N = 2, k' is world output times a share.)
@pytest.mark.parametrize("settings, limit", [
    ({"algorithm": "fixed_grid", "degree": 2}, 1e-10),
    ({"algorithm": "fixed_grid", "basis": "monomial", "degree": 3}, 1e-10),
    ({"algorithm": "gssa", "degree": 2}, 1e-8),
    ({"algorithm": "fixed_grid", "product": "tensor", "degree": 3}, 1e-10),
    ({"algorithm": "fixed_grid", "product": "smolyak", "level": 2}, 1e-10),
    ({"algorithm": "fixed_grid", "basis": "spline", "product": "tensor", "n_basis": 6}, 1e-10),
])
def test_logs_recover_closed_form_exactly(settings, limit):
    model = MultiCountryModel(countries=1, delta=1.0)
    solution = solve_multicountry(model, {**settings, "variables": "logs"}, SolveControl(), seed=0)
    accuracy = evaluate(model, solution.policy, box_count=300, path_periods=1_000, sphere_count=20)
    assert accuracy.closed_form_max_rel_distance < limit
    assert accuracy.closed_form_path_max_rel_distance < limit


def test_diverging_fixed_grid_raises_solve_diverged():
    # The undamped ratio update overshoots at N = 2 until consumption turns negative.
    model = MultiCountryModel(countries=2)
    settings = {"algorithm": "fixed_grid", "update": "ratio", "damping": 1.0, "anderson": 0}
    with pytest.raises(SolveDiverged, match="non-finite at iteration"):
        solve_multicountry(model, settings, SolveControl(), seed=0)


def test_tensor_spline_runs_at_d_4():
    model = MultiCountryModel(countries=2, delta=1.0)
    settings = {"algorithm": "fixed_grid", "basis": "spline", "product": "tensor", "n_basis": 5}
    solution = solve_multicountry(model, settings, SolveControl(), seed=0)
    accuracy = evaluate(model, solution.policy, box_count=200, path_periods=300, sphere_count=10)
    assert solution.n_params == 5 ** 4 * 2
    assert accuracy.closed_form_max_rel_distance < 1e-3


def test_gssa_n2_default_model_degree_3():
    # Measured: path max_log10 -4.96, mean -6.32 (2-core VM); degree 4 reaches -5.63.
    model = MultiCountryModel(countries=2)
    solution = solve_multicountry(model, {"algorithm": "gssa", "degree": 3}, SolveControl(), seed=0)
    accuracy = evaluate(model, solution.policy, box_count=100, sphere_count=20)
    assert solution.converged
    assert accuracy.path.max_log10 < -4.8
    assert accuracy.path.mean_log10 < -6.0
    assert accuracy.path.equation_max_log10[2] < -12  # the resource constraint is met to rounding


def test_ratio_update_converges_with_small_damping():
    model = MultiCountryModel(countries=1, delta=1.0)
    settings = {"algorithm": "fixed_grid", "degree": 4, "update": "ratio", "damping": 0.1,
                "anderson": 0, "tol": 1e-8}
    solution = solve_multicountry(model, settings, SolveControl(), seed=0)
    accuracy = evaluate(model, solution.policy, box_count=500, path_periods=500, sphere_count=20)
    assert solution.converged
    assert accuracy.closed_form_max_rel_distance < 1e-4


def test_solve_reports_progress_and_history():
    model = MultiCountryModel(countries=2)
    control = SolveControl()
    solution = solve_multicountry(model, {"algorithm": "fixed_grid", "degree": 2}, control, seed=0)
    assert len(control.history) == solution.iterations
    assert solution.n_params == 15 * 2
    assert solution.parameters["settings"]["degree"] == 2


def test_path_subsample_spans_the_whole_path():
    assert scored_periods(10, None).tolist() == list(range(10))
    assert scored_periods(10_000, 1_000)[[0, -1]].tolist() == [0, 9_999]
    assert scored_periods(10_000, 1_000).size == 1_000
    assert np.all(np.diff(scored_periods(10_000, 1_000)) >= 10)
    with pytest.raises(ValueError, match="path_count must be at least 2"):
        scored_periods(10, 1)


def test_path_subsample_scores_fewer_points():
    model = MultiCountryModel(countries=1, delta=1.0)
    settings = {"algorithm": "fixed_grid", "basis": "chebyshev", "product": "tensor", "degree": 4}
    solution = solve_multicountry(model, settings, SolveControl(), seed=0)
    full = evaluate(model, solution.policy, box_count=50, path_periods=2_000, sphere_count=10)
    sampled = evaluate(model, solution.policy, box_count=50, path_periods=2_000, sphere_count=10,
                       path_count=200)
    assert (full.path.points, sampled.path.points) == (2_000, 200)
    assert sampled.path.max_log10 <= full.path.max_log10
    assert sampled.path_share_outside_box == full.path_share_outside_box
