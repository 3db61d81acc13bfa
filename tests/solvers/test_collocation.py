"""Chebyshev and spline collocation against the accuracy figures they must reach."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from solvers import algorithms
from solvers.autodiff import TorchBasis, autodiff_system, loss_hessian
from solvers.collocation import build_basis, euler_system, first_guess, objective_system, solve_collocation
from solvers.methods import AUTODIFF_MAX_PARAMS, CollocationObjective, MethodSpec
from solvers.control import SolveControl, SolveDiverged
from solvers.growth import GrowthModel
from solvers.quadrature import gauss_hermite
from solvers.run import run_spec
from solvers.spec import JobSpec


def spec(basis, **params):
    return JobSpec.model_validate({"model": {"params": params}, "method": {"basis": basis}})


@pytest.mark.parametrize("basis", [{"kind": "chebyshev", "degree": 4}, {"kind": "spline", "n_basis": 7}])
def test_jacobian_matches_finite_differences(basis):
    model = GrowthModel()
    approximation = build_basis(model, spec(basis).method.basis)
    nodes = approximation.nodes()
    theta = np.linalg.lstsq(_dense(approximation.matrix(nodes)),
                            model.initial_consumption(nodes[:, 0], nodes[:, 1]), rcond=None)[0]
    eps, weights = gauss_hermite(5)
    _, jacobian = euler_system(model, approximation, theta, nodes, eps, weights)
    numeric = np.empty((nodes.shape[0], theta.size))
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = 1e-6
        up = euler_system(model, approximation, theta + step, nodes, eps, weights, False)[0]
        down = euler_system(model, approximation, theta - step, nodes, eps, weights, False)[0]
        numeric[:, i] = (up - down) / 2e-6
    np.testing.assert_allclose(_dense(jacobian), numeric, atol=1e-6 * np.abs(numeric).max())


def _dense(matrix):
    return matrix.toarray() if sp.issparse(matrix) else matrix


def test_chebyshev_degree_10_accuracy():
    outcome = run_spec(spec({"kind": "chebyshev", "degree": 10}))
    errors = outcome.fields["errors"]
    assert outcome.status == "succeeded"
    assert outcome.fields["converged"]
    assert errors["box"]["max_log10"] <= -11
    assert errors["path"]["max_log10"] <= -11
    assert errors["closed_form"] is None
    assert outcome.fields["n_params"] == 121
    assert outcome.fields["n_conditions"] == 121


def test_spline_accuracy():
    outcome = run_spec(spec({"kind": "spline"}))
    errors = outcome.fields["errors"]
    assert outcome.status == "succeeded"
    assert errors["box"]["max_log10"] <= -7
    assert errors["path"]["max_log10"] <= -7
    assert outcome.fields["n_params"] == 900
    assert outcome.fields["condition_number"] is None


def test_closed_form_distance():
    outcome = run_spec(spec({"kind": "chebyshev", "degree": 10}, gamma=1, delta=1))
    assert outcome.status == "succeeded"
    assert outcome.fields["errors"]["closed_form"]["max_rel_distance"] < 1e-9


@pytest.mark.parametrize("basis", [{"kind": "chebyshev"}, {"kind": "spline"}])
def test_rerun_gives_identical_errors(basis):
    first = run_spec(spec(basis))
    second = run_spec(spec(basis))
    assert first.fields["errors"] == second.fields["errors"]
    assert first.parameters["theta"] == second.parameters["theta"]


def test_history_recorded():
    outcome = run_spec(spec({"kind": "chebyshev", "degree": 6}))
    history = outcome.fields["history"]
    assert history[0][0] == 0
    assert len(history) == outcome.fields["iterations"] + 1
    assert history[-1][1] < 1e-12


def test_past_deadline_times_out():
    control = SolveControl(deadline=0.0)
    outcome = run_spec(spec({"kind": "chebyshev"}), control)
    assert outcome.status == "timed_out"
    assert outcome.fields["iterations"] == 0
    assert "time limit" in outcome.fields["error"]


def test_cancel_stops_solve():
    outcome = run_spec(spec({"kind": "spline"}), SolveControl(should_cancel=lambda: True))
    assert outcome.status == "cancelled"


def test_non_finite_residual_is_divergence():
    with pytest.raises(SolveDiverged) as info:
        SolveControl().report(3, float("nan"))
    assert info.value.iteration == 3


def test_history_thins_but_keeps_bounded():
    control = SolveControl()
    for iteration in range(10_000):
        control.report(iteration, 1.0 / (iteration + 1))
    assert len(control.history) < 2_000
    assert control.history[0][0] == 0
    assert control.history[-1][0] > 9_000


def test_newton_finds_closed_form_from_poor_guess():
    # The default first guess is already exact when gamma = 1 and delta = 1; starting 20%
    # below it shows that Newton itself finds k' = alpha beta z k^alpha.
    model = GrowthModel(gamma=1.0, delta=1.0)
    approximation = build_basis(model, spec({"kind": "chebyshev", "degree": 10}).method.basis)
    eps, weights = gauss_hermite(10)
    system, _ = objective_system(model, approximation, CollocationObjective(kind="collocation"), eps, weights)
    theta = first_guess(model, approximation, lambda k, logz: 0.8 * model.initial_consumption(k, logz))
    result = algorithms.newton(system, theta, 1e-13, 50, SolveControl())
    assert result.converged
    assert result.iterations >= 3
    k = np.linspace(*model.bounds[0], 50)
    logz = np.linspace(*model.bounds[1], 50)
    c = approximation.evaluate(result.theta, np.column_stack([k, logz]))
    k_next = model.cash_on_hand(k, logz) - c
    exact = model.closed_form_capital(k, logz)
    assert np.max(np.abs(k_next - exact) / exact) < 1e-9


TORCH_BASES = [
    {"kind": "chebyshev", "degree": 6},
    {"kind": "monomial", "degree": 5},
    {"kind": "chebyshev", "degree": 5, "product": "complete"},
    {"kind": "spline", "n_basis": 10},
    {"kind": "spline", "n_basis": 8, "order": 2},
    {"kind": "grid", "points": 12},
]


def _basis(basis_spec, model=None):
    return build_basis(model or GrowthModel(), spec(basis_spec).method.basis)


@pytest.mark.parametrize("basis_spec", TORCH_BASES + [{"kind": "spline", "n_basis": 9,
                                                       "knots": [[30.0, 35.0, 35.0, 35.0, 40.0], None]}])
def test_torch_basis_matches_numpy_basis(basis_spec):
    approximation = _basis(basis_spec)
    low, high = approximation.bounds[:, 0], approximation.bounds[:, 1]
    # Points inside and up to 30% of the width outside the domain, where bases extrapolate.
    unit = np.random.default_rng(0).random((500, 2))
    points = low - 0.3 * (high - low) + 1.6 * unit * (high - low)
    theta = np.random.default_rng(1).standard_normal(approximation.n_params)

    expected = approximation.evaluate(theta, points)
    got = TorchBasis(approximation).evaluate(torch.as_tensor(theta), torch.as_tensor(points)).numpy()

    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.max(np.abs(expected)))


@pytest.mark.parametrize("basis_spec", TORCH_BASES)
def test_autodiff_jacobian_matches_analytic(basis_spec):
    model = GrowthModel()
    approximation = _basis(basis_spec, model)
    nodes = approximation.nodes(oversampling=1.5)
    theta = first_guess(model, approximation)
    eps, weights = gauss_hermite(10)

    residual, jacobian = euler_system(model, approximation, theta, nodes, eps, weights)
    auto_residual, auto_jacobian = autodiff_system(model, approximation, nodes, eps, weights)(theta, True)

    np.testing.assert_allclose(auto_residual, residual, rtol=0, atol=1e-13)
    np.testing.assert_allclose(auto_jacobian, _dense(jacobian), rtol=0,
                               atol=1e-10 * np.abs(_dense(jacobian)).max())


def solved_theta(basis, objective, algorithm):
    method = MethodSpec.model_validate({"basis": basis, "objective": {"kind": objective},
                                        "algorithm": algorithm})
    solution = solve_collocation(GrowthModel(), method, SolveControl())
    return np.array(solution.parameters["theta"]), solution


@pytest.mark.parametrize("kind,objective", [("newton", "collocation"), ("gauss_newton", "least_squares"),
                                            ("levenberg_marquardt", "galerkin")])
def test_autodiff_jacobian_solves_to_same_theta(kind, objective):
    basis = {"kind": "chebyshev", "degree": 6}
    analytic, _ = solved_theta(basis, objective, {"kind": kind})
    autodiff, solution = solved_theta(basis, objective, {"kind": kind, "jacobian": "autodiff"})

    assert solution.converged
    np.testing.assert_allclose(autodiff, analytic, rtol=0, atol=1e-10)


def test_loss_hessian_matches_finite_differences():
    model = GrowthModel()
    approximation = _basis({"kind": "chebyshev", "degree": 5}, model)
    nodes = approximation.nodes(oversampling=2)
    theta = first_guess(model, approximation)
    eps, weights = gauss_hermite(10)

    def gradient(point):
        residual, jacobian = euler_system(model, approximation, point, nodes, eps, weights)
        return jacobian.T @ residual / residual.size

    step = 1e-6
    numeric = np.column_stack([(gradient(theta + step * e) - gradient(theta - step * e)) / (2 * step)
                               for e in np.eye(theta.size)])
    hessian = loss_hessian(model, approximation, nodes, eps, weights)(theta)

    np.testing.assert_allclose(hessian, numeric, rtol=0, atol=1e-7 * np.abs(hessian).max())
    # Away from the solution the residual term makes the Hessian indefinite.
    assert np.linalg.eigvalsh(hessian)[0] < 0


@pytest.mark.parametrize("degree", [6, 10])
def test_newton_least_squares_matches_gauss_newton(degree):
    basis = {"kind": "chebyshev", "degree": degree}
    gauss, _ = solved_theta(basis, "least_squares", {"kind": "gauss_newton"})
    control = SolveControl()
    method = MethodSpec.model_validate({"basis": basis, "objective": {"kind": "least_squares", "oversampling": 2},
                                        "algorithm": {"kind": "newton"}})
    solution = solve_collocation(GrowthModel(), method, control)
    history = np.array([row[1] for row in control.history])

    assert solution.converged
    np.testing.assert_allclose(solution.parameters["theta"], gauss, rtol=0, atol=1e-10)
    assert "gauss_newton_fallback_steps" in solution.extra
    assert len(history) == solution.iterations + 1
    assert history[-1] < 1e-2 * history[0]


def test_autodiff_rejects_large_basis():
    outcome = run_spec(JobSpec.model_validate({"method": {
        "basis": {"kind": "chebyshev", "degree": 25}, "algorithm": {"kind": "newton", "jacobian": "autodiff"}}}))

    assert outcome.status == "failed"
    assert f"at most K = {AUTODIFF_MAX_PARAMS}" in outcome.fields["error"]
    assert "K = 676" in outcome.fields["error"]
