"""Fixed consumption policies of the growth model, and policies rebuilt from finished jobs.

A policy_evaluation job computes the value of a policy that it does not solve for: a
constant savings rate, the closed form, or the policy a finished job fitted. This module
turns each of those into a callable `c(k, log z)` on numpy float64 arrays of one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from solvers.collocation import build_basis, linear_policy
from solvers.growth import GrowthModel, Policy

BOUNDS_RTOL = 1e-9  # relative gap allowed between stored and rebuilt approximation domains


@dataclass(frozen=True)
class PolicySource:
    """A finished job's spec and its stored parameters, from which its policy is rebuilt.

    spec: the job's JobSpec. parameters: the JSON data the job stored with its result
    (`Solution.parameters`).
    """

    job_id: str
    spec: Any
    parameters: dict[str, Any]

    def as_record(self) -> dict[str, Any]:
        """Return JSON-ready data that `from_record` turns back into this source."""
        return {"job_id": self.job_id, "spec": self.spec.model_dump(mode="json"),
                "parameters": self.parameters}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "PolicySource":
        """Rebuild a source from `as_record` data."""
        from solvers.spec import JobSpec

        return cls(record["job_id"], JobSpec.model_validate(record["spec"]), record["parameters"])


def fixed_policy(model: GrowthModel, policy_spec, source: PolicySource | None = None) -> Policy:
    """Return the consumption rule c(k, log z) that a policy_evaluation spec names.

    policy_spec is a savings_rate, closed_form or job policy; a job policy needs the
    source that the worker read from the store.
    """
    if policy_spec.kind == "closed_form":
        if not model.has_closed_form:
            raise ValueError("policy 'closed_form' needs gamma = 1 and delta = 1; "
                             f"got gamma = {model.gamma}, delta = {model.delta}")
        return lambda k, logz: model.cash_on_hand(k, logz) - model.closed_form_capital(k, logz)

    if policy_spec.kind == "job":
        if source is None or source.job_id != policy_spec.job_id:
            raise ValueError(f"the policy of job {policy_spec.job_id} was not loaded; a policy "
                             f"by job id is evaluated through the service, which reads it from the store")
        check_source_model(model, source)
        return rebuild_policy(source)

    rate = policy_spec.rate if policy_spec.rate is not None else model.kss / model.cash_on_hand(model.kss, 0.0)
    return lambda k, logz: (1 - rate) * model.cash_on_hand(k, logz)


def check_source_model(model: GrowthModel, source: PolicySource) -> None:
    """Raise ValueError unless the source job solved the growth model with model's parameters."""
    if source.spec.model.name != "growth":
        raise ValueError(f"job {source.job_id} solved the {source.spec.model.name!r} model; "
                         f"policy_evaluation takes the policy of a 'growth' job")
    if GrowthModel.from_params(source.spec.model.params) != model:
        raise ValueError(f"job {source.job_id} solved the growth model with other parameters "
                         f"({source.spec.model.params.model_dump()}); evaluate its policy on the same "
                         f"model.params")


def rebuild_policy(source: PolicySource) -> Policy:
    """Return the consumption policy a finished growth job fitted, from its stored parameters.

    Raises ValueError when the parameters do not describe a policy of this kind (for
    example a record written before consumption coefficients were stored).
    """
    spec, parameters = source.spec, source.parameters
    model = GrowthModel.from_params(spec.model.params)
    basis_spec = spec.method.basis
    residual = spec.method.residual

    if basis_spec.kind == "nn":
        from solvers.nn import build_policy

        return build_policy(parameters)

    if residual.kind == "policy_evaluation":
        nested = parameters.get("source")
        return fixed_policy(model, residual.policy, PolicySource.from_record(nested) if nested else None)

    if "theta" not in parameters:
        raise ValueError(f"job {source.job_id} stored no consumption coefficients ('theta'); "
                         f"stored keys: {sorted(parameters)}")
    basis = build_basis(model, basis_spec, spec.seed)
    stored = np.asarray(parameters["bounds"], dtype=float)
    if stored.shape != basis.bounds.shape or not np.allclose(stored, basis.bounds, rtol=BOUNDS_RTOL, atol=0):
        raise ValueError(f"job {source.job_id}: stored domain {stored.tolist()} differs from the "
                         f"rebuilt {basis.bounds.tolist()}; the record does not match this version")
    theta = np.asarray(parameters["theta"], dtype=float)
    if theta.shape != (basis.n_params,):
        raise ValueError(f"job {source.job_id}: {theta.size} stored coefficients, the basis has "
                         f"{basis.n_params}")
    return linear_policy(basis, theta)
