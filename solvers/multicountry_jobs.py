"""Jobs of the N-country model: which methods apply, their sizes, the solve and the evaluation.

A job spec's method maps onto the solvers as follows (the first algorithm is the default):

| basis | objective | algorithm | solver |
| --- | --- | --- | --- |
| chebyshev, monomial; product complete | least_squares | time_iteration, gssa | `solve_multicountry`, fixed_grid (Sobol points) or gssa |
| chebyshev, monomial; product tensor | collocation | time_iteration | fixed_grid on the tensor grid of Chebyshev zeros |
| chebyshev; product smolyak | collocation | time_iteration | fixed_grid on the Smolyak grid |
| spline | collocation | time_iteration | fixed_grid at the Greville abscissae |
| nn | sampled_mse | adam, sgd | `solvers.multicountry_nn` |

The evaluation is `solvers.multicountry_evaluate.evaluate` with point counts that shrink
as the evaluator's M2 rule grows (2N^2 + 1 nodes), so that each set costs about
EVALUATION_ROWS next-period states: see `evaluation_counts`.
"""

from __future__ import annotations

import math
from typing import Any

from solvers.control import SolveControl
from solvers.multicountry import MultiCountryModel
from solvers.solution import Solution

# Valid method parts of the multi_country model, the first of each being the default.
METHODS = {
    "basis": ("chebyshev", "monomial", "spline", "nn"),
    "residual": ("euler",),
}
OBJECTIVES = {"complete": ("least_squares",), "tensor": ("collocation",), "smolyak": ("collocation",),
              "spline": ("collocation",), "nn": ("sampled_mse",)}
ALGORITHMS = {"least_squares": ("time_iteration", "gssa"), "collocation": ("time_iteration",),
              "sampled_mse": ("adam", "sgd")}
# Settings that the multi-country solvers do not use, per basis kind: a value other than
# the default is an error.
UNUSED_SETTINGS = {"chebyshev": ("nodes", "domain_margin"), "monomial": ("nodes", "domain_margin"),
                   "spline": ("knots", "domain_margin"), "nn": ()}

# Size limits used when the caller passes none; the service passes its own settings.
DEFAULT_MAX_PARAMS = 200_000
DEFAULT_MAX_MEMORY_MB = 2_048.0

EVALUATION_ROWS = 200_000  # next-period states per evaluation set, as a target
MIN_BOX_POINTS, MIN_PATH_POINTS, MIN_SPHERE_POINTS = 500, 1_000, 200


def build_model(params) -> MultiCountryModel:
    """Return the MultiCountryModel of a validated `MultiCountryParams`."""
    gamma = tuple(params.gamma) if isinstance(params.gamma, list) else params.gamma
    weights = tuple(params.weights) if params.weights is not None else None
    return MultiCountryModel(countries=params.countries, alpha=params.alpha, beta=params.beta,
                             delta=params.delta, rho=params.rho, sigma=params.sigma, phi=params.phi,
                             gamma=gamma, weights=weights, k_box=tuple(params.k_box),
                             loga_box_sd=params.loga_box_sd)


def method_family(method) -> str:
    """Return the key of OBJECTIVES for a method: the product of a polynomial, else the basis kind."""
    basis = method.basis
    return basis.product if basis.kind in ("chebyshev", "monomial") else basis.kind


def default_parts(method: dict[str, Any]) -> dict[str, Any]:
    """Return a raw method block with the multi-country objective and algorithm filled in where missing."""
    basis = method.get("basis")
    if not isinstance(basis, dict) or basis.get("kind") not in METHODS["basis"]:
        return method
    family = basis.get("product", "tensor") if basis["kind"] in ("chebyshev", "monomial") else basis["kind"]
    if family not in OBJECTIVES:
        return method
    method = dict(method)
    if method.get("residual") is None:
        method["residual"] = {"kind": "euler"}
    if method.get("objective") is None:
        method["objective"] = {"kind": OBJECTIVES[family][0]}
    objective = method["objective"].get("kind") if isinstance(method["objective"], dict) else None
    if method.get("algorithm") is None and objective in ALGORITHMS:
        method["algorithm"] = {"kind": ALGORITHMS[objective][0]}
    return method


