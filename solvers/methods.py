"""The method catalogue: parameterizations, residuals, objectives and algorithms.

A solve is three steps, each a swappable part. The residual R(s; theta) measures how far
a parameterized policy is from solving the model at a state (step 1). The objective
turns residuals at many states into a finite system or a loss (step 2). The algorithm
solves that system or minimises that loss (step 3). Not every
combination makes sense, so this module also states which ones are valid and which
are the defaults, and every rejection lists the valid choices.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from solvers.schema import StrictModel, bounded

NODE_FAMILIES = ("chebyshev_zeros", "chebyshev_extrema", "equispaced", "random")
# Largest K for a Jacobian or Hessian by automatic differentiation. Both push K tangent
# vectors through the residual, so their cost grows like K^2 M: one Hessian at K = 441 and
# M = 900 took 13 s of CPU time on one thread of a loaded 2-core VM.
AUTODIFF_MAX_PARAMS = 500


class BasisSettings(StrictModel):
    """Settings every basis shares."""

    domain_margin: bounded(0, 1) = Field(
        0.2, description="Widening of the approximation domain beyond the state box, as a "
        "share of the box's half-width on each side, so that simulated paths that leave "
        "the box are not extrapolated. Capital's lower end never goes below half the box's.")


class LinearBasisSettings(BasisSettings):
    """Settings of the bases whose policy is linear in its coefficients theta."""

    variables: Literal["auto", "levels", "logs"] = Field(
        "auto", description="'levels' fits k' as a function of (k, log a), and 'logs' fits "
        "log k' as a function of (log k, log a), in which the one-country closed form "
        "(delta = 1, log utility) is linear (multi_country model only). 'auto': logs at "
        "N = 1, where they gave the smaller path errors for most bases, and levels from "
        "N = 2, where each k' depends on world output, a sum of capital levels; levels for "
        "the other models.")


class PolynomialSettings(LinearBasisSettings):
    """Settings of the global polynomial bases."""

    degree: bounded(1, 40, integer=True) = Field(
        10, description="Polynomial degree in each state (tensor product) or in total (complete).")
    product: Literal["tensor", "complete", "smolyak"] = Field(
        "tensor", description="'tensor': all products of the one-state polynomials, "
        "K = (degree + 1)^d. 'complete': only products of total degree <= degree, "
        "K = C(d + degree, d); it has no square grid of nodes, so it takes least_squares "
        "or galerkin. 'smolyak' (chebyshev, multi_country model only): the Smolyak sparse "
        "grid of Chebyshev extrema of `level`, interpolated at its K nodes (collocation).")
    level: bounded(1, 3, integer=True) | list[bounded(1, 3, integer=True)] = Field(
        2, description="product 'smolyak' only: the isotropic Smolyak level mu (K = 2d^2 + "
        "2d + 1 at mu = 2), or one level per state (anisotropic grid).")
    nodes: Literal[NODE_FAMILIES] = Field(  # type: ignore[valid-type]
        "chebyshev_zeros", description="Family of the collocation and least-squares points "
        "in each state; 'random' draws are seeded by the job's seed.")


    @model_validator(mode="after")
    def check_smolyak(self) -> "PolynomialSettings":
        """Reject Smolyak settings on a basis that does not use them."""
        if self.product == "smolyak" and getattr(self, "kind", None) != "chebyshev":
            raise ValueError(f"product 'smolyak' takes basis 'chebyshev' only; got basis "
                             f"{getattr(self, 'kind', None)!r}; valid products here: tensor, complete")
        # Compared with the defaults, not with the fields set, so that a dumped spec reloads.
        if self.level != type(self).model_fields["level"].default and self.product != "smolyak":
            raise ValueError(f"level applies to product 'smolyak' only; got product {self.product!r}")
        if self.degree != type(self).model_fields["degree"].default and self.product == "smolyak":
            raise ValueError("degree does not apply to product 'smolyak', whose level sets the "
                             "polynomials; remove degree or use product 'tensor' or 'complete'")
        return self


class MonomialBasis(PolynomialSettings):
    """Ordinary polynomials: powers u^i of each state mapped to u in [0, 1]."""

    kind: Literal["monomial"]


class ChebyshevBasis(PolynomialSettings):
    """Chebyshev polynomials T_i of each state mapped to [-1, 1]."""

    kind: Literal["chebyshev"]


class SplineBasis(LinearBasisSettings):
    """Tensor-product B-splines, clamped at the domain's ends, with sparse matrices."""

    kind: Literal["spline"]
    order: Literal[1, 2, 3] = Field(
        3, description="Polynomial degree of each piece: 1 linear, 2 quadratic, 3 cubic.")
    # The savings model's bases are 1-D, so 600 per state is cheap there; a growth-model
    # spec has its own lower cap (solvers.spec.GROWTH_SPLINE_N_BASIS_MAX), since its tensor
    # basis has n_basis^2 functions.
    n_basis: bounded(4, 600, integer=True) = Field(
        30, description="Basis functions per state with uniform knots; K = n_basis^d.")
    knots: list[list[float] | None] | Literal["kink"] | None = Field(
        None, description="Interior knots per state, in the state's units, sorted, strictly "
        "inside the approximation domain; a knot may repeat up to `order` times (a kink). "
        "None, or None for a state, means uniform knots with n_basis functions. 'kink' "
        "(savings model only) lets the solver locate the borrowing-limit kinks and put "
        "repeated knots there.")


