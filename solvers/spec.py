"""Job specification: which model to solve, with which method, on which device.

A spec is plain, versioned data. Every field has a default except where the choice
is the point of the job (the basis kind), and every bound is checked here so that a
bad spec is rejected before it reaches a worker, with the field path, the value and
the valid range in the message.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from solvers.methods import (  # noqa: F401  (re-exported: the spec's public names)
    AdamAlgorithm, Algorithm, Basis, ChebyshevBasis, MethodSpec, NewtonAlgorithm, NNBasis,
    SplineBasis)
from solvers.schema import StrictModel, bounded, check_label  # noqa: F401

SPEC_VERSION = 2


class GrowthParams(StrictModel):
    """Calibration of the one-sector stochastic growth model.

    Technology `y = z k^alpha`, law of motion `k' = (1 - delta) k + y - c`,
    productivity `log z' = rho log z + sigma eps` with `eps ~ N(0, 1)`, and CRRA
    utility `u(c) = c^(1 - gamma) / (1 - gamma)` (log utility at gamma = 1).
    """

    alpha: bounded(0, 1, lower_open=True, upper_open=True) = Field(
        0.36, description="Capital share in production, 0 < alpha < 1.")
    beta: bounded(0, 1, lower_open=True, upper_open=True) = Field(
        0.99, description="Discount factor, 0 < beta < 1.")
    delta: bounded(0, 1, lower_open=True) = Field(
        0.025, description="Depreciation rate per period, 0 < delta <= 1.")
    gamma: bounded(0, 20, lower_open=True) = Field(
        2.0, description="Coefficient of relative risk aversion; 1 is log utility.")
    rho: bounded(0, 1, upper_open=True) = Field(
        0.95, description="Persistence of log productivity, 0 <= rho < 1.")
    sigma: bounded(0, 0.5, lower_open=True) = Field(
        0.01, description="Standard deviation of the innovation eps to log productivity "
        "(not of log z itself, whose unconditional standard deviation is "
        "sigma / sqrt(1 - rho^2)).")
    k_box: tuple[bounded(0, 1, lower_open=True, upper_open=True),
                 bounded(1, 10, lower_open=True)] = Field(
        (0.8, 1.2), description="Capital interval of the state box, as multiples of "
        "steady-state capital: lower in (0, 1), upper in (1, 10].")
    logz_box_sd: bounded(0, 10, lower_open=True) = Field(
        3.0, description="Half-width of the log-productivity interval of the state box, "
        "in unconditional standard deviations of log z.")


    @model_validator(mode="after")
    def check_steady_state(self) -> "GrowthParams":
        """Reject calibrations whose steady-state capital is not a usable number."""
        kss = _steady_state_capital(self.alpha, self.beta, self.delta)
        if not (math.isfinite(kss) and 1e-8 < kss < 1e8):
            raise ValueError(
                f"steady-state capital (alpha / (1 / beta - 1 + delta))^(1 / (1 - alpha)) is "
                f"{kss:g} for alpha={self.alpha}, beta={self.beta}, delta={self.delta}; "
                f"it must lie between 1e-8 and 1e8, so choose a smaller alpha or other values")
        return self


def _steady_state_capital(alpha: float, beta: float, delta: float) -> float:
    """Return steady-state capital, or inf when the power overflows."""
    try:
        return (alpha / (1 / beta - 1 + delta)) ** (1 / (1 - alpha))
    except OverflowError:
        return math.inf


class GrowthModelSpec(StrictModel):
    """The growth model and its calibration."""

    name: Literal["growth"] = "growth"
    params: GrowthParams = Field(default_factory=GrowthParams)


class JobSpec(StrictModel):
    """One solve job: a model, a method, a seed, a device and a time limit."""

    schema_version: Literal[1, 2] = Field(
        SPEC_VERSION, description="Version of this schema; version 1 specs are read and "
        "upgraded to the current version.")
    label: Annotated[str | None, AfterValidator(check_label)] = Field(
        None, max_length=200, description="Free text shown in tables; printable characters only.")
    model: GrowthModelSpec = Field(default_factory=GrowthModelSpec)
    method: MethodSpec
    seed: bounded(0, 2**32 - 1, integer=True) = Field(
        0, description="Seeds every random draw of the solver (network weights, batches).")
    device: Literal["cpu", "gpu", "auto"] = Field(
        "cpu", description="Where the job runs. 'gpu' and 'auto' apply to the nn basis "
        "only; 'auto' uses a CUDA device when the worker has one.")
    time_limit_s: bounded(0, 86_400, lower_open=True) = Field(
        600.0, description="Wall-clock limit of the job in seconds; past it the job "
        "ends as timed_out.")

    @model_validator(mode="before")
    @classmethod
    def upgrade(cls, data: Any) -> Any:
        """Upgrade a version 1 spec: its adam settings `batch_size` and `ergodic_share`
        belong to the `sampled_mse` objective since version 2."""
        if not isinstance(data, dict) or data.get("schema_version") != 1:
            return data
        data = {**data, "schema_version": SPEC_VERSION}
        method = data.get("method")
        algorithm = method.get("algorithm") if isinstance(method, dict) else None
        if isinstance(algorithm, dict) and algorithm.get("kind") == "adam":
            moved = {key: algorithm[key] for key in ("batch_size", "ergodic_share") if key in algorithm}
            kept = {key: value for key, value in algorithm.items() if key not in moved}
            objective = {"kind": "sampled_mse", **(method.get("objective") or {}), **moved}
            data["method"] = {**method, "algorithm": kept, "objective": objective}
        return data

    @model_validator(mode="after")
    def check_fixed_policy(self) -> "JobSpec":
        """Reject evaluating the closed-form policy of a model that has none."""
        residual = self.method.residual
        params = self.model.params
        if residual.kind == "policy_evaluation" and residual.policy.kind == "closed_form" \
                and not (params.gamma == 1 and params.delta == 1):
            raise ValueError(f"method.residual.policy 'closed_form' needs gamma = 1 and delta = 1; "
                             f"got gamma = {params.gamma}, delta = {params.delta}; valid choices "
                             f"here: savings_rate")
        return self

    @model_validator(mode="after")
    def check_device(self) -> "JobSpec":
        """Reject a GPU request for a basis that runs on the CPU only."""
        if self.device != "cpu" and self.method.basis.kind != "nn":
            raise ValueError(
                f"device {self.device!r} applies to the 'nn' basis only; "
                f"basis {self.method.basis.kind!r} runs on 'cpu'")
        return self

    def summary(self) -> str:
        """Return a one-line name of the method, for tables and logs."""
        basis = self.method.basis
        if basis.kind in ("chebyshev", "monomial"):
            name = f"{basis.kind} deg {basis.degree}" + (" complete" if basis.product == "complete" else "")
        elif basis.kind == "spline":
            name = f"spline n {basis.n_basis}" + (f" order {basis.order}" if basis.order != 3 else "")
        elif basis.kind == "grid":
            name = f"grid {basis.points}"
        else:
            name = f"nn {basis.depth}x{basis.width} {basis.activation}"
        defaults = MethodSpec.model_validate({"basis": {"kind": basis.kind}})
        parts = [part.kind for part, default in ((self.method.residual, defaults.residual),
                                                  (self.method.objective, defaults.objective),
                                                  (self.method.algorithm, defaults.algorithm))
                 if part.kind != default.kind]
        return " ".join([name, *parts])


def describe_catalogue() -> dict[str, Any]:
    """Return every model and method part with its settings, the valid combinations and
    the defaults: what `GET /v1/catalogue` serves and `eulerbench catalogue` prints."""
    from solvers.methods import describe_methods, describe_part

    return {"models": {"growth": describe_part(GrowthParams)}, **describe_methods()}