def validate_method(model: MultiCountryModel, method) -> None:
    """Raise ValueError naming the first part or setting of method the multi-country solvers lack.

    Size limits are not checked here (see `size_problem`), so that a stored record stays
    readable under any limit.
    """
    for part, valid in METHODS.items():
        kind = getattr(method, part).kind
        if kind not in valid:
            raise ValueError(f"method.{part}.kind {kind!r} is not available for the multi_country "
                             f"model; valid choices: {', '.join(valid)}")
    family = method_family(method)
    objectives = OBJECTIVES[family]
    if method.objective.kind not in objectives:
        raise ValueError(f"objective.kind {method.objective.kind!r} does not apply to basis "
                         f"{method.basis.kind!r} ({family}) on the multi_country model; valid "
                         f"choices: {', '.join(objectives)}")
    algorithms = ALGORITHMS[method.objective.kind]
    if method.algorithm.kind not in algorithms:
        raise ValueError(f"algorithm.kind {method.algorithm.kind!r} does not apply to objective "
                         f"{method.objective.kind!r} on the multi_country model; valid choices: "
                         f"{', '.join(algorithms)}")
    _check_unused(method)
    if method.basis.kind == "nn":
        _check_nn_rule(model, method)
        return
    from solvers.multicountry_solver import resolve_settings

    resolve_settings(model, solver_settings(model, method))


def _check_unused(method) -> None:
    """Raise ValueError when the spec sets a field that the multi-country solvers ignore to a
    value other than its default; comparing with the default lets a dumped spec reload."""
    basis = method.basis
    named = sorted(name for name in UNUSED_SETTINGS[basis.kind]
                   if getattr(basis, name) != type(basis).model_fields[name].default)
    if named:
        raise ValueError(f"basis settings {named} are not used by the multi_country solvers, which "
                         f"fit on the state box itself; remove them")
    objective = method.objective
    if objective.kind == "least_squares" and objective.oversampling != type(objective).model_fields[
            "oversampling"].default and method.algorithm.kind == "gssa":
        raise ValueError("objective.oversampling applies to time_iteration with a complete "
                         "polynomial only; gssa fits on periods x paths simulated states")
    rule = method.integration.kind if method.integration is not None else "default"
    if rule == "all_in_one" and basis.kind != "nn":
        raise ValueError("integration 'all_in_one' applies to the nn basis only; valid choices "
                         "here: default, gauss_hermite, m1, m2, monte_carlo")


def _check_nn_rule(model: MultiCountryModel, method) -> None:
    """Raise ValueError when the nn's training rule would be a Gauss-Hermite product too large to form."""
    rule = method.integration.kind if method.integration is not None else "default"
    if rule == "gauss_hermite" and method.quadrature_nodes ** model.countries > 10_000:
        raise ValueError(f"a Gauss-Hermite product of {method.quadrature_nodes} nodes per shock has "
                         f"{method.quadrature_nodes ** model.countries:.3g} nodes at N = "
                         f"{model.countries}, above 10,000; use m1, monte_carlo or all_in_one")