class GridBasis(BasisSettings):
    """The tabular baseline: values on a uniform tensor grid, linear interpolation between
    grid points (linear B-splines whose knots are the grid points), with sparse matrices."""

    kind: Literal["grid"]
    points: bounded(2, 150, integer=True) = Field(
        50, description="Grid points per state; K = points^d values.")


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


Basis = Annotated[Union[MonomialBasis, ChebyshevBasis, SplineBasis, GridBasis, NNBasis],
                  Field(discriminator="kind")]


class EulerResidual(StrictModel):
    """Unit-free Euler-equation error `beta E[u'(c') R'] / u'(c) - 1` of the consumption policy."""

    kind: Literal["euler"]


class BellmanResidual(StrictModel):
    """Bellman-equation error `V(s) - max_c {u(c) + beta E[V(s')]}` of a value function."""

    kind: Literal["bellman"]


class SavingsRatePolicy(StrictModel):
    """Save a constant share of cash on hand: c = (1 - rate) m."""

    kind: Literal["savings_rate"]
    rate: bounded(0, 1, lower_open=True, upper_open=True) | None = Field(
        None, description="Share of cash on hand saved as next-period capital; None saves "
        "the steady-state share kss / m(kss), which keeps capital at its steady state.")


class ClosedFormPolicy(StrictModel):
    """The model's closed-form policy (log utility with full depreciation only)."""

    kind: Literal["closed_form"]


class JobPolicy(StrictModel):
    """The consumption policy of a finished growth job on the same service, read from the
    store when this job runs. The job must have ended `succeeded` on the same model."""

    kind: Literal["job"]
    job_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="Id of the finished job (32 hex digits).")


FixedPolicy = Annotated[Union[SavingsRatePolicy, ClosedFormPolicy, JobPolicy], Field(discriminator="kind")]


class PolicyEvaluationResidual(StrictModel):
    """Error of the value of a fixed policy, `V(s) - u(c(s)) - beta E[V(s')]`; linear in the
    coefficients of a linear basis, so one linear solve gives its solution."""

    kind: Literal["policy_evaluation"]
    policy: FixedPolicy = Field(default_factory=lambda: SavingsRatePolicy(kind="savings_rate"),
                                description="The policy whose value is computed.")


Residual = Annotated[Union[EulerResidual, BellmanResidual, PolicyEvaluationResidual],
                     Field(discriminator="kind")]


class CollocationObjective(StrictModel):
    """Residuals set to zero at M = K nodes: a square system."""

    kind: Literal["collocation"]


class LeastSquaresObjective(StrictModel):
    """Mean of squared residuals at M > K nodes."""

    kind: Literal["least_squares"]
    oversampling: bounded(1, 100, lower_open=True) = Field(
        2.0, description="M / K: nodes per coefficient (at least; grids round up).")


class GalerkinObjective(StrictModel):
    """Residual made orthogonal to every basis function, the integrals taken by a
    tensor Gauss-Legendre rule over the approximation domain: K equations."""

    kind: Literal["galerkin"]
    extra_points: bounded(0, 40, integer=True) = Field(
        4, description="Gauss-Legendre points per state beyond the basis's functions per state.")


