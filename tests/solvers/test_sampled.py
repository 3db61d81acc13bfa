"""The sampled mean squared Euler error on linear bases, and the sampler it shares with nn."""

import numpy as np
import pytest
import torch

from solvers import nn, sampled
from solvers.autodiff import TorchBasis
from solvers.collocation import build_basis, first_guess
from solvers.control import SolveControl, SolveTimedOut
from solvers.growth import GrowthModel
from solvers.methods import MethodSpec
from solvers.run import run_spec
from solvers.sampled import CONVERGED_MAX_RESIDUAL, StateSampler, clamped_policy, solve_sampled
from solvers.spec import JobSpec

ADAM_STEPS = 600  # enough for Chebyshev degree 5 to reach box max_log10 below -3 on the default model


def sampled_method(basis, algorithm, **objective):
    return MethodSpec.model_validate({"basis": basis, "objective": {"kind": "sampled_mse", **objective},
                                      "algorithm": algorithm})


def test_chebyshev_adam_reaches_box_target():
    spec = JobSpec.model_validate({"method": {
        "basis": {"kind": "chebyshev", "degree": 5}, "objective": {"kind": "sampled_mse"},
        "algorithm": {"kind": "adam", "steps": ADAM_STEPS}}})

    outcome = run_spec(spec)
    fields = outcome.fields

    assert outcome.status == "succeeded"
    assert fields["converged"] is True
    assert fields["warnings"] == []
    assert fields["errors"]["box"]["max_log10"] < -3
    assert fields["errors"]["path"]["max_log10"] < -3
    assert fields["diagnostics"]["node_max_residual"] < CONVERGED_MAX_RESIDUAL
    assert fields["n_params"] == 36
    assert fields["n_conditions"] == 256
    assert fields["iterations"] == ADAM_STEPS
    # 1 s of CPU time on an idle 2-core VM; the bound leaves room for a loaded machine.
    assert fields["timings"]["solve_cpu_s"] < 15


def test_history_falls_from_first_guess():
    control = SolveControl()
    solve_sampled(GrowthModel(), sampled_method({"kind": "chebyshev", "degree": 4},
                                                {"kind": "adam", "steps": ADAM_STEPS}), control)
    steps = [row[0] for row in control.history]
    residuals = np.array([row[1] for row in control.history])

    assert steps[0] == 1
    assert steps[1:] == list(range(sampled.REPORT_EVERY, ADAM_STEPS + 1, sampled.REPORT_EVERY))
    assert residuals[-1] < 0.1 * residuals[0]


def test_sgd_with_large_rate_converges():
    # SGD's default rate suits network weights; Chebyshev coefficients need about 2, and at 4
    # the iterates jumped into the clamped region, where no gradient leads back.
    method = sampled_method({"kind": "chebyshev", "degree": 5},
                            {"kind": "sgd", "steps": 1500, "learning_rate": 2.0})

    solution = solve_sampled(GrowthModel(), method, SolveControl())

    assert solution.converged
    assert solution.extra["node_max_residual"] < CONVERGED_MAX_RESIDUAL


def test_few_steps_not_converged_with_warning():
    spec = JobSpec.model_validate({"method": {
        "basis": {"kind": "spline", "n_basis": 8}, "objective": {"kind": "sampled_mse"},
        "algorithm": {"kind": "adam", "steps": 3}}})

    outcome = run_spec(spec)

    assert outcome.status == "succeeded"
    assert outcome.fields["converged"] is False
    assert "node set" in outcome.fields["warnings"][0]
    assert outcome.fields["diagnostics"]["node_max_residual"] >= CONVERGED_MAX_RESIDUAL


def test_starts_from_collocation_first_guess():
    model = GrowthModel()
    method = sampled_method({"kind": "grid", "points": 10}, {"kind": "adam", "steps": 1, "learning_rate": 1e-12})
    basis = build_basis(model, method.basis)

    solution = solve_sampled(model, method, SolveControl())

    np.testing.assert_allclose(solution.parameters["theta"], first_guess(model, basis), rtol=1e-9)


def test_same_seed_gives_same_theta():
    method = sampled_method({"kind": "monomial", "degree": 4}, {"kind": "adam", "steps": 50})

    first = solve_sampled(GrowthModel(), method, SolveControl(), seed=3)
    second = solve_sampled(GrowthModel(), method, SolveControl(), seed=3)
    other = solve_sampled(GrowthModel(), method, SolveControl(), seed=4)

    assert first.parameters["theta"] == second.parameters["theta"]
    assert first.parameters["theta"] != other.parameters["theta"]


def test_clamped_policy_stays_feasible():
    model = GrowthModel()
    basis = build_basis(model, sampled_method({"kind": "chebyshev", "degree": 3}, {"kind": "adam"}).basis)
    theta = torch.as_tensor(np.random.default_rng(0).standard_normal(basis.n_params) * 50)
    k = torch.linspace(0.5 * model.kss, 2 * model.kss, 200, dtype=torch.float64)
    logz = torch.linspace(-0.2, 0.2, 200, dtype=torch.float64)

    c = clamped_policy(model, TorchBasis(basis), theta)(k, logz)
    cash = model.cash_on_hand(k, logz)

    assert torch.all(c > 0)
    assert torch.all(c < cash)
    assert torch.any(c == sampled.FEASIBLE_SHARE[0] * cash)
    assert torch.any(c == sampled.FEASIBLE_SHARE[1] * cash)


@pytest.mark.parametrize("share,uniform", [(0.0, 64), (0.5, 32), (1.0, 0)])
def test_sampler_batch_mixes_uniform_and_pool(share, uniform):
    model = GrowthModel()
    bounds = model.approximation_bounds(0.2)
    sampler = StateSampler(model, bounds, 64, share, torch.Generator().manual_seed(0),
                           torch.float64, torch.device("cpu"))

    k, logz = sampler.batch()

    assert k.shape == (64,)
    assert logz.shape == (64,)
    assert sampler.n_uniform == uniform
    assert torch.all((k >= bounds[0, 0]) & (k <= bounds[0, 1]))


def test_nn_uses_shared_sampler():
    assert nn.StateSampler is StateSampler


def test_past_deadline_times_out():
    control = SolveControl(deadline=0.0)
    method = sampled_method({"kind": "chebyshev", "degree": 4}, {"kind": "adam", "steps": 100})

    with pytest.raises(SolveTimedOut):
        solve_sampled(GrowthModel(), method, control)
