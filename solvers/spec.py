"""Job specification: which model to solve, with which method, on which device.

A spec is plain, versioned data. Every field has a default except where the choice
is the point of the job (the basis kind), and every bound is checked here so that a
bad spec is rejected before it reaches a worker, with the field path, the value and
the valid range in the message.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

SPEC_VERSION = 1


def bounded(
    lower: float | None,
    upper: float | None,
    *,
    lower_open: bool = False,
    upper_open: bool = False,
    integer: bool = False,
    strict: bool = True,
) -> Any:
    """Build a number type whose error message states the whole valid range.

    pydantic's own `gt`/`le` messages name one bound only. A researcher fixing a spec
    wants both, so the check is done here and the bounds are copied into the JSON schema.
    With strict (the default for specs) a string or a boolean is not a number, and an
    integer setting takes no fractional value; query parameters, which arrive as
    strings, use strict=False.
    """
    low_sign = "<" if lower_open else "<="
    high_sign = "<" if upper_open else "<="
    parts = []
    if lower is not None:
        parts.append(f"{_format_bound(lower)} {low_sign}")
    parts.append("value")
    if upper is not None:
        parts.append(f"{high_sign} {_format_bound(upper)}")
    valid = " ".join(parts)

    def check(value: float) -> float:
        if not integer and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number; valid range is {valid}")
        too_low = lower is not None and (value <= lower if lower_open else value < lower)
        too_high = upper is not None and (value >= upper if upper_open else value > upper)
        if too_low or too_high:
            raise ValueError(f"{value!r} is out of range; valid range is {valid}")
        return value

    schema: dict[str, float] = {}
    if lower is not None:
        schema["exclusiveMinimum" if lower_open else "minimum"] = lower
    if upper is not None:
        schema["exclusiveMaximum" if upper_open else "maximum"] = upper
    if strict:
        base = StrictInt if integer else StrictFloat
    else:
        base = int if integer else float
    return Annotated[base, AfterValidator(check), Field(json_schema_extra=schema)]


def _format_bound(bound: float) -> str:
    """Write a bound as an integer when it is one (4294967295, not 4.29497e+09)."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def check_label(label: str | None) -> str | None:
    """Reject control and format characters, which would break tables and logs."""
    if label is None:
        return None
    for position, char in enumerate(label):
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise ValueError(f"label contains the control character U+{ord(char):04X} at "
                             f"position {position}; use printable text only")
    return label