class SampledMSEObjective(StrictModel):
    """Mean squared residual over mini-batches of sampled states, minimised by Adam or SGD:
    the network's weights, or a linear basis's coefficients."""

    kind: Literal["sampled_mse"]
    batch_size: bounded(8, 1_000_000, integer=True) = Field(256, description="States per mini-batch.")
    ergodic_share: bounded(0, 1) = Field(
        0.5, description="Share of each batch drawn from states simulated under the "
        "current policy rather than uniformly from the approximation domain.")


Objective = Annotated[Union[CollocationObjective, LeastSquaresObjective, GalerkinObjective,
                            SampledMSEObjective], Field(discriminator="kind")]


class IterativeSettings(StrictModel):
    """Stopping rule shared by the deterministic algorithms."""

    tol: bounded(0, 1e-2, lower_open=True) = Field(
        1e-13, description="Stop when the largest absolute residual (or, for least squares, "
        "the largest relative change of theta) is below this.")
    max_iterations: bounded(1, 1_000_000, integer=True) = 100


class JacobianSettings(IterativeSettings):
    """Source of the Jacobian for the algorithms that solve with it."""

    # NOTE: the savings model's solver always uses its analytic Jacobian, and JobSpec does
    # not yet reject jacobian 'autodiff' there, so that setting is ignored for savings jobs.
    jacobian: Literal["analytic", "autodiff"] = Field(
        "analytic", description="'analytic': the Jacobian from the formula of the Euler "
        "residual's derivative, dense or sparse like the basis. 'autodiff': the same "
        "Jacobian, dense, by torch forward-mode automatic differentiation in float64; "
        f"Euler residual only, and at most K = {AUTODIFF_MAX_PARAMS} coefficients.")


class NewtonAlgorithm(JacobianSettings):
    """Newton's method on a square system, with a backtracking line search on ||R||_2. On
    a least_squares objective, Newton steps on the loss L = ||R||^2 / (2M) with its full
    Hessian, second derivatives by torch automatic differentiation, taking the
    Gauss-Newton direction where that Hessian is not positive definite."""

    kind: Literal["newton"]
    max_iterations: bounded(1, 1_000_000, integer=True) = 50


class GaussNewtonAlgorithm(JacobianSettings):
    """Gauss-Newton: each step solves the linearised least-squares problem."""

    kind: Literal["gauss_newton"]


class LevenbergMarquardtAlgorithm(JacobianSettings):
    """Levenberg-Marquardt: Gauss-Newton steps damped by mu diag(J'J), mu adapted per step."""

    kind: Literal["levenberg_marquardt"]
    damping: bounded(0, 1e6, lower_open=True) = Field(1e-3, description="Initial damping mu.")
    max_iterations: bounded(1, 1_000_000, integer=True) = 200


class GradientDescentAlgorithm(IterativeSettings):
    """Full-batch gradient descent on L = ||R||^2 / (2M)."""

    kind: Literal["gradient_descent"]
    tol: bounded(0, 1e-2, lower_open=True) = Field(
        1e-8, description="Stop when the largest absolute residual is below this.")
    step_size: bounded(0, 1e6, lower_open=True) | None = Field(
        None, description="Step alpha; None uses 1 / L with L = ||J||_2^2 / M at the first iterate.")
    max_iterations: bounded(1, 1_000_000, integer=True) = 20_000


class TimeIterationAlgorithm(IterativeSettings):
    """Time iteration: solve the Euler equation at each node given the previous policy
    tomorrow, then refit the coefficients to the new consumption values."""

    kind: Literal["time_iteration"]
    tol: bounded(0, 1e-2, lower_open=True) = Field(
        1e-12, description="Stop when the largest relative change of consumption at the nodes is below this.")
    max_iterations: bounded(1, 1_000_000, integer=True) = 5_000
    damping: bounded(0, 1, lower_open=True) = Field(
        1.0, description="Weight on the new policy in each update; 1 is undamped.")


class VFIAlgorithm(IterativeSettings):
    """Value function iteration: apply the Bellman operator at the nodes and refit, with
    optional Howard steps that re-apply the last policy's value update between maximisations."""

    kind: Literal["vfi"]
    tol: bounded(0, 1e-2, lower_open=True) = Field(
        1e-10, description="Stop when the largest change of V at the nodes, relative to max(1, |V|), is below this.")
    max_iterations: bounded(1, 1_000_000, integer=True) = 20_000
    howard_steps: bounded(0, 10_000, integer=True) = Field(
        20, description="Policy-evaluation steps after each maximisation (0 is plain VFI).")


