"""Tests of the savings-model projection solver against an EGM solution on a fine grid."""

import json
import time

import numpy as np
import pytest

from solvers.control import SolveControl, SolveTimedOut
from solvers.methods import MethodSpec
from solvers.savings import SavingsModel, accuracy
from scipy.interpolate import BSpline

from solvers.bases import SplineBasis
from solvers.savings_solver import (
    SavingsSystem,
    approximation_bounds,
    build_policy,
    hinge_transform,
    kink_spline_states,
    locate_kinks,
    node_set,
    polynomial_states,
    solve_savings,
)
from solvers.spec import JobSpec

# Basis functions per income state of the two headline methods: the kink-following
# spline of examples/savings.yaml and the spec's largest Chebyshev degree (40).
SPLINE_K = 400
CHEBYSHEV_DEGREE = 40


def spline_spec(n_basis=SPLINE_K, **settings):
    return MethodSpec(basis={"kind": "spline", "n_basis": n_basis, "order": 3}, **settings)


def chebyshev_spec(degree=CHEBYSHEV_DEGREE, **settings):
    return MethodSpec(basis={"kind": "chebyshev", "degree": degree}, **settings)


@pytest.fixture(scope="module")
def model():
    return SavingsModel.from_ar1()


@pytest.fixture(scope="module")
def reference(model):
    """EGM policy on a 20,000-point savings grid (about 0.8 s)."""
    return model.egm_reference(n_grid=20_000)


@pytest.fixture(scope="module")
def spline(model):
    """Cubic spline with kink knots, 400 functions per state (about 6 s)."""
    started = time.perf_counter()
    solution = solve_savings(model, spline_spec(), seed=0, control=SolveControl(), kink_knots=True)
    solution.extra["test_seconds"] = time.perf_counter() - started
    return solution


@pytest.fixture(scope="module")
def chebyshev(model):
    """Chebyshev polynomials of degree 40 per state, complementarity collocation."""
    return solve_savings(model, chebyshev_spec(), seed=0, control=SolveControl())


@pytest.fixture(scope="module")
def spline_accuracy(model, spline):
    return accuracy(model, spline.policy)


@pytest.fixture(scope="module")
def other_model():
    """A calibration away from the default: gamma 3, b 0.5, 7 Tauchen states."""
    return SavingsModel.from_ar1(gamma=3.0, b=0.5, n_states=7, method="tauchen")


@pytest.fixture(scope="module")
def other_spline(other_model):
    """Cubic spline with kink knots, 200 functions per state (about 3 s)."""
    return solve_savings(other_model, spline_spec(200), seed=0, control=SolveControl(),
                         kink_knots=True)


def near_kink_points(model, reference, width=0.05, count=400):
    """Return interior states within `width` above each binding state's EGM kink."""
    binding = np.flatnonzero(reference.a_star > model.bounds[:, 0])
    offsets = np.linspace(1e-4, width, count)
    a = np.concatenate([reference.a_star[s] + offsets for s in binding])
    i = np.repeat(binding, count)
    return a, i


def test_spline_solve_converges(spline):
    assert spline.converged
    assert spline.extra["residual_max"] < 1e-12
    assert spline.extra["sizes"] == [SPLINE_K] * 5


def test_spline_interior_target(spline_accuracy):
    # Measured: box max -5.82 and mean -7.46, path max -6.05 and mean -7.60.
    assert spline_accuracy.box.interior_max_log10 <= -5.5
    assert spline_accuracy.path.interior_max_log10 <= -5.5
    assert spline_accuracy.box.interior_mean_log10 <= -7.0
    assert spline_accuracy.path.interior_mean_log10 <= -7.0


def test_spline_feasible_everywhere(spline_accuracy):
    for points in (spline_accuracy.box, spline_accuracy.path):
        assert points.n_infeasible == 0
        assert points.n_invalid == 0
        assert points.binding_max == 0.0


def test_spline_consumes_bound_where_binding(model, spline):
    kinks = spline.extra["kinks"]
    for state in np.flatnonzero(kinks["binds"]):
        low = model.bounds[state, 0]
        a = np.linspace(low, kinks["primary"][state], 200)
        c = spline.policy(a, np.full(a.size, state))
        assert np.abs(c - (a + model.b)).max() <= 1e-8


def test_spline_binding_points_on_path(model, spline, spline_accuracy):
    a, i = model.simulate(spline.policy, 10_000, 1_000, 19_980_101)
    c = spline.policy(a, i)
    binding = c >= a + model.b - 1e-8
    assert binding.sum() == spline_accuracy.path.n_binding
    assert np.abs(c[binding] - (a[binding] + model.b)).max() <= 1e-8


