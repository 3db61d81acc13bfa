"""Every valid method combination runs on the growth model, and invalid ones are rejected."""

import numpy as np
import pytest
from pydantic import ValidationError

from solvers.control import SolveControl
from solvers.evaluate import euler_errors
from solvers.growth import GrowthModel
from solvers.methods import ALGORITHMS, combinations
from solvers.run import solve
from solvers.spec import JobSpec, describe_catalogue

SMALL_BASES = {
    "monomial": {"kind": "monomial", "degree": 5},
    "chebyshev": {"kind": "chebyshev", "degree": 6},
    "spline": {"kind": "spline", "n_basis": 10},
    "grid": {"kind": "grid", "points": 12},
    "nn": {"kind": "nn", "width": 16},
}
SHORT_ALGORITHMS = {
    "gradient_descent": {"kind": "gradient_descent", "max_iterations": 300},
    "adam": {"kind": "adam", "steps": 200},
    "sgd": {"kind": "sgd", "steps": 200},
    "vfi": {"kind": "vfi", "tol": 1e-6},
}


def spec_for(row, product="tensor"):
    basis = dict(SMALL_BASES[row["basis"]])
    if row["basis"] in ("monomial", "chebyshev"):
        basis["product"] = product
    algorithm = SHORT_ALGORITHMS.get(row["algorithm"], {"kind": row["algorithm"]})
    residual = {"kind": row["residual"]}
    return JobSpec.model_validate({"method": {
        "basis": basis, "residual": residual,
        "objective": {"kind": row["objective"]}, "algorithm": algorithm}})


def sample_states(model, n=400):
    rng = np.random.default_rng(5)
    low, high = model.bounds[:, 0], model.bounds[:, 1]
    points = low + rng.random((n, 2)) * (high - low)
    return points[:, 0], points[:, 1]


@pytest.mark.parametrize("row", combinations(), ids=lambda r: "-".join(r[k] for k in ("basis", "objective", "algorithm")))
def test_every_combination_solves(row):
    model = GrowthModel()
    spec = spec_for(row)
    solution = solve(model, spec, SolveControl())
    k, logz = sample_states(model)
    errors = euler_errors(model, solution.policy, k, logz)
    assert np.all(np.isfinite(errors))
    assert solution.iterations >= 1
    if row["algorithm"] in ("newton", "gauss_newton", "levenberg_marquardt", "time_iteration"):
        assert solution.converged
    if row["algorithm"] != "gradient_descent" and row["objective"] != "sampled_mse" \
            and row["residual"] != "policy_evaluation":
        # The grid's linear interpolation is the coarse baseline: its errors are larger.
        assert np.max(errors) < (5e-2 if row["basis"] == "grid" else 1e-4)
    if row["objective"] == "sampled_mse" and row["basis"] != "nn":
        # 200 steps move the coefficients off the first guess, whose max |e| here is 1.7e-2.
        assert np.max(errors) < 1.7e-2


@pytest.mark.parametrize("basis", ["monomial", "chebyshev"])
@pytest.mark.parametrize("objective", ["least_squares", "galerkin"])
def test_complete_polynomials_solve(basis, objective):
    model = GrowthModel()
    row = {"basis": basis, "residual": "euler", "objective": objective,
           "algorithm": ALGORITHMS[("euler", objective)][0]}
    solution = solve(model, spec_for(row, product="complete"), SolveControl())
    assert solution.converged
    assert solution.n_params == 28 if basis == "chebyshev" else 21


def newton_history(algorithm):
    control = SolveControl()
    spec = JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "degree": 8},
                                              "algorithm": algorithm}})
    solve(GrowthModel(), spec, control)
    return np.array([row[1] for row in control.history])


def test_newton_quadratic_on_growth_model():
    residuals = newton_history({"kind": "newton"})
    usable = residuals[(residuals > 1e-13) & (residuals < 1e-1)]
    orders = np.log(usable[1:]) / np.log(usable[:-1])
    assert len(orders) >= 1
    assert np.max(orders) > 1.7


def test_gradient_descent_linear_on_growth_model():
    residuals = newton_history({"kind": "gradient_descent", "max_iterations": 400})
    tail = residuals[-200:]
    ratios = tail[1:] / tail[:-1]
    assert np.all(ratios <= 1.0 + 1e-9)
    assert np.median(ratios) > 0.5
    assert residuals[-1] < residuals[0]


