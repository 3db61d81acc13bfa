"""The savings model as a job: spec, solve, constraint-aware errors, record round trip."""

import json

import pytest
from pydantic import ValidationError

from solvers.record import JobRecord
from solvers.run import run_spec
from solvers.spec import JobSpec

SAVINGS = {"name": "savings"}


def test_defaults_match_calibration():
    spec = JobSpec.model_validate({"model": SAVINGS, "method": {"basis": {"kind": "spline"}}})
    params = spec.model.params
    assert (params.R, params.beta, params.gamma, params.b) == (1.01, 0.96, 1.5, 0.0)
    assert params.income.kind == "ar1"
    assert (params.income.rho, params.income.sigma_eps, params.income.n_states) == (0.9, 0.1, 5)
    assert params.income.method == "rouwenhorst"


def test_kink_spline_job_scores_interior_and_binding_apart():
    spec = JobSpec.model_validate({"model": SAVINGS, "method": {
        "basis": {"kind": "spline", "n_basis": 80, "knots": "kink"}}})
    outcome = run_spec(spec)
    box, path = outcome.fields["errors"]["box"], outcome.fields["errors"]["path"]
    assert outcome.status == "succeeded"
    assert box["max_log10"] < -3.9
    assert path["max_log10"] < -3.9
    assert path["n_binding"] > 1000
    assert path["binding_max"] < 1e-8
    assert path["n_infeasible"] == 0
    assert box["n_interior"] + box["n_binding"] + box["n_infeasible"] + box["n_invalid"] == box["n_points"]
    record = JobRecord(id="0" * 32, status=outcome.status, spec=spec, **outcome.fields)
    again = JobRecord.model_validate_json(record.model_dump_json())
    assert again.errors.path.model_extra["n_binding"] == path["n_binding"]


def test_chebyshev_worse_than_kink_spline():
    errors = {}
    for name, basis in (("spline", {"kind": "spline", "n_basis": 40, "knots": "kink"}),
                        ("chebyshev", {"kind": "chebyshev", "degree": 39})):
        outcome = run_spec(JobSpec.model_validate({"model": SAVINGS, "method": {"basis": basis}}))
        errors[name] = outcome.fields["errors"]["path"]["max_log10"]
    assert errors["chebyshev"] > errors["spline"] + 1


@pytest.mark.parametrize("method,message", [
    ({"basis": {"kind": "nn"}}, "not available for the savings model; valid choices: spline, chebyshev, monomial"),
    ({"basis": {"kind": "spline"}, "residual": {"kind": "bellman"}}, "valid choices: euler"),
    ({"basis": {"kind": "spline"}, "algorithm": {"kind": "time_iteration"}},
     "valid choices: newton, gauss_newton, levenberg_marquardt"),
])
def test_unsupported_methods_rejected(method, message):
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate({"model": SAVINGS, "method": method})


def test_bad_chain_rejected():
    with pytest.raises(ValidationError, match="row 1"):
        JobSpec.model_validate({"model": {"name": "savings", "params": {"income": {
            "kind": "chain", "levels": [0.5, 1.5], "transition": [[0.9, 0.1], [0.3, 0.6]]}}},
            "method": {"basis": {"kind": "spline"}}})


def test_beta_r_at_least_one_rejected():
    with pytest.raises(ValidationError, match="beta\\*R"):
        JobSpec.model_validate({"model": {"name": "savings", "params": {"beta": 0.995}},
                                "method": {"basis": {"kind": "spline"}}})


def test_kink_knots_need_savings_model():
    with pytest.raises(ValidationError, match="only the savings model has"):
        JobSpec.model_validate({"method": {"basis": {"kind": "spline", "knots": "kink"}}})


def test_explicit_chain_solves():
    spec = JobSpec.model_validate({"model": {"name": "savings", "params": {"income": {
        "kind": "chain", "levels": [0.6, 1.4], "transition": [[0.8, 0.2], [0.2, 0.8]]}}},
        "method": {"basis": {"kind": "spline", "n_basis": 40, "knots": "kink"}}})
    outcome = run_spec(spec)
    assert outcome.status == "succeeded"
    assert json.dumps(outcome.fields["errors"])


@pytest.mark.parametrize("model,basis,message", [
    (None, {"kind": "spline", "knots": [[5.0, 100.0], None]}, "not strictly inside the state's interval"),
    (None, {"kind": "spline", "knots": [[35.0]]}, "one entry per state"),
    (SAVINGS, {"kind": "spline", "knots": "kink", "n_basis": 4}, "n_basis >= 8"),
    (SAVINGS, {"kind": "spline", "knots": [[1.0, 2.0]]}, "5 income states"),
])
def test_knots_checked_at_submission(model, basis, message):
    data = {"method": {"basis": basis}}
    if model:
        data["model"] = model
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate(data)


def test_ragged_transition_named():
    with pytest.raises(ValidationError, match="transition row 1 has 1 entries; it must have 2"):
        JobSpec.model_validate({"model": {"name": "savings", "params": {"income": {
            "kind": "chain", "levels": [0.9, 1.1], "transition": [[0.9, 0.1], [1.0]]}}},
            "method": {"basis": {"kind": "spline"}}})


def test_kink_job_counts_iterations_of_every_round():
    outcome = run_spec(JobSpec.model_validate({"model": SAVINGS, "method": {
        "basis": {"kind": "spline", "n_basis": 40, "knots": "kink"}}}))
    assert outcome.fields["iterations"] > outcome.fields["diagnostics"]["rounds"]
