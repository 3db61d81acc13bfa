"""Value-function methods against the closed-form value function of the log, full-depreciation case."""

import numpy as np
import pytest

from solvers import algorithms
from solvers.collocation import build_basis
from solvers.control import SolveControl
from solvers.evaluate import evaluate
from solvers.growth import GrowthModel
from solvers.methods import ChebyshevBasis, JobPolicy, SavingsRatePolicy, VFIAlgorithm
from solvers.quadrature import gauss_hermite
from solvers.run import run_spec
from solvers.spec import JobSpec
from solvers.policies import PolicySource, fixed_policy, rebuild_policy
from solvers.value import (bellman_system, closed_form_value, policy_evaluation_system, utility,
                           value_diagnostics, vfi)

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


def finished_source(method: dict, model: dict | None = None, seed: int = 0) -> PolicySource:
    """Solve a growth spec here and return it as a finished job's policy source."""
    spec = JobSpec.model_validate({"model": {"params": model or {}}, "method": method, "seed": seed})
    outcome = run_spec(spec)
    assert outcome.status == "succeeded", outcome.fields.get("error")
    return PolicySource("a" * 32, spec, outcome.parameters)


JOB_POLICY = {"kind": "job", "job_id": "a" * 32}


@pytest.mark.parametrize("method", [
    {"basis": {"kind": "chebyshev", "degree": 6}},
    {"basis": {"kind": "spline", "n_basis": 8}, "objective": {"kind": "least_squares"}},
    {"basis": {"kind": "chebyshev", "degree": 6}, "residual": {"kind": "bellman"}},
    {"basis": {"kind": "grid", "points": 9}, "algorithm": {"kind": "time_iteration"}},
])
def test_rebuilt_policy_matches_solved_policy(method):
    spec = JobSpec.model_validate({"method": method})
    model = GrowthModel.from_params(spec.model.params)
    outcome = run_spec(spec)
    rebuilt = rebuild_policy(PolicySource("a" * 32, spec, outcome.parameters))
    rng = np.random.default_rng(3)
    k = rng.uniform(*model.bounds[0], 500)
    logz = rng.uniform(*model.bounds[1], 500)
    c = rebuilt(k, logz)
    assert c.shape == k.shape

    # The rebuilt policy gives the record's Euler errors to the last digit.
    errors = evaluate(model, rebuilt).as_errors()
    assert errors["box"] == outcome.fields["errors"]["box"]
    assert errors["path"] == outcome.fields["errors"]["path"]


def test_job_policy_value_matches_closed_form():
    source = finished_source({"basis": {"kind": "chebyshev", "degree": 10}}, CLOSED_FORM)
    spec = JobSpec.model_validate({"model": {"params": CLOSED_FORM}, "method": {
        "basis": {"kind": "chebyshev", "degree": 10},
        "residual": {"kind": "policy_evaluation", "policy": JOB_POLICY}}})
    outcome = run_spec(spec, source=source)
    assert outcome.status == "succeeded", outcome.fields.get("error")
    assert outcome.fields["iterations"] == 1
    assert outcome.fields["diagnostics"]["value_closed_form_max_rel_distance"] < 1e-6
    # The evaluated policy is the source's, so the Euler errors are the source's too.
    assert outcome.fields["errors"]["box"] == source_errors(source)["box"]
    assert outcome.parameters["source"]["job_id"] == source.job_id


def source_errors(source: PolicySource) -> dict:
    return run_spec(source.spec).fields["errors"]


def test_job_policy_of_nested_policy_evaluation_is_rebuilt():
    inner = finished_source({"basis": {"kind": "chebyshev", "degree": 4},
                             "residual": {"kind": "policy_evaluation",
                                          "policy": {"kind": "savings_rate", "rate": 0.3}}})
    spec = JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "degree": 4},
                                              "residual": {"kind": "policy_evaluation", "policy": JOB_POLICY}}})
    outer = run_spec(spec, source=inner)
    assert outer.status == "succeeded"
    model = GrowthModel()
    rebuilt = rebuild_policy(PolicySource("b" * 32, spec, outer.parameters))
    k, logz = np.full(3, model.kss), np.zeros(3)
    np.testing.assert_allclose(rebuilt(k, logz), 0.7 * model.cash_on_hand(k, logz), rtol=1e-14)


def test_job_policy_needs_same_model():
    source = finished_source({"basis": {"kind": "chebyshev", "degree": 4}})
    policy = JobPolicy(kind="job", job_id="a" * 32)
    with pytest.raises(ValueError, match="other parameters"):
        fixed_policy(GrowthModel(gamma=3.0), policy, source)
    assert fixed_policy(GrowthModel(), policy, source)(1.0, 0.0) > 0


def test_job_policy_without_source_fails_with_reason():
    spec = JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "degree": 4},
                                              "residual": {"kind": "policy_evaluation", "policy": JOB_POLICY}}})
    outcome = run_spec(spec)
    assert outcome.status == "failed"
    assert "evaluated through the service" in outcome.fields["error"]
