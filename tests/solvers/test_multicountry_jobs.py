"""Jobs of the N-country model: spec validation, size limits, and run_spec end to end."""

import math
import time

import pytest
from pydantic import ValidationError

from solvers.multicountry_jobs import build_model, evaluation_counts, size_problem
from solvers.record import Errors
from solvers.run import run_spec
from solvers.spec import JobSpec, describe_catalogue

CLOSED_FORM = {"countries": 1, "delta": 1.0, "gamma": 1.0}


def job(method: dict, **params) -> JobSpec:
    return JobSpec.model_validate({"model": {"name": "multi_country", "params": params}, "method": method})


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize("basis, objective, algorithm", [
    ({"kind": "chebyshev", "product": "complete", "degree": 2}, "least_squares", "time_iteration"),
    ({"kind": "chebyshev", "product": "smolyak", "level": 2}, "collocation", "time_iteration"),
    ({"kind": "chebyshev", "degree": 2}, "collocation", "time_iteration"),
    ({"kind": "spline", "n_basis": 5}, "collocation", "time_iteration"),
    ({"kind": "nn"}, "sampled_mse", "adam"),
])
def test_defaults_fill_multi_country_parts(basis, objective, algorithm):
    spec = job({"basis": basis}, countries=2)
    assert spec.method.objective.kind == objective
    assert spec.method.algorithm.kind == algorithm
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_params_defaults_match_model_class():
    from solvers.multicountry import MultiCountryModel

    spec = job({"basis": {"kind": "nn"}})
    model, reference = build_model(spec.model.params), MultiCountryModel()
    for name in ("countries", "alpha", "beta", "delta", "rho", "sigma", "phi", "gamma", "weights",
                 "k_box", "loga_box_sd"):
        assert getattr(model, name) == getattr(reference, name), name


def test_newton_rejected_with_valid_choices():
    with pytest.raises(ValidationError) as error:
        job({"basis": {"kind": "chebyshev", "degree": 2}, "algorithm": {"kind": "newton"}})
    assert "valid choices: time_iteration" in str(error.value)


def test_grid_basis_rejected_with_valid_choices():
    with pytest.raises(ValidationError) as error:
        job({"basis": {"kind": "grid"}})
    assert "valid choices: chebyshev, monomial, spline, nn" in str(error.value)


def test_gssa_and_smolyak_rejected_for_growth():
    with pytest.raises(ValidationError) as gssa:
        JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "product": "complete"},
                                           "algorithm": {"kind": "gssa"}}})
    assert "multi_country model only" in str(gssa.value)
    with pytest.raises(ValidationError) as smolyak:
        JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "product": "smolyak"}}})
    assert "multi_country model only" in str(smolyak.value)


def test_logs_rejected_for_growth_and_named_in_summary():
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "variables": "logs"}}})
    assert "multi_country model only; the growth model takes 'levels'" in str(error.value)
    spec = job({"basis": {"kind": "chebyshev", "product": "complete", "degree": 3, "variables": "logs"}})
    assert spec.summary().startswith("chebyshev deg 3 complete logs")


@pytest.mark.parametrize("params, fragment", [
    ({"countries": 101}, "100"),
    ({"countries": 3, "gamma": [1.0, 2.0]}, "tuple of 3"),
    ({"countries": 2, "weights": [1.0]}, "tuple of 2"),
    ({"countries": 2, "weights": [1e-300, 1e300]}, "within a factor 1e+06"),
    ({"countries": 2, "loga_box_sd": 0.001}, "valid range is 0.1 <= value <= 10"),
])
def test_bad_params_rejected(params, fragment):
    with pytest.raises(ValidationError) as error:
        job({"basis": {"kind": "nn"}}, **params)
    assert fragment in str(error.value)


def test_smolyak_level_range_and_anisotropy():
    with pytest.raises(ValidationError) as error:
        job({"basis": {"kind": "chebyshev", "product": "smolyak", "level": 4}})
    assert "level" in str(error.value)
    spec = job({"basis": {"kind": "chebyshev", "product": "smolyak", "level": [2, 1, 1, 1]}}, countries=2)
    assert spec.method.basis.level == [2, 1, 1, 1]


def test_complete_degree_above_five_rejected():
    with pytest.raises(ValidationError) as error:
        job({"basis": {"kind": "chebyshev", "product": "complete", "degree": 6}})
    assert "from 1 to 5" in str(error.value)


# --- size limits -----------------------------------------------------------------------


@pytest.mark.parametrize("countries", [1, 2])
def test_tensor_spline_fits_at_d_2_and_4(countries):
    spec = job({"basis": {"kind": "spline", "n_basis": 5}}, countries=countries)
    assert size_problem(build_model(spec.model.params), spec.method) is None


def test_tensor_spline_above_limit_names_count():
    spec = job({"basis": {"kind": "spline", "n_basis": 5}}, countries=4)
    message = size_problem(build_model(spec.model.params), spec.method)
    assert message is not None
    assert "has 1,562,500 parameters" in message
    assert "the limits are 200,000 parameters" in message
    assert "MiB" in message


def test_memory_limit_names_estimate():
    spec = job({"basis": {"kind": "spline", "n_basis": 5}}, countries=3)
    message = size_problem(build_model(spec.model.params), spec.method, max_memory_mb=100)
    assert "has 46,875 parameters" in message
    assert "and 100 MiB" in message


