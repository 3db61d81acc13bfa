"""Job specification: which model to solve, with which method, on which device.

A spec is plain, versioned data. Every field has a default except where the choice
is the point of the job (the basis kind). Every bound is checked here, so a bad spec
is rejected before it reaches a worker, with the field path, the value and the valid
range in the message.
"""

from __future__ import annotations

import functools

import math
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Field, model_validator

from solvers.methods import (  # noqa: F401  (re-exported: the spec's public names)
    AdamAlgorithm, Algorithm, Basis, ChebyshevBasis, MethodSpec, NewtonAlgorithm, NNBasis,
    SplineBasis)
from solvers.schema import StrictModel, bounded, check_label  # noqa: F401

SPEC_VERSION = 2

# Max spline functions per state for the growth model. Its tensor basis has
# K = n_basis^2 functions, and its sparse Newton solve took 58 s and 0.7 GB at n_basis
# 160 on a 2-core VM. The schema allows more because the savings model's bases are 1-D.
GROWTH_SPLINE_N_BASIS_MAX = 150


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


class IncomeAR1(StrictModel):
    """Log income `x' = rho x + eps`, `eps ~ N(0, sigma_eps^2)`, mean 0, discretised into a
    Markov chain whose income levels exp(x) are scaled to a stationary mean of 1."""

    kind: Literal["ar1"]
    rho: bounded(-1, 1, lower_open=True, upper_open=True) = Field(0.9, description="Persistence of log income.")
    sigma_eps: bounded(0, 2, lower_open=True) = Field(
        0.1, description="Standard deviation of the innovation to log income (not of log income).")
    n_states: bounded(2, 51, integer=True) = Field(5, description="Income states of the chain.")
    method: Literal["rouwenhorst", "tauchen"] = "rouwenhorst"
    tauchen_m: bounded(0, 10, lower_open=True) = Field(
        3.0, description="Tauchen only: the grid spans +-tauchen_m unconditional standard deviations.")


class IncomeChain(StrictModel):
    """An explicit income chain: levels y (n,) and transition P (n, n) with rows summing to 1."""

    kind: Literal["chain"]
    levels: list[bounded(0, None, lower_open=True)] = Field(
        description="Income in each state, used as given.", min_length=1, max_length=51)
    transition: list[list[bounded(0, 1)]] = Field(
        description="P[i][j] is the probability of state j next period given state i.")

    @model_validator(mode="after")
    def check_shape(self) -> "IncomeChain":
        """Require an n x n transition matrix for n income levels."""
        n = len(self.levels)
        if len(self.transition) != n:
            raise ValueError(f"transition has {len(self.transition)} rows for {n} income levels; "
                             f"it must be {n} x {n}")
        for row, entries in enumerate(self.transition):
            if len(entries) != n:
                raise ValueError(f"transition row {row} has {len(entries)} entries; it must have {n}")
        return self


Income = Annotated[Union[IncomeAR1, IncomeChain], Field(discriminator="kind")]


class SavingsParams(StrictModel):
    """Calibration of the income-fluctuation (savings) model with a borrowing limit.

    Cash on hand a is split into consumption c and savings `a - c >= -b`. Next period
    `a' = R (a - c) + y'`, with income y' from a Markov chain. Utility is CRRA with gamma.
    """

    R: bounded(0, 2, lower_open=True) = Field(1.01, description="Gross interest rate.")
    beta: bounded(0, 1, lower_open=True, upper_open=True) = Field(
        0.96, description="Discount factor; beta R < 1 is needed for a stationary distribution.")
    gamma: bounded(0, 20, lower_open=True) = Field(1.5, description="Coefficient of relative risk aversion.")
    b: bounded(0, 100) = Field(0.0, description="Borrowing limit: savings a - c >= -b.")
    income: Income = Field(default_factory=lambda: IncomeAR1(kind="ar1"))
    a_max_multiple: bounded(1, 1000, lower_open=True) = Field(
        20.0, description="Upper end of the cash-on-hand box, in multiples of mean income.")

    @model_validator(mode="after")
    def check_model(self) -> "SavingsParams":
        """Build the model once so that its checks (beta R < 1, the chain's rows, the
        natural borrowing limit) reject a bad calibration at submission."""
        build_savings_model(self)
        return self