class GSSAAlgorithm(StrictModel):
    """Generalized stochastic simulation algorithm (multi_country model only): simulate
    paths under the current policy, compute Euler targets for k' there, refit them by
    regularised least squares on normalised regressors, and repeat with damping."""

    kind: Literal["gssa"]
    periods: bounded(2, 1_000_000, integer=True) = Field(
        150, description="Simulated periods per path kept as fit points, after burn_in.")
    paths: bounded(1, 10_000, integer=True) = Field(20, description="Paths simulated side by side.")
    burn_in: bounded(0, 1_000_000, integer=True) = Field(200, description="Periods dropped at the start of each path.")
    regularisation: Literal["svd", "ridge"] = Field(
        "svd", description="'svd': truncated SVD; 'ridge': Tikhonov penalty.")
    penalty: bounded(0, 1) = Field(
        1e-8, description="Relative singular-value cut-off ('svd') or ridge parameter per observation.")
    damping: bounded(0, 1, lower_open=True) = Field(
        1.0, description="Share of the way the coefficients move to the refitted ones.")
    tol: bounded(0, 1e-2, lower_open=True) = Field(
        1e-9, description="Stop when the mean relative change of simulated capital, divided "
        "by damping, is below this.")
    max_iterations: bounded(1, 1_000_000, integer=True) = 5_000


class AdamAlgorithm(StrictModel):
    """Adam on mini-batches, with automatic differentiation."""

    kind: Literal["adam"]
    steps: bounded(1, 10_000_000, integer=True) = Field(3000, description="Number of optimizer steps.")
    learning_rate: bounded(0, 1, lower_open=True) = Field(
        3e-3, description="Initial learning rate; it decays by cosine annealing to 1% of it.")


class SGDAlgorithm(StrictModel):
    """Stochastic gradient descent with momentum on mini-batches."""

    kind: Literal["sgd"]
    steps: bounded(1, 10_000_000, integer=True) = Field(3000, description="Number of optimizer steps.")
    learning_rate: bounded(0, 10, lower_open=True) = Field(
        0.05, description="Initial learning rate; it decays by cosine annealing to 1% of it.")
    momentum: bounded(0, 1, upper_open=True) = Field(0.9, description="Momentum coefficient.")


Algorithm = Annotated[Union[NewtonAlgorithm, GaussNewtonAlgorithm, LevenbergMarquardtAlgorithm,
                            GradientDescentAlgorithm, TimeIterationAlgorithm, VFIAlgorithm,
                            AdamAlgorithm, SGDAlgorithm, GSSAAlgorithm], Field(discriminator="kind")]

class IntegrationRule(StrictModel):
    """Rule for the solver's expectation over the shocks (multi_country model only)."""

    kind: Literal["default", "gauss_hermite", "m1", "m2", "monte_carlo", "all_in_one"] = Field(
        "default", description="'default': a Gauss-Hermite product for N <= 2 and M1 above "
        "(M1 for nn). 'gauss_hermite': a product of quadrature_nodes nodes per shock. 'm1' "
        "(2N nodes, degree 3), 'm2' (2N^2 + 1 nodes, degree 5): monomial rules. "
        "'monte_carlo': `draws` draws (fresh per step for nn). 'all_in_one' (nn only): two "
        "independent draws per state whose product of errors estimates the squared error.")
    draws: bounded(1, 100_000, integer=True) = Field(200, description="Draws of 'monte_carlo'.")


# Valid combinations, the first of each tuple being the default.
LINEAR_BASES = ("monomial", "chebyshev", "spline", "grid")
RESIDUALS_FOR_BASIS = {**{kind: ("euler", "bellman", "policy_evaluation") for kind in LINEAR_BASES},
                       "nn": ("euler",)}
OBJECTIVES_FOR_BASIS = {**{kind: ("collocation", "least_squares", "galerkin", "sampled_mse")
                           for kind in LINEAR_BASES},
                        "nn": ("sampled_mse",)}
