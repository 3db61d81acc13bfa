"""Value-function methods against the closed-form value function of the log, full-depreciation case."""

import numpy as np
import pytest

from solvers import algorithms
from solvers.collocation import build_basis
from solvers.control import SolveControl
from solvers.growth import GrowthModel
from solvers.methods import ChebyshevBasis, SavingsRatePolicy, VFIAlgorithm
from solvers.quadrature import gauss_hermite
from solvers.run import run_spec
from solvers.spec import JobSpec
from solvers.value import (bellman_system, closed_form_value, fixed_policy, policy_evaluation_system,
                           utility, value_diagnostics, vfi)

CLOSED_FORM = {"gamma": 1, "delta": 1}


def closed_form_model():
    return GrowthModel(gamma=1.0, delta=1.0)


def test_closed_form_value_solves_bellman_equation():
    model = closed_form_model()
    k = np.linspace(*model.bounds[0], 7)
    logz = np.linspace(*model.bounds[1], 7)
    eps, weights = gauss_hermite(12)
    c = fixed_policy(model, type("P", (), {"kind": "closed_form"})())(k, logz)
    k_next = model.cash_on_hand(k, logz) - c
    logz_next = model.rho * logz[:, None] + model.sigma * eps[None, :]
    expected = (weights * closed_form_value(model, k_next[:, None], logz_next)).sum(1)
    rhs = utility(model, c) + model.beta * expected
    np.testing.assert_allclose(closed_form_value(model, k, logz), rhs, rtol=1e-13)


def start_from_savings_rate(model, basis, points, rate):
    """Coefficients of the value of saving a constant share: a start that is not the solution."""
    eps, weights = gauss_hermite(10)
    policy = fixed_policy(model, SavingsRatePolicy(kind="savings_rate", rate=rate))
    system = policy_evaluation_system(model, basis, points, policy, eps, weights)
    gap, matrix = system(np.zeros(basis.n_params), True)
    return algorithms.solve_linear_least_squares(matrix, -gap)


@pytest.mark.parametrize("method", ["vfi", "policy_iteration"])
def test_bellman_recovers_closed_form_value(method):
    model = closed_form_model()
    basis = build_basis(model, ChebyshevBasis(kind="chebyshev", degree=10))
    points = basis.nodes()
    eps, weights = gauss_hermite(10)
    theta = start_from_savings_rate(model, basis, points, rate=0.25)
    control = SolveControl()
    if method == "vfi":
        result = vfi(model, basis, points, theta, eps, weights, VFIAlgorithm(kind="vfi"), control)
    else:
        result = algorithms.newton(bellman_system(model, basis, points, eps, weights), theta, 1e-12, 50, control)
    assert result.converged
    assert result.iterations >= 2
    diagnostics = value_diagnostics(model, basis, result.theta, eps, weights)
    assert diagnostics["value_closed_form_max_rel_distance"] < 1e-6
    assert diagnostics["bellman_sup_residual"] < 1e-8


def test_policy_iteration_needs_fewer_iterations_than_vfi():
    model = GrowthModel(gamma=1.0, delta=1.0, beta=0.9)
    basis = build_basis(model, ChebyshevBasis(kind="chebyshev", degree=5))
    points = basis.nodes()
    eps, weights = gauss_hermite(6)
    theta = start_from_savings_rate(model, basis, points, rate=0.25)
    plain = vfi(model, basis, points, theta, eps, weights,
                VFIAlgorithm(kind="vfi", howard_steps=0, tol=1e-6), SolveControl())
    howard = vfi(model, basis, points, theta, eps, weights,
                 VFIAlgorithm(kind="vfi", howard_steps=20, tol=1e-6), SolveControl())
    newton = algorithms.newton(bellman_system(model, basis, points, eps, weights), theta, 1e-10, 50, SolveControl())
    assert newton.iterations < howard.iterations < plain.iterations


def test_policy_evaluation_of_closed_form_in_one_solve():
    spec = JobSpec.model_validate({"model": {"params": CLOSED_FORM}, "method": {
        "basis": {"kind": "chebyshev", "degree": 10},
        "residual": {"kind": "policy_evaluation", "policy": {"kind": "closed_form"}}}})
    outcome = run_spec(spec)
    assert outcome.status == "succeeded"
    assert outcome.fields["iterations"] == 1
    assert outcome.fields["diagnostics"]["value_closed_form_max_rel_distance"] < 1e-6
    # The evaluated policy is the closed form itself.
    assert outcome.fields["errors"]["closed_form"]["max_rel_distance"] < 1e-14


def test_closed_form_policy_needs_closed_form_model():
    with pytest.raises(ValueError, match="needs gamma = 1 and delta = 1"):
        JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev"}, "residual": {
            "kind": "policy_evaluation", "policy": {"kind": "closed_form"}}}})


def test_bellman_job_on_default_model():
    spec = JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "degree": 8},
                                              "residual": {"kind": "bellman"},
                                              "algorithm": {"kind": "newton"}}})
    outcome = run_spec(spec)
    assert outcome.status == "succeeded"
    assert outcome.fields["converged"]
    assert outcome.fields["errors"]["box"]["max_log10"] < -7
    assert outcome.fields["diagnostics"]["bellman_sup_residual"] < 1e-8


def test_grid_baseline_is_coarse_but_sound():
    outcome = run_spec(JobSpec.model_validate({"method": {"basis": {"kind": "grid", "points": 40}}}))
    assert outcome.status == "succeeded"
    assert outcome.fields["n_params"] == 1600
    assert -6 < outcome.fields["errors"]["box"]["max_log10"] < -3