def build_savings_model(params: SavingsParams):
    """Return the `SavingsModel` a validated calibration describes."""
    from solvers.savings import SavingsModel

    common = {"R": params.R, "beta": params.beta, "gamma": params.gamma, "b": params.b,
              "a_max_multiple": params.a_max_multiple}
    income = params.income
    if income.kind == "chain":
        return SavingsModel.from_chain(income.levels, income.transition, **common)
    return SavingsModel.from_ar1(rho=income.rho, sigma_eps=income.sigma_eps, n_states=income.n_states,
                                 method=income.method, tauchen_m=income.tauchen_m, **common)


class SavingsModelSpec(StrictModel):
    """The savings model and its calibration."""

    name: Literal["savings"]
    params: SavingsParams = Field(default_factory=SavingsParams)


class MultiCountryParams(StrictModel):
    """Calibration of the N-country real business cycle model (a planner pooling N countries).

    Country j has capital k_j and productivity `log a_j' = rho log a_j + eps_j`, with
    `eps ~ N(0, sigma^2 (I + 1 1'))`. Output is `A a_j k_j^alpha`, with A set so that
    steady-state capital is 1. One world resource constraint includes the adjustment cost
    `(phi / 2) k (k'/k - 1)^2`, and utility is CRRA with gamma per country and welfare weights.
    The state has d = 2N entries. The defaults are those of `MultiCountryModel`.
    """

    countries: bounded(1, 100, integer=True) = Field(
        2, description="Number of countries N; the state has d = 2N entries.")
    alpha: bounded(0, 1, lower_open=True, upper_open=True) = Field(
        0.36, description="Capital share in production, 0 < alpha < 1.")
    beta: bounded(0, 1, lower_open=True, upper_open=True) = Field(
        0.99, description="Discount factor, 0 < beta < 1.")
    delta: bounded(0, 1, lower_open=True) = Field(
        0.025, description="Depreciation rate, 0 < delta <= 1; delta = 1 with gamma = 1 and "
        "phi = 0 has a closed form.")
    rho: bounded(-1, 1, lower_open=True, upper_open=True) = Field(
        0.95, description="Persistence of log productivity.")
    sigma: bounded(0, 0.5, lower_open=True) = Field(
        0.01, description="Standard deviation of each country's own innovation; the common "
        "innovation has the same standard deviation.")
    phi: bounded(0, 100) = Field(0.0, description="Capital adjustment cost parameter, phi >= 0.")
    gamma: bounded(0, 20, lower_open=True) | list[bounded(0, 20, lower_open=True)] = Field(
        1.0, description="Relative risk aversion: one value, or one per country (N values).")
    weights: list[bounded(0, None, lower_open=True)] | None = Field(
        None, description="Welfare weights, one per country, with largest / smallest at most "
        "1e6; only their ratios matter. null gives every country the same steady-state "
        "consumption.")
    k_box: tuple[bounded(0, 1, lower_open=True, upper_open=True),
                 bounded(1, 10, lower_open=True)] = Field(
        (0.8, 1.2), description="Capital interval of the state box relative to steady-state capital.")
    loga_box_sd: bounded(0.1, 10) = Field(
        3.0, description="Half-width of each log-productivity interval, in unconditional "
        "standard deviations, 0.1 to 10. Narrower boxes put next period's productivity "
        "nodes so far outside that the polynomial's extrapolation breaks down (0.001 "
        "diverged).")

    @model_validator(mode="after")
    def check_model(self) -> "MultiCountryParams":
        """Build the model once, so that per-country lists of the wrong length are rejected."""
        from solvers.multicountry_jobs import build_model

        build_model(self)
        return self


class MultiCountryModelSpec(StrictModel):
    """The N-country model and its calibration."""

    name: Literal["multi_country"]
    params: MultiCountryParams = Field(default_factory=MultiCountryParams)


ModelSpec = Annotated[Union[GrowthModelSpec, SavingsModelSpec, MultiCountryModelSpec],
                      Field(discriminator="name")]