def test_oversize_spec_fails_in_run_spec():
    outcome = run_spec(job({"basis": {"kind": "spline", "n_basis": 5}}, countries=4))
    assert outcome.status == "failed"
    assert "1,562,500 parameters" in outcome.fields["error"]


def test_evaluation_counts_shrink_with_n():
    small = evaluation_counts(build_model(job({"basis": {"kind": "nn"}}, countries=1).model.params))
    large = evaluation_counts(build_model(job({"basis": {"kind": "nn"}}, countries=50).model.params))
    assert small == {"box_count": 10_000, "path_periods": 10_000, "path_count": 10_000, "sphere_count": 1_000}
    assert large == {"box_count": 500, "path_periods": 10_000, "path_count": 1_000, "sphere_count": 200}


def test_catalogue_lists_multi_country():
    catalogue = describe_catalogue()
    model = catalogue["models"]["multi_country"]
    assert model["settings"]["countries"]["default"] == 2
    assert model["methods"]["algorithm"]["least_squares"] == ["time_iteration", "gssa"]
    assert "gssa" in catalogue["algorithms"]


# --- run_spec --------------------------------------------------------------------------


# Fitted in levels, where the distance is an approximation error. Tolerances on the box
# and on the path, which leaves the box (extrapolation), measured with margin: complete
# 6.8e-5 / 6.3e-5, gssa 2.7e-4 / 6.5e-5, smolyak 1.9e-7 / 9.6e-6, spline 2.1e-7 / 2.1e-5.
@pytest.mark.parametrize("method, box_tolerance, path_tolerance", [
    ({"basis": {"kind": "chebyshev", "product": "complete", "degree": 3}}, 2e-4, 2e-4),
    ({"basis": {"kind": "chebyshev", "product": "complete", "degree": 3},
      "algorithm": {"kind": "gssa"}}, 1e-3, 2e-4),
    ({"basis": {"kind": "chebyshev", "product": "smolyak", "level": 3}}, 1e-6, 5e-5),
    ({"basis": {"kind": "spline", "n_basis": 8}}, 1e-6, 1e-4),
])
def test_closed_form_recovered_by_linear_methods(method, box_tolerance, path_tolerance):
    method = {**method, "basis": {**method["basis"], "variables": "levels"}}
    outcome = run_spec(job(method, **CLOSED_FORM))
    assert outcome.status == "succeeded", outcome.fields.get("error")
    assert outcome.fields["converged"]
    closed_form = outcome.fields["errors"]["closed_form"]
    assert closed_form["max_rel_distance"] <= box_tolerance
    assert closed_form["path_max_rel_distance"] <= path_tolerance


def test_gssa_logs_recovers_closed_form():
    method = {"basis": {"kind": "chebyshev", "product": "complete", "degree": 5, "variables": "logs"},
              "algorithm": {"kind": "gssa"}}
    outcome = run_spec(job(method, **CLOSED_FORM))
    assert outcome.status == "succeeded", outcome.fields.get("error")
    closed_form = outcome.fields["errors"]["closed_form"]
    assert closed_form["max_rel_distance"] <= 1e-8
    assert closed_form["path_max_rel_distance"] <= 1e-8


def test_tiny_sigma_succeeds_despite_far_sphere():
    # At sigma 1e-6 the radius-0.3 sphere lies far outside the box; only box and path count.
    outcome = run_spec(job({"basis": {"kind": "chebyshev", "product": "smolyak", "level": 2}},
                           countries=1, sigma=1e-6))
    assert outcome.status == "succeeded", outcome.fields.get("error")
    assert outcome.fields["errors"]["path"]["max_log10"] < -8


def test_nn_recovers_closed_form_quickly():
    method = {"basis": {"kind": "nn", "width": 32},
              "objective": {"kind": "sampled_mse", "batch_size": 256},
              "algorithm": {"kind": "adam", "steps": 4000, "learning_rate": 1e-2}}
    started = time.monotonic()
    outcome = run_spec(job(method, **CLOSED_FORM))
    seconds = time.monotonic() - started
    assert outcome.status == "succeeded", outcome.fields.get("error")
    closed_form = outcome.fields["errors"]["closed_form"]
    assert closed_form["max_rel_distance"] <= 1e-3
    assert closed_form["path_max_rel_distance"] <= 1e-3
    assert seconds < 60, f"training and evaluation took {seconds:.0f} s"


def test_smolyak_two_countries_record():
    outcome = run_spec(job({"basis": {"kind": "chebyshev", "product": "smolyak", "level": 2}}, countries=2))
    assert outcome.status == "succeeded", outcome.fields.get("error")
    fields = outcome.fields
    assert fields["converged"]
    assert fields["n_params"] == 2 * 41
    errors = Errors.model_validate(fields["errors"])
    assert errors.path.max_log10 < -3.5
    assert errors.closed_form is None
    assert set(errors.spheres) == {"0.01", "0.1", "0.3"}
    assert errors.spheres["0.01"].max_log10 < errors.spheres["0.3"].max_log10
    assert 0 <= errors.path.share_outside_box < 0.1
    assert errors.box.model_extra["euler_max_log10"] == pytest.approx(errors.box.max_log10)
    diagnostics = fields["diagnostics"]
    assert diagnostics["equations"] == ["euler_1", "euler_2", "resource"]
    assert len(diagnostics["equation_max_log10"]["path"]) == 3
    assert math.isclose(max(diagnostics["equation_max_log10"]["path"]), errors.path.max_log10)