def solver_settings(model: MultiCountryModel, method) -> dict[str, Any]:
    """Return the settings dict of `solve_multicountry` for a linear-basis method."""
    basis, algorithm = method.basis, method.algorithm
    settings: dict[str, Any] = {"algorithm": "gssa" if algorithm.kind == "gssa" else "fixed_grid",
                                "basis": basis.kind, "variables": basis.variables,
                                "damping": algorithm.damping, "tol": algorithm.tol,
                                "max_iterations": algorithm.max_iterations}
    if basis.kind == "spline":
        settings.update(product="tensor", n_basis=basis.n_basis, order=basis.order)
    elif basis.product == "smolyak":
        settings.update(product="smolyak", level=basis.level)
    else:
        settings.update(product=basis.product, degree=basis.degree)
    if method.objective.kind == "least_squares" and algorithm.kind == "time_iteration":
        settings["oversampling"] = method.objective.oversampling
    if algorithm.kind == "gssa":
        settings.update(periods=algorithm.periods, paths=algorithm.paths, burn_in=algorithm.burn_in,
                        regularisation=algorithm.regularisation, penalty=algorithm.penalty)
    rule = method.integration
    if rule is not None and rule.kind != "default":
        settings.update(rule=rule.kind, nodes_per_dim=method.quadrature_nodes, draws=rule.draws)
    return settings


def estimate_job_size(model: MultiCountryModel, method) -> tuple[int, int]:
    """Return (parameters, estimated peak bytes) of a job's solve, without building anything."""
    if method.basis.kind == "nn":
        from solvers.multicountry_nn import count_parameters, estimate_bytes, training_nodes

        nodes = training_nodes(model, method)
        return (count_parameters(model.countries, method.basis),
                estimate_bytes(model.countries, method.basis, method.objective.batch_size, nodes))
    from solvers.multicountry_solver import estimate_size

    return estimate_size(model, solver_settings(model, method))


def _count(n: int) -> str:
    """Write a count with thousands separators, or as a power of ten past 10^12."""
    if n < 10**12:
        return f"{n:,}"
    digits = str(n)
    return f"{digits[0]}.{digits[1:3]}e{len(digits) - 1}"


def size_problem(model: MultiCountryModel, method, max_params: int | None = None,
                 max_memory_mb: float | None = None) -> str | None:
    """Return why a job exceeds the parameter or memory limit, with the figures, or None when it fits."""
    max_params = DEFAULT_MAX_PARAMS if max_params is None else max_params
    max_memory_mb = DEFAULT_MAX_MEMORY_MB if max_memory_mb is None else max_memory_mb
    n_params, n_bytes = estimate_job_size(model, method)
    # Integer division first: a tensor basis at large d has more bytes than a float holds.
    memory_mb = n_bytes // 1024 ** 2
    if n_params <= max_params and memory_mb <= max_memory_mb:
        return None
    return (f"basis {method.basis.kind!r} at d = {model.n_states} has {_count(n_params)} parameters and needs "
            f"about {_count(memory_mb)} MiB (an estimate); the limits are {max_params:,} parameters "
            f"(EULERBENCH_MAX_PARAMS) and {max_memory_mb:,.0f} MiB (EULERBENCH_MAX_MEMORY_MB). "
            f"{_size_hint(method, n_params > max_params)}")


def _size_hint(method, too_many_params: bool) -> str:
    """Return what to change in a spec over the limits: the basis, or what drives memory."""
    if method.basis.kind == "nn":
        return ("Lower width, depth or batch_size, or use a rule with fewer nodes (m1 has 2N, "
                "monte_carlo its draws)")
    if too_many_params:
        return "Use a complete polynomial, a Smolyak grid, a lower degree or fewer countries"
    return ("Memory grows with the fit points (gssa periods x paths, or oversampling times K) "
            "times the rule's nodes: lower those or the degree, or use the m1 rule (2N nodes)")


def solve_job(model: MultiCountryModel, spec, control: SolveControl) -> Solution:
    """Solve a multi_country job with the solver its basis names; raise ValueError above the default limits."""
    # NOTE: a worker checks the module defaults, not EULERBENCH_MAX_PARAMS or
    # EULERBENCH_MAX_MEMORY_MB, so a service that raises those limits still gets jobs above
    # the defaults failed here.
    problem = size_problem(model, spec.method)
    if problem is not None:
        raise ValueError(problem)
    if spec.method.basis.kind == "nn":
        from solvers.multicountry_nn import solve_multicountry_nn

        return solve_multicountry_nn(model, spec.method, spec.seed, spec.device, control)
    from solvers.multicountry_solver import solve_multicountry

    return solve_multicountry(model, solver_settings(model, spec.method), control, seed=spec.seed)