# Method parts that only the multi_country model's solvers have.
MULTI_COUNTRY_ONLY = {"algorithm": ("gssa",), "product": ("smolyak",)}

# What the savings model's solver supports.
SAVINGS_METHODS = {"basis": ("spline", "chebyshev", "monomial"), "residual": ("euler",),
                   "objective": ("collocation", "least_squares"),
                   "algorithm": ("newton", "gauss_newton", "levenberg_marquardt")}


class JobSpec(StrictModel):
    """One solve job: a model, a method, a seed, a device and a time limit."""

    schema_version: Literal[1, 2] = Field(
        SPEC_VERSION, description="Version of this schema; version 1 specs are read and "
        "upgraded to the current version.")
    label: Annotated[str | None, AfterValidator(check_label)] = Field(
        None, max_length=200, description="Free text shown in tables; printable characters only.")
    model: ModelSpec = Field(default_factory=GrowthModelSpec)
    method: MethodSpec
    seed: bounded(0, 2**32 - 1, integer=True) = Field(
        0, description="Seeds every random draw of the solver (network weights, batches).")
    device: Literal["cpu", "gpu", "auto"] = Field(
        "cpu", description="Where the job runs. 'gpu' and 'auto' apply to the nn basis "
        "only. 'auto' sends the job to the gpu queue when a worker consumes it, and uses "
        "a CUDA device when the worker that runs it has one.")
    time_limit_s: bounded(0, 86_400, lower_open=True) = Field(
        600.0, description="Wall-clock limit of the job in seconds; past it the job "
        "ends as timed_out.")

    @model_validator(mode="before")
    @classmethod
    def upgrade(cls, data: Any) -> Any:
        """Name the growth model when a spec leaves the name out, fill the multi_country
        model's own default objective and algorithm, and upgrade a version 1
        spec: its adam settings `batch_size` and `ergodic_share` belong to the
        `sampled_mse` objective since version 2."""
        if isinstance(data, dict) and isinstance(data.get("model"), dict) and "name" not in data["model"]:
            data = {**data, "model": {"name": "growth", **data["model"]}}
        if isinstance(data, dict) and isinstance(data.get("model"), dict) \
                and data["model"].get("name") == "multi_country" and isinstance(data.get("method"), dict):
            from solvers.multicountry_jobs import default_parts

            data = {**data, "method": default_parts(data["method"])}
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
    def check_model_method(self) -> "JobSpec":
        """Reject method parts the model's solver does not have, and kink knots without a kink."""
        basis = self.method.basis
        if self.model.name == "savings":
            for part, valid in SAVINGS_METHODS.items():
                kind = getattr(self.method, part).kind
                if kind not in valid:
                    raise ValueError(f"method.{part}.kind {kind!r} is not available for the savings "
                                     f"model; valid choices: {', '.join(valid)}")
            if getattr(basis, "product", "tensor") != "tensor":
                raise ValueError("the savings model takes product 'tensor' only (one state in a)")
            from solvers.savings_solver import validate_method

            validate_method(build_savings_model(self.model.params), self.method)
        elif self.model.name == "multi_country":
            from solvers.multicountry_jobs import build_model, validate_method

            validate_method(build_model(self.model.params), self.method)
            return self
        if self.model.name != "multi_country":
            self._reject_multi_country_parts()
        if self.model.name != "growth":
            return self
        if basis.kind == "spline" and basis.knots == "kink":
            raise ValueError("knots 'kink' places knots at a borrowing-limit kink, which only the "
                             "savings model has; use uniform knots (null) or a list per state")
        elif basis.kind == "spline" and basis.n_basis > GROWTH_SPLINE_N_BASIS_MAX:
            raise ValueError(f"method.basis.n_basis = {basis.n_basis} is out of range for the "
                             f"{self.model.name} model; valid range is 4 <= n_basis <= "
                             f"{GROWTH_SPLINE_N_BASIS_MAX} (up to 600 for the savings model)")
        elif basis.kind == "spline" and basis.knots is not None:
            # The knots must fit the approximation domain, which the calibration sets.
            from solvers.collocation import build_basis
            from solvers.growth import GrowthModel

            build_basis(GrowthModel.from_params(self.model.params), basis)
        return self

    def _reject_multi_country_parts(self) -> None:
        """Raise ValueError for a method part that only the multi_country model's solvers have."""
        method = self.method
        if method.algorithm.kind in MULTI_COUNTRY_ONLY["algorithm"] or (
                method.algorithm.kind == "time_iteration" and method.objective.kind == "least_squares"):
            raise ValueError(f"algorithm {method.algorithm.kind!r} with objective "
                             f"{method.objective.kind!r} is available for the multi_country model "
                             f"only; the {self.model.name} model takes the other algorithms of "
                             f"`eulerbench catalogue`")
        if getattr(method.basis, "variables", "auto") == "logs":
            raise ValueError(f"method.basis.variables 'logs' is available for the multi_country model "
                             f"only; the {self.model.name} model takes 'levels'")
        if getattr(method.basis, "product", "tensor") in MULTI_COUNTRY_ONLY["product"]:
            raise ValueError(f"product 'smolyak' is available for the multi_country model only; "
                             f"valid choices for the {self.model.name} model: tensor, complete")
        if method.integration is not None:
            raise ValueError(f"method.integration applies to the multi_country model only; the "
                             f"{self.model.name} model uses quadrature_nodes Gauss-Hermite nodes")

    @model_validator(mode="after")
    def check_fixed_policy(self) -> "JobSpec":
        """Reject evaluating the closed-form policy of a model that has none."""
        residual = self.method.residual
        params = self.model.params
        if self.model.name != "growth":
            return self
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
        if basis.kind == "chebyshev" and basis.product == "smolyak":
            name = f"smolyak level {basis.level}"
        elif basis.kind in ("chebyshev", "monomial"):
            name = f"{basis.kind} deg {basis.degree}" + (" complete" if basis.product == "complete" else "")
        elif basis.kind == "spline":
            name = f"spline n {basis.n_basis}" + (f" order {basis.order}" if basis.order != 3 else "")
        elif basis.kind == "grid":
            name = f"grid {basis.points}"
        else:
            name = f"nn {basis.depth}x{basis.width} {basis.activation}"
        if getattr(basis, "variables", "auto") == "logs":
            name += " logs"
        defaults = _default_kinds(self.model.name, basis.kind, getattr(basis, "product", None))
        parts = [part.kind for part, default in zip((self.method.residual, self.method.objective,
                                                     self.method.algorithm), defaults)
                 if part.kind != default]
        return " ".join([name, *parts])