def test_spline_matches_egm(model, reference, spline):
    rng = np.random.default_rng(7)
    i = rng.integers(0, model.n_states, 20_000)
    a = model.bounds[i, 0] + rng.random(i.size) * (model.a_max - model.bounds[i, 0])
    gap = np.abs(spline.policy(a, i) / reference(a, i) - 1)
    # Measured: max 1.2e-6.
    assert gap.max() < 1e-4


def test_kinks_match_egm(model, reference, spline):
    primary = np.array(spline.extra["kinks"]["primary"])
    binds = np.array(spline.extra["kinks"]["binds"])
    assert binds.tolist() == (reference.a_star > model.bounds[:, 0]).tolist()
    # Measured: 8e-12, 2e-10 and 4e-9 in states 0, 1 and 2.
    assert np.abs(primary[binds] - reference.a_star[binds]).max() < 1e-7


def test_other_calibration_accuracy(other_model, other_spline):
    assert other_spline.converged
    result = accuracy(other_model, other_spline.policy)
    # Measured: box max -4.76 and mean -6.87, path max -4.76 and mean -6.49.
    assert result.box.interior_max_log10 <= -4.5
    assert result.path.interior_max_log10 <= -4.5
    assert result.box.n_infeasible == 0
    assert result.path.n_infeasible == 0


def test_other_calibration_matches_egm(other_model, other_spline):
    reference = other_model.egm_reference(n_grid=20_000)
    rng = np.random.default_rng(7)
    i = rng.integers(0, other_model.n_states, 20_000)
    low = other_model.bounds[i, 0]
    a = low + rng.random(i.size) * (other_model.a_max - low)
    gap = np.abs(other_spline.policy(a, i) / reference(a, i) - 1)
    # Measured: max 4.9e-6.
    assert gap.max() < 1e-4

    binds = np.array(other_spline.extra["kinks"]["binds"])
    assert binds.tolist() == (reference.a_star > other_model.bounds[:, 0]).tolist()


def test_other_calibration_binds(other_model, other_spline):
    kinks = other_spline.extra["kinks"]
    assert any(kinks["binds"])
    for state in np.flatnonzero(kinks["binds"]):
        low = other_model.bounds[state, 0]
        a = np.linspace(low, kinks["primary"][state], 200)
        c = other_spline.policy(a, np.full(a.size, state))
        assert np.abs(c - (a + other_model.b)).max() <= 1e-8


def test_hinge_transform_slope_jumps_only():
    box = np.array([[0.0, 4.0]])
    smooth = SplineBasis(box, [None], order=3, knots=[[0.5, 1.0, 1.0, 1.0, 1.7, 2.5, 3.2]])
    hinges = np.array([1.3, 1.35, 2.9])
    refined_knots = np.sort(np.concatenate([smooth.interior_knots[0], np.repeat(hinges, 3)]))
    refined = SplineBasis(box, [None], order=3, knots=[refined_knots])
    transform = hinge_transform(smooth, refined, hinges).toarray()
    assert transform.shape == (refined.n_params, smooth.n_params + hinges.size)

    # The first columns are the smooth B-splines, written on the refined knots.
    x = np.linspace(0.0, 4.0, 2_001)
    smooth_values = smooth.matrix(x[:, None]).toarray()
    refined_values = refined.matrix(x[:, None]).toarray() @ transform[:, :smooth.n_params]
    assert np.abs(refined_values - smooth_values).max() < 1e-13

    # Each hinge vanishes at and below its location, its slope jumps there, and its second
    # and third derivatives do not.
    step = 1e-9
    for k, location in enumerate(hinges):
        hinge = BSpline(refined.knots[0], transform[:, smooth.n_params + k], 3)
        assert np.abs(hinge(x[x <= location])).max() == 0.0
        assert abs(hinge(location + step, 1) - hinge(location - step, 1)) > 0.1
        for nu in (2, 3):
            scale = np.abs(hinge(x, nu)).max()
            assert abs(hinge(location + step, nu) - hinge(location - step, nu)) < 1e-6 * scale


def test_n_basis_cap_per_model():
    method = {"basis": {"kind": "spline", "n_basis": 400, "knots": "kink"}}
    spec = JobSpec(model={"name": "savings"}, method=method)
    assert spec.method.basis.n_basis == 400
    with pytest.raises(ValueError, match="valid range is 4 <= n_basis <= 150"):
        JobSpec(model={"name": "growth"}, method={"basis": {"kind": "spline", "n_basis": 400}})


def test_chebyshev_worse_near_kink(model, reference, spline, chebyshev):
    a, i = near_kink_points(model, reference)
    spline_error = np.abs(model.euler_error(spline.policy, a, i)).max()
    chebyshev_error = np.abs(model.euler_error(chebyshev.policy, a, i)).max()
    # Measured: spline 5.8e-6, Chebyshev 2.1e-2.
    assert chebyshev_error > 1_000 * spline_error