OBJECTIVES_FOR_RESIDUAL = {
    "euler": ("collocation", "least_squares", "galerkin", "sampled_mse"),
    "bellman": ("collocation", "least_squares", "galerkin"),
    "policy_evaluation": ("collocation", "least_squares", "galerkin"),
}
ALGORITHMS = {
    ("euler", "collocation"): ("newton", "gauss_newton", "levenberg_marquardt", "gradient_descent",
                               "time_iteration"),
    # Newton on least squares needs the Hessian of the loss by automatic differentiation,
    # which costs about K times a residual evaluation, so Gauss-Newton stays the default.
    ("euler", "least_squares"): ("gauss_newton", "levenberg_marquardt", "gradient_descent", "newton",
                                 "time_iteration", "gssa"),
    ("euler", "galerkin"): ("newton", "gauss_newton", "levenberg_marquardt", "gradient_descent"),
    ("euler", "sampled_mse"): ("adam", "sgd"),
    # Newton on the Bellman residual, whose Jacobian follows from the envelope theorem,
    # is policy iteration.
    ("bellman", "collocation"): ("vfi", "newton"),
    ("bellman", "least_squares"): ("vfi", "gauss_newton"),
    # Projecting T V on the basis is not a sup-norm contraction, so VFI with a Galerkin
    # refit can diverge (it did with monomials of degree 8 and a 20-point grid); Newton
    # on the projected residual does not need the contraction.
    ("bellman", "galerkin"): ("newton",),
    ("policy_evaluation", "collocation"): ("newton",),
    ("policy_evaluation", "galerkin"): ("newton",),
    ("policy_evaluation", "least_squares"): ("gauss_newton",),
}
DENSE_BASES = ("monomial", "chebyshev")
JACOBIAN_ALGORITHMS = ("newton", "gauss_newton", "levenberg_marquardt")


def valid_objectives(basis_kind: str, residual: str, product: str = "tensor") -> tuple[str, ...]:
    """Return the objectives that fit a basis and a residual; a complete polynomial has no
    square grid of nodes, so it takes no collocation, and a Smolyak grid takes collocation only."""
    return tuple(o for o in OBJECTIVES_FOR_BASIS[basis_kind]
                 if o in OBJECTIVES_FOR_RESIDUAL[residual]
                 and not (product == "complete" and o == "collocation")
                 and not (product == "smolyak" and o != "collocation"))


def _kind_of(part: Any) -> str | None:
    """Return the `kind` of a method part given as a dict, or None when it names no string kind."""
    kind = part.get("kind") if isinstance(part, dict) else None
    return kind if isinstance(kind, str) else None


class MethodSpec(StrictModel):
    """Method of a solve: parameterization, residual, objective and algorithm."""

    basis: Basis
    residual: Residual | None = Field(None, description="Defaults to 'euler'.")
    objective: Objective | None = Field(
        None, description="Defaults to the first valid objective for the basis.")
    algorithm: Algorithm | None = Field(
        None, description="Defaults to the first valid algorithm for the objective.")
    quadrature_nodes: bounded(2, 15, integer=True) = Field(
        10, description="Gauss-Hermite nodes for the expectation over eps used by the "
        "solver (the accuracy evaluator always uses more).")
    integration: IntegrationRule | None = Field(
        None, description="multi_country model only: the solver's integration rule; "
        "null takes its 'default'.")

    @model_validator(mode="before")
    @classmethod
    def fill_defaults(cls, data: Any) -> Any:
        """Fill the residual, objective and algorithm that the basis implies when none is named."""
        if not isinstance(data, dict) or not isinstance(data.get("basis"), dict):
            return data
        basis = data["basis"]
        kind = basis.get("kind")
        if not isinstance(kind, str) or kind not in OBJECTIVES_FOR_BASIS:
            return data
        data = dict(data)
        if data.get("residual") is None:
            data["residual"] = {"kind": RESIDUALS_FOR_BASIS[kind][0]}
        residual = _kind_of(data["residual"])
        if data.get("objective") is None and residual in OBJECTIVES_FOR_RESIDUAL:
            objectives = valid_objectives(kind, residual, basis.get("product", "tensor"))
            if objectives:
                data["objective"] = {"kind": objectives[0]}
        objective = _kind_of(data.get("objective"))
        if data.get("algorithm") is None and (residual, objective) in ALGORITHMS:
            data["algorithm"] = {"kind": ALGORITHMS[(residual, objective)][0]}
        return data

    @model_validator(mode="after")
    def check_combination(self) -> "MethodSpec":
        """Reject parts that do not fit together, listing the valid choices."""
        residuals = RESIDUALS_FOR_BASIS[self.basis.kind]
        if self.residual.kind not in residuals:
            raise ValueError(f"residual.kind {self.residual.kind!r} does not apply to basis "
                             f"{self.basis.kind!r}; valid choices: {', '.join(residuals)}")
        product = getattr(self.basis, "product", "tensor")
        objectives = valid_objectives(self.basis.kind, self.residual.kind, product)
        if self.objective is None or self.objective.kind not in objectives:
            named = self.objective.kind if self.objective is not None else None
            detail = f" with product {product!r}" if product != "tensor" else ""
            raise ValueError(f"objective.kind {named!r} does not apply to basis {self.basis.kind!r}"
                             f"{detail} and residual {self.residual.kind!r}; valid choices: "
                             f"{', '.join(objectives)}")
        algorithms = ALGORITHMS[(self.residual.kind, self.objective.kind)]
        if self.algorithm is None or self.algorithm.kind not in algorithms:
            named = self.algorithm.kind if self.algorithm is not None else None
            raise ValueError(f"algorithm.kind {named!r} does not apply to residual "
                             f"{self.residual.kind!r} with objective {self.objective.kind!r}; "
                             f"valid choices: {', '.join(algorithms)}")
        if getattr(self.algorithm, "jacobian", "analytic") != "analytic" and self.residual.kind != "euler":
            raise ValueError(f"algorithm.jacobian {self.algorithm.jacobian!r} applies to the 'euler' "
                             f"residual only; residual {self.residual.kind!r} takes: analytic")
        return self


