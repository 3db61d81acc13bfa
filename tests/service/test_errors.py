"""Readable validation messages for specs that fail in unions and in whole-body checks."""

import pytest
from pydantic import ValidationError

from service.errors import describe_errors, summarize
from solvers.spec import JobSpec


def described(body: dict) -> list[dict]:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(body)
    return describe_errors(error.value.errors(), JobSpec)


def smolyak(level) -> dict:
    return {"model": {"name": "multi_country", "params": {"countries": 2}},
            "method": {"basis": {"kind": "chebyshev", "product": "smolyak", "level": level}}}


def test_union_member_labels_left_out_of_field():
    errors = described(smolyak(0))
    assert [item["field"] for item in errors] == ["method.basis.level"]
    assert "function-after" not in summarize(errors)
    assert errors[0]["msg"] == ("0 is out of range; valid range is 1 <= value <= 3; "
                                "or input should be a valid list")


def test_whole_body_check_does_not_echo_request():
    body = {"model": {"name": "multi_country", "params": {"countries": 2}},
            "method": {"basis": {"kind": "chebyshev", "product": "complete", "degree": 6}}}
    errors = described(body)
    assert errors[0]["field"] == "(body)"
    assert "input" not in errors[0]
    assert summarize(errors) == "(body): degree of a complete polynomial must be an integer from 1 to 5; got 6"
