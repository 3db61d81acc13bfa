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


class BasisSettings(StrictModel):
    """Settings every basis shares."""

    domain_margin: bounded(0, 1) = Field(
        0.2, description="Widening of the approximation domain beyond the state box, as a "
        "share of the box's half-width on each side, so that simulated paths that leave "
        "the box are not extrapolated. Capital's lower end never goes below half the box's.")


class PolynomialSettings(BasisSettings):
    """Settings of the global polynomial bases."""

    degree: bounded(1, 40, integer=True) = Field(
        10, description="Polynomial degree in each state (tensor product) or in total (complete).")
    product: Literal["tensor", "complete"] = Field(
        "tensor", description="'tensor': all products of the one-state polynomials, "
        "K = (degree + 1)^d. 'complete': only products of total degree <= degree, "
        "K = C(d + degree, d); it has no square grid of nodes, so it takes least_squares "
        "or galerkin.")
    nodes: Literal[NODE_FAMILIES] = Field(  # type: ignore[valid-type]
        "chebyshev_zeros", description="Family of the collocation and least-squares points "
        "in each state; 'random' draws are seeded by the job's seed.")


class MonomialBasis(PolynomialSettings):
    """Ordinary polynomials: powers u^i of each state mapped to u in [0, 1]."""

    kind: Literal["monomial"]


class ChebyshevBasis(PolynomialSettings):
    """Chebyshev polynomials T_i of each state mapped to [-1, 1]."""

    kind: Literal["chebyshev"]


class SplineBasis(BasisSettings):
    """Tensor-product B-splines, clamped at the domain's ends, with sparse matrices."""

    kind: Literal["spline"]
    order: Literal[1, 2, 3] = Field(
        3, description="Polynomial degree of each piece: 1 linear, 2 quadratic, 3 cubic.")
    # NOTE: the cap keeps the sparse Newton solve within minutes and about 1 GB: n_basis
    # 160 took 58 s and 0.7 GB on a 2-core VM, and 400 grew past 4.8 GB before its first step.
    n_basis: bounded(4, 150, integer=True) = Field(
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
    """Mean squared residual over mini-batches of sampled states."""

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


class NewtonAlgorithm(IterativeSettings):
    """Newton's method on a square system, with a backtracking line search on ||R||_2."""

    kind: Literal["newton"]
    max_iterations: bounded(1, 1_000_000, integer=True) = 50


class GaussNewtonAlgorithm(IterativeSettings):
    """Gauss-Newton: each step solves the linearised least-squares problem."""

    kind: Literal["gauss_newton"]


class LevenbergMarquardtAlgorithm(IterativeSettings):
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
                            AdamAlgorithm, SGDAlgorithm], Field(discriminator="kind")]

# Valid combinations, the first of each tuple being the default.
LINEAR_BASES = ("monomial", "chebyshev", "spline", "grid")
RESIDUALS_FOR_BASIS = {**{kind: ("euler", "bellman", "policy_evaluation") for kind in LINEAR_BASES},
                       "nn": ("euler",)}
OBJECTIVES_FOR_BASIS = {**{kind: ("collocation", "least_squares", "galerkin") for kind in LINEAR_BASES},
                        "nn": ("sampled_mse",)}
OBJECTIVES_FOR_RESIDUAL = {
    "euler": ("collocation", "least_squares", "galerkin", "sampled_mse"),
    "bellman": ("collocation", "least_squares", "galerkin"),
    "policy_evaluation": ("collocation", "least_squares", "galerkin"),
}
# NOTE: Newton on a least-squares objective needs the Hessian of the loss, with second
# derivatives of the residual; until that exists, least_squares takes the others.
ALGORITHMS = {
    ("euler", "collocation"): ("newton", "gauss_newton", "levenberg_marquardt", "gradient_descent",
                               "time_iteration"),
    ("euler", "least_squares"): ("gauss_newton", "levenberg_marquardt", "gradient_descent"),
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
    square grid of nodes, so it takes no collocation."""
    return tuple(o for o in OBJECTIVES_FOR_BASIS[basis_kind]
                 if o in OBJECTIVES_FOR_RESIDUAL[residual]
                 and not (product == "complete" and o == "collocation"))


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

    @model_validator(mode="before")
    @classmethod
    def fill_defaults(cls, data: Any) -> Any:
        """Fill the residual, objective and algorithm that the basis implies when none is named."""
        if not isinstance(data, dict) or not isinstance(data.get("basis"), dict):
            return data
        basis = data["basis"]
        kind = basis.get("kind")
        if kind not in OBJECTIVES_FOR_BASIS:
            return data
        data = dict(data)
        if data.get("residual") is None:
            data["residual"] = {"kind": RESIDUALS_FOR_BASIS[kind][0]}
        residual = data["residual"].get("kind") if isinstance(data["residual"], dict) else None
        if data.get("objective") is None and residual in OBJECTIVES_FOR_RESIDUAL:
            objectives = valid_objectives(kind, residual, basis.get("product", "tensor"))
            if objectives:
                data["objective"] = {"kind": objectives[0]}
        objective = data["objective"].get("kind") if isinstance(data.get("objective"), dict) else None
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
        return self


PARTS = {
    "bases": (MonomialBasis, ChebyshevBasis, SplineBasis, GridBasis, NNBasis),
    "residuals": (EulerResidual, BellmanResidual, PolicyEvaluationResidual),
    "objectives": (CollocationObjective, LeastSquaresObjective, GalerkinObjective, SampledMSEObjective),
    "algorithms": (NewtonAlgorithm, GaussNewtonAlgorithm, LevenbergMarquardtAlgorithm,
                   GradientDescentAlgorithm, TimeIterationAlgorithm, VFIAlgorithm, AdamAlgorithm,
                   SGDAlgorithm),
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


def combinations() -> list[dict[str, str]]:
    """Return every valid (basis, residual, objective, algorithm) combination."""
    rows = []
    for basis in OBJECTIVES_FOR_BASIS:
        for residual in RESIDUALS_FOR_BASIS[basis]:
            for objective in valid_objectives(basis, residual):
                for algorithm in ALGORITHMS[(residual, objective)]:
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