class StrictModel(BaseModel):
    """Base for spec parts: unknown keys are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


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


class BasisSettings(StrictModel):
    """Settings every basis shares."""

    domain_margin: bounded(0, 1) = Field(
        0.2, description="Widening of the approximation domain beyond the state box, as a "
        "share of the box's half-width on each side, so that simulated paths that leave "
        "the box are not extrapolated. Capital's lower end never goes below half the box's.")


class ChebyshevBasis(BasisSettings):
    """Tensor-product Chebyshev polynomials, collocated at the Chebyshev zeros."""

    kind: Literal["chebyshev"]
    degree: bounded(1, 40, integer=True) = Field(
        10, description="Polynomial degree in each state; K = (degree + 1)^2 coefficients.")


class SplineBasis(BasisSettings):
    """Tensor-product B-splines with uniform interior knots, collocated at the
    Greville abscissae."""

    kind: Literal["spline"]
    order: Literal[3] = Field(
        3, description="Polynomial degree of each piece; 3 is cubic.")
    # NOTE: the cap keeps the sparse Newton solve within minutes and about 1 GB: n_basis
    # 160 took 58 s and 0.7 GB on a 2-core VM, and 400 grew past 4.8 GB before its first step.
    n_basis: bounded(4, 150, integer=True) = Field(
        30, description="Basis functions per state; K = n_basis^2 coefficients.")


class NNBasis(BasisSettings):
    """Multilayer perceptron whose output is the share of cash on hand consumed,
    so every policy it can represent is feasible."""

    kind: Literal["nn"]
    domain_margin: bounded(0, 1) = Field(
        0.5, description="Widening of the approximation domain beyond the state box, as a "
        "share of the box's half-width on each side. Wider than for the linear bases "
        "because the network is trained only on sampled states in this domain, and the "
        "evaluator's 10,000-period path reaches log z about 4 standard deviations from 0 "
        "under the default calibration. Capital's lower end never goes below half the box's.")
    width: bounded(1, 1024, integer=True) = Field(64, description="Neurons per hidden layer.")
    depth: bounded(1, 8, integer=True) = Field(2, description="Number of hidden layers.")
    activation: Literal["tanh", "relu", "sigmoid", "silu"] = "tanh"


Basis = Annotated[Union[ChebyshevBasis, SplineBasis, NNBasis], Field(discriminator="kind")]


class NewtonAlgorithm(StrictModel):
    """Newton's method on the square collocation system, with a backtracking line
    search on the residual norm and an analytic Jacobian."""

    kind: Literal["newton"]
    tol: bounded(0, 1e-2, lower_open=True) = Field(
        1e-13, description="Stop when the largest absolute residual at the nodes is below this.")
    max_iterations: bounded(1, 1000, integer=True) = 50


class AdamAlgorithm(StrictModel):
    """Adam on mini-batches of squared Euler residuals at sampled states."""

    kind: Literal["adam"]
    steps: bounded(1, 10_000_000, integer=True) = Field(
        3000, description="Number of optimizer steps.")
    batch_size: bounded(8, 1_000_000, integer=True) = Field(
        256, description="States per mini-batch.")
    learning_rate: bounded(0, 1, lower_open=True) = Field(
        3e-3, description="Initial learning rate; it decays by cosine annealing to 1% of it.")
    ergodic_share: bounded(0, 1) = Field(
        0.5, description="Share of each batch drawn from states simulated under the "
        "current policy rather than uniformly from the box.")


Algorithm = Annotated[Union[NewtonAlgorithm, AdamAlgorithm], Field(discriminator="kind")]

# Which algorithms fit which basis; the first is the default.
VALID_ALGORITHMS = {"chebyshev": ("newton",), "spline": ("newton",), "nn": ("adam",)}


class MethodSpec(StrictModel):
    """How the model is solved: the parameterization of the policy and the algorithm."""

    basis: Basis
    algorithm: Algorithm | None = Field(
        None, description="Defaults to the first valid algorithm for the basis kind.")
    quadrature_nodes: bounded(2, 15, integer=True) = Field(
        10, description="Gauss-Hermite nodes for the expectation over eps used by the "
        "solver (the accuracy evaluator always uses more).")

    @model_validator(mode="before")
    @classmethod
    def fill_algorithm(cls, data: Any) -> Any:
        """Give the basis kind's default algorithm when none is named."""
        if not isinstance(data, dict) or data.get("algorithm") is not None:
            return data
        basis = data.get("basis")
        kind = basis.get("kind") if isinstance(basis, dict) else getattr(basis, "kind", None)
        if kind in VALID_ALGORITHMS:
            return {**data, "algorithm": {"kind": VALID_ALGORITHMS[kind][0]}}
        return data

    @model_validator(mode="after")
    def check_combination(self) -> "MethodSpec":
        """Reject an algorithm that does not apply to the basis."""
        valid = VALID_ALGORITHMS[self.basis.kind]
        if self.algorithm.kind not in valid:
            raise ValueError(
                f"algorithm.kind {self.algorithm.kind!r} does not apply to basis "
                f"{self.basis.kind!r}; valid choices: {', '.join(valid)}")
        return self


class JobSpec(StrictModel):
    """One solve job: a model, a method, a seed, a device and a time limit."""

    schema_version: Literal[1] = SPEC_VERSION
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
        if basis.kind == "chebyshev":
            return f"chebyshev deg {basis.degree}"
        if basis.kind == "spline":
            return f"spline n {basis.n_basis}"
        return f"nn {basis.depth}x{basis.width} {basis.activation}"