def evaluation_counts(model: MultiCountryModel) -> dict[str, int]:
    """Return the evaluator's point counts at this N: about EVALUATION_ROWS next-period states per set.

    The path is always simulated for 10,000 periods. The box and the scored path periods
    (evenly spaced over the whole path) get EVALUATION_ROWS / J points (J = the
    evaluator's nodes), between their minimum and 10,000; each sphere gets a quarter of
    that, between 200 and 1,000. The counts depend on N only, so every method at one N is
    scored on the same states.
    """
    from solvers.multicountry_evaluate import BOX_POINTS, PATH_PERIODS, SPHERE_POINTS, evaluation_rule

    nodes = evaluation_rule(model)[2].size
    per_set = EVALUATION_ROWS // nodes
    return {"box_count": int(min(BOX_POINTS, max(MIN_BOX_POINTS, per_set))),
            "path_periods": PATH_PERIODS,
            "path_count": int(min(PATH_PERIODS, max(MIN_PATH_POINTS, per_set))),
            "sphere_count": int(min(SPHERE_POINTS, max(MIN_SPHERE_POINTS, per_set // 4)))}


class MultiCountryEvaluation:
    """The evaluator's result in the record's layout: `errors` sets and `diagnostics` figures."""

    def __init__(self, accuracy, counts: dict[str, int]):
        self.accuracy = accuracy
        self.counts = counts

    @property
    def finite(self) -> bool:
        return self.accuracy.finite

    def as_errors(self) -> dict[str, Any]:
        """Return box, path and spheres with max/mean log10 and the Euler and resource maxima."""
        accuracy = self.accuracy
        path = _set_block(accuracy.path)
        path["share_outside_box"] = accuracy.path_share_outside_box
        closed_form = None
        if accuracy.closed_form_max_rel_distance is not None:
            closed_form = {"max_rel_distance": accuracy.closed_form_max_rel_distance,
                           "path_max_rel_distance": accuracy.closed_form_path_max_rel_distance}
        return {"box": _set_block(accuracy.box), "path": path,
                "spheres": {f"{radius:g}": _set_block(s) for radius, s in accuracy.spheres.items()},
                "closed_form": closed_form}

    @property
    def diagnostics(self) -> dict[str, Any]:
        """Return the per-equation maxima of every set, the rule and the point counts."""
        accuracy = self.accuracy
        sets = {"box": accuracy.box, "path": accuracy.path,
                **{f"sphere_{radius:g}": s for radius, s in accuracy.spheres.items()}}
        return {"evaluation_rule": {"name": accuracy.rule, "nodes": accuracy.rule_nodes},
                "evaluation_points": {name: s.points for name, s in sets.items()},
                "path_periods": self.counts["path_periods"],
                "equations": list(accuracy.equations),
                "equation_max_log10": {name: list(s.equation_max_log10) for name, s in sets.items()}}


def _set_block(accuracy) -> dict[str, Any]:
    """Return one set's record block; euler_max_log10 leaves out the resource-constraint column."""
    euler = accuracy.equation_max_log10[:-1]
    euler_max = max(euler) if euler and all(math.isfinite(v) for v in euler) else math.nan
    return {"max_log10": accuracy.max_log10, "mean_log10": accuracy.mean_log10,
            "euler_max_log10": euler_max, "resource_max_log10": accuracy.equation_max_log10[-1]}


def evaluate_job(model: MultiCountryModel, policy) -> MultiCountryEvaluation:
    """Score a policy states (n, 2N) -> k' (n, N) with the shared evaluator at `evaluation_counts`."""
    from solvers.multicountry_evaluate import evaluate

    counts = evaluation_counts(model)
    return MultiCountryEvaluation(evaluate(model, policy, **counts), counts)