@functools.lru_cache(maxsize=64)
def _default_kinds(model: str, basis: str, product: str | None) -> tuple[str, str, str]:
    """Return the default residual, objective and algorithm kinds of a basis on a model."""
    block: dict[str, Any] = {"basis": {"kind": basis}}
    if model == "multi_country":
        from solvers.multicountry_jobs import default_parts

        block = default_parts({"basis": {"kind": basis, **({"product": product} if product else {})}})
    defaults = MethodSpec.model_validate(block)
    return defaults.residual.kind, defaults.objective.kind, defaults.algorithm.kind


def describe_catalogue() -> dict[str, Any]:
    """Return every model and method part with its settings, the valid combinations and
    the defaults: what `GET /v1/catalogue` serves and `eulerbench catalogue` prints."""
    from solvers.methods import describe_methods, describe_part

    from solvers.multicountry_jobs import ALGORITHMS as MC_ALGORITHMS, METHODS as MC_METHODS, OBJECTIVES

    savings = describe_part(SavingsParams)
    savings["methods"] = dict(SAVINGS_METHODS)
    multi_country = describe_part(MultiCountryParams)
    multi_country["methods"] = {
        **MC_METHODS,
        "objective": {family: list(objectives) for family, objectives in OBJECTIVES.items()},
        "algorithm": {objective: list(algorithms) for objective, algorithms in MC_ALGORITHMS.items()},
        "integration": ["default", "gauss_hermite", "m1", "m2", "monte_carlo", "all_in_one (nn only)"],
    }
    return {"models": {"growth": describe_part(GrowthParams), "savings": savings,
                       "multi_country": multi_country}, **describe_methods()}