def test_chebyshev_worse_on_path(model, chebyshev, spline_accuracy):
    chebyshev_accuracy = accuracy(model, chebyshev.policy)
    # Measured: Chebyshev path max -1.06 and mean -1.94.
    assert chebyshev_accuracy.path.interior_max_log10 > spline_accuracy.path.interior_max_log10 + 2


def test_same_spec_same_coefficients(model, spline):
    again = solve_savings(model, spline_spec(), seed=0, control=SolveControl(), kink_knots=True)
    for first, second in zip(spline.parameters["states"], again.parameters["states"]):
        assert first["coefficients"] == second["coefficients"]
        assert first["interior_knots"] == second["interior_knots"]


def test_build_policy_after_json(model, spline):
    parameters = json.loads(json.dumps(spline.parameters))
    rebuilt = build_policy(parameters)
    rng = np.random.default_rng(3)
    i = rng.integers(0, model.n_states, 5_000)
    a = model.bounds[i, 0] + rng.random(i.size) * 21.0
    assert np.array_equal(rebuilt(a, i), spline.policy(a, i))


def test_policy_keeps_shape(model, spline):
    a = np.full((3, 4), 2.0)
    i = np.tile(np.arange(4), (3, 1))
    assert spline.policy(a, i).shape == (3, 4)


def test_deadline_in_past_times_out(model):
    control = SolveControl(deadline=time.monotonic() - 1)
    with pytest.raises(SolveTimedOut):
        solve_savings(model, spline_spec(40), seed=0, control=control, kink_knots=True)


def test_least_squares_gauss_newton(model, reference):
    spec = spline_spec(60, objective={"kind": "least_squares", "oversampling": 2.0},
                       algorithm={"kind": "gauss_newton"})
    solution = solve_savings(model, spec, seed=0, control=SolveControl(), kink_knots=True)
    assert solution.n_conditions > solution.n_params
    a, i = near_kink_points(model, reference)
    assert np.abs(model.euler_error(solution.policy, a, i)).max() < 1e-3


def test_uniform_spline_complementarity(model):
    solution = solve_savings(model, spline_spec(30), seed=0, control=SolveControl(), kink_knots=False)
    result = accuracy(model, solution.policy)
    assert solution.converged
    assert result.path.n_infeasible == 0
    assert result.path.interior_max_log10 < -0.5


@pytest.mark.parametrize("kink_mode", [True, False])
def test_jacobian_matches_finite_differences(model, reference, kink_mode):
    bounds = approximation_bounds(model, 0.2)
    if kink_mode:
        kinks = locate_kinks(model, reference, bounds, max_kinks=3)
        states = kink_spline_states(20, 3, bounds, kinks)
    else:
        states = polynomial_states(chebyshev_spec(8).basis, bounds, seed=0)
    objective = MethodSpec(basis={"kind": "chebyshev"}).objective
    points, node_states, kinds = node_set(states, objective, kink_mode)
    system = SavingsSystem(model, states, points, node_states, kinds, clip_next=not kink_mode)

    blocks = []
    for state, approximation in enumerate(states):
        nodes = approximation.basis.nodes(oversampling=2.0)[:, 0]
        values = reference(nodes, np.full(nodes.size, state)) * 0.98
        blocks.append(np.linalg.lstsq(approximation.matrix(nodes), values, rcond=None)[0])
    theta = np.concatenate(blocks)

    _, jacobian = system(theta, True)
    step = 1e-7
    numeric = np.empty_like(jacobian)
    for k in range(theta.size):
        shift = np.zeros(theta.size)
        shift[k] = step
        numeric[:, k] = (system(theta + shift, False)[0] - system(theta - shift, False)[0]) / (2 * step)
    assert np.abs(jacobian - numeric).max() < 1e-5 * max(1.0, np.abs(jacobian).max())


@pytest.mark.parametrize("settings, message", [
    ({"objective": {"kind": "galerkin"}}, "valid choices: collocation, least_squares"),
    ({"algorithm": {"kind": "gradient_descent"}}, "valid choices: newton, gauss_newton"),
    ({"algorithm": {"kind": "time_iteration"}}, "valid choices: newton, gauss_newton"),
])
def test_unsupported_parts_rejected(model, settings, message):
    with pytest.raises(ValueError, match=message):
        solve_savings(model, spline_spec(30, **settings), seed=0, control=SolveControl())


def test_kink_knots_need_spline(model):
    with pytest.raises(ValueError, match="kink knots need a spline basis"):
        solve_savings(model, chebyshev_spec(10), seed=0, control=SolveControl(), kink_knots=True)


def test_kink_knots_need_room(model):
    with pytest.raises(ValueError, match="leaves no room for kink knots"):
        solve_savings(model, spline_spec(6), seed=0, control=SolveControl(), kink_knots=True)