PARTS = {
    "bases": (MonomialBasis, ChebyshevBasis, SplineBasis, GridBasis, NNBasis),
    "residuals": (EulerResidual, BellmanResidual, PolicyEvaluationResidual),
    "objectives": (CollocationObjective, LeastSquaresObjective, GalerkinObjective, SampledMSEObjective),
    "algorithms": (NewtonAlgorithm, GaussNewtonAlgorithm, LevenbergMarquardtAlgorithm,
                   GradientDescentAlgorithm, TimeIterationAlgorithm, VFIAlgorithm, AdamAlgorithm,
                   SGDAlgorithm, GSSAAlgorithm),
}


def describe_part(cls: type[StrictModel]) -> dict[str, Any]:
    """Return a part's description and its settings (default, bounds or choices, meaning)."""
    schema = cls.model_json_schema()
    settings = {}
    for name, field in schema.get("properties", {}).items():
        if name == "kind":
            continue
        settings[name] = {key: value for key, value in field.items() if key != "title"}
        if "default" not in settings[name] and not cls.model_fields[name].is_required():
            default = cls.model_fields[name].get_default(call_default_factory=True)
            settings[name]["default"] = default.model_dump() if isinstance(default, StrictModel) else default
    return {"description": " ".join((cls.__doc__ or "").split()), "settings": settings}


# (objective, algorithm) pairs that only the multi_country model's solvers have; its own
# catalogue entry lists them, so the combinations of the other models leave them out.
MULTI_COUNTRY_ONLY = (("least_squares", "time_iteration"), ("least_squares", "gssa"))


def combinations() -> list[dict[str, str]]:
    """Return every valid (basis, residual, objective, algorithm) combination of the growth
    model; the multi_country model's combinations are in its catalogue entry."""
    rows = []
    for basis in OBJECTIVES_FOR_BASIS:
        for residual in RESIDUALS_FOR_BASIS[basis]:
            for objective in valid_objectives(basis, residual):
                for algorithm in ALGORITHMS[(residual, objective)]:
                    if (objective, algorithm) in MULTI_COUNTRY_ONLY:
                        continue
                    row = {"basis": basis, "residual": residual, "objective": objective,
                           "algorithm": algorithm}
                    if objective == "collocation" and basis in ("monomial", "chebyshev"):
                        row["note"] = "product 'tensor' only"
                    rows.append(row)
    return rows


def describe_methods() -> dict[str, Any]:
    """Return the method catalogue: every part with its settings, the valid combinations and
    the defaults that a spec naming only the basis gets."""
    catalogue = {part: {cls.model_fields["kind"].annotation.__args__[0]: describe_part(cls) for cls in classes}
                 for part, classes in PARTS.items()}
    catalogue["combinations"] = combinations()
    catalogue["defaults"] = {}
    for basis in OBJECTIVES_FOR_BASIS:
        residual = RESIDUALS_FOR_BASIS[basis][0]
        objective = valid_objectives(basis, residual)[0]
        catalogue["defaults"][basis] = {"residual": residual, "objective": objective,
                                        "algorithm": ALGORITHMS[(residual, objective)][0]}
    return catalogue