INVALID = [
    ({"basis": {"kind": "nn"}, "objective": {"kind": "galerkin"}}, "valid choices: sampled_mse"),
    ({"basis": {"kind": "chebyshev", "product": "complete"}, "objective": {"kind": "collocation"}},
     "valid choices: least_squares, galerkin"),
    ({"basis": {"kind": "spline"}, "objective": {"kind": "least_squares"}, "algorithm": {"kind": "vfi"}},
     "valid choices: gauss_newton, levenberg_marquardt, gradient_descent, newton"),
    ({"basis": {"kind": "chebyshev"}, "residual": {"kind": "bellman"}, "objective": {"kind": "sampled_mse"}},
     "valid choices: collocation, least_squares, galerkin"),
    ({"basis": {"kind": "chebyshev"}, "residual": {"kind": "policy_evaluation"}, "algorithm": {"kind": "vfi"}},
     "valid choices: newton"),
    ({"basis": {"kind": "nn"}, "residual": {"kind": "bellman"}}, "valid choices: euler"),
    ({"basis": {"kind": "grid"}, "residual": {"kind": "bellman"}, "algorithm": {"kind": "time_iteration"}},
     "valid choices: vfi, newton"),
    ({"basis": {"kind": "monomial"}, "algorithm": {"kind": "adam"}},
     "valid choices: newton, gauss_newton, levenberg_marquardt, gradient_descent, time_iteration"),
    ({"basis": {"kind": "spline"}, "objective": {"kind": "sampled_mse"}, "algorithm": {"kind": "newton"}},
     "valid choices: adam, sgd"),
    ({"basis": {"kind": "grid"}, "residual": {"kind": "bellman"}, "objective": {"kind": "sampled_mse"}},
     "valid choices: collocation, least_squares, galerkin"),
    ({"basis": {"kind": "chebyshev"}, "residual": {"kind": "bellman"},
      "algorithm": {"kind": "newton", "jacobian": "autodiff"}}, "residual 'bellman' takes: analytic"),
    ({"basis": {"kind": "chebyshev"}, "algorithm": {"kind": "newton", "jacobian": "numeric"}},
     "'analytic' or 'autodiff'"),
]


@pytest.mark.parametrize("method,message", INVALID)
def test_invalid_combination_lists_choices(method, message):
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate({"method": method})


def test_catalogue_lists_everything():
    catalogue = describe_catalogue()
    assert set(catalogue["bases"]) == {"monomial", "chebyshev", "spline", "grid", "nn"}
    assert set(catalogue["objectives"]) == {"collocation", "least_squares", "galerkin", "sampled_mse"}
    assert "time_iteration" in catalogue["algorithms"]
    assert catalogue["defaults"]["nn"] == {"residual": "euler", "objective": "sampled_mse", "algorithm": "adam"}
    degree = catalogue["bases"]["chebyshev"]["settings"]["degree"]
    assert degree["default"] == 10
    assert degree["maximum"] == 40
    assert len(catalogue["combinations"]) == 94
    assert {"basis": "grid", "residual": "bellman", "objective": "collocation", "algorithm": "vfi"} in catalogue["combinations"]
    assert {"basis": "spline", "residual": "euler", "objective": "least_squares", "algorithm": "newton"} \
        in catalogue["combinations"]
    assert {"basis": "chebyshev", "residual": "euler", "objective": "sampled_mse", "algorithm": "sgd"} \
        in catalogue["combinations"]
    for kind in ("newton", "gauss_newton", "levenberg_marquardt"):
        jacobian = catalogue["algorithms"][kind]["settings"]["jacobian"]
        assert jacobian["default"] == "analytic"
        assert jacobian["enum"] == ["analytic", "autodiff"]


def test_catalogue_example_covers_every_combination():
    from pathlib import Path

    from service.batch import load_batch

    specs = load_batch(Path(__file__).resolve().parents[2] / "examples" / "catalogue.yaml")
    covered = {(s.method.basis.kind, s.method.residual.kind, s.method.objective.kind, s.method.algorithm.kind)
               for s in specs}
    expected = {(r["basis"], r["residual"], r["objective"], r["algorithm"]) for r in combinations()}
    assert expected <= covered


@pytest.mark.parametrize("row", combinations()[::3], ids=lambda r: "-".join(r.values()))
def test_summary_names_every_combination(row):
    spec = JobSpec.model_validate({"method": {"basis": {"kind": row["basis"]}, "residual": {"kind": row["residual"]},
                                              "objective": {"kind": row["objective"]},
                                              "algorithm": {"kind": row["algorithm"]}}})
    assert spec.summary().startswith(row["basis"])


def test_monomial_basis_ill_conditioned_chebyshev_not():
    model = GrowthModel()
    conditions = {}
    for kind in ("monomial", "chebyshev"):
        spec = JobSpec.model_validate({"method": {"basis": {"kind": kind, "degree": 15}}})
        conditions[kind] = solve(model, spec, SolveControl()).extra["basis_condition_number"]
    assert conditions["monomial"] > 1e10
    assert conditions["chebyshev"] < 1e3
