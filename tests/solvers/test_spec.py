import json

import pytest
from pydantic import ValidationError

from solvers.spec import JobSpec


def errors_of(data):
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(data)
    return info.value.errors()


def test_defaults_filled():
    spec = JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev"}}})
    assert spec.model.name == "growth"
    assert spec.model.params.beta == 0.99
    assert spec.model.params.sigma == 0.01
    assert spec.method.basis.degree == 10
    assert spec.method.algorithm.kind == "newton"
    assert spec.seed == 0
    assert spec.device == "cpu"
    assert spec.time_limit_s == 600


def test_nn_default_algorithm_is_adam():
    spec = JobSpec.model_validate({"method": {"basis": {"kind": "nn"}}})
    assert spec.method.algorithm.kind == "adam"


def test_out_of_range_names_value_and_range():
    [error] = errors_of({"model": {"params": {"beta": 1.5}}, "method": {"basis": {"kind": "spline"}}})
    assert error["loc"] == ("model", "growth", "params", "beta")
    assert "1.5" in error["msg"]
    assert "0 < value < 1" in error["msg"]


def test_integer_setting_range():
    [error] = errors_of({"method": {"basis": {"kind": "chebyshev", "degree": 0}}})
    assert error["loc"][-1] == "degree"
    assert "1 <= value <= 40" in error["msg"]


def test_non_finite_rejected():
    [error] = errors_of({"model": {"params": {"gamma": float("nan")}},
                         "method": {"basis": {"kind": "chebyshev"}}})
    assert error["loc"] == ("model", "growth", "params", "gamma")
    assert "not a finite number" in error["msg"]


def test_unknown_key_rejected():
    [error] = errors_of({"model": {"params": {"bta": 0.9}}, "method": {"basis": {"kind": "chebyshev"}}})
    assert error["type"] == "extra_forbidden"
    assert error["loc"] == ("model", "growth", "params", "bta")


def test_unknown_basis_lists_choices():
    [error] = errors_of({"method": {"basis": {"kind": "wavelet"}}})
    assert "chebyshev" in error["msg"]
    assert "spline" in error["msg"]
    assert "nn" in error["msg"]


def test_algorithm_must_fit_basis():
    [error] = errors_of({"method": {"basis": {"kind": "nn"}, "algorithm": {"kind": "newton"}}})
    assert "valid choices: adam" in error["msg"]


def test_gpu_only_for_nn():
    [error] = errors_of({"method": {"basis": {"kind": "spline"}}, "device": "gpu"})
    assert "'nn' basis only" in error["msg"]


def test_json_schema_carries_bounds():
    schema = JobSpec.model_json_schema()
    beta = schema["$defs"]["GrowthParams"]["properties"]["beta"]
    assert beta["exclusiveMinimum"] == 0
    assert beta["exclusiveMaximum"] == 1
    assert "standard deviation of the innovation" in schema["$defs"]["GrowthParams"]["properties"]["sigma"]["description"].lower()


def test_round_trip_json():
    spec = JobSpec.model_validate({"method": {"basis": {"kind": "spline", "n_basis": 12}}, "seed": 7})
    again = JobSpec.model_validate(json.loads(spec.model_dump_json()))
    assert again == spec


def test_version_1_spec_upgraded():
    spec = JobSpec.model_validate({"schema_version": 1, "method": {
        "basis": {"kind": "nn"}, "algorithm": {"kind": "adam", "steps": 10, "batch_size": 64, "ergodic_share": 0.3}}})
    assert spec.schema_version == 2
    assert spec.method.objective.kind == "sampled_mse"
    assert spec.method.objective.batch_size == 64
    assert spec.method.objective.ergodic_share == 0.3
    assert spec.method.algorithm.steps == 10
