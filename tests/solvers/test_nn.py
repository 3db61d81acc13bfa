"""Tests of the neural-network solver: accuracy, feasibility, rebuilding, seeding and stops."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from solvers.control import SolveControl, SolveTimedOut
from solvers.growth import GrowthModel
from solvers.nn import StabilityCheck, build_policy, initial_policy, solve_nn
from solvers.quadrature import gauss_hermite
from solvers.run import run_spec
from solvers.spec import JobSpec, MethodSpec

SHORT_STEPS = 100  # optimizer steps of the quick tests: enough to move the weights off the first guess


def short_method(steps: int = SHORT_STEPS, **basis) -> MethodSpec:
    """Return the default nn method with few optimizer steps."""
    return MethodSpec.model_validate({
        "basis": {"kind": "nn", **basis},
        "algorithm": {"kind": "adam", "steps": steps},
    })


@pytest.fixture(scope="module")
def short_solution():
    """A solution of the default model after SHORT_STEPS steps."""
    return solve_nn(GrowthModel(), short_method(), seed=0, device="cpu", control=SolveControl())


def random_states(model: GrowthModel, n: int, spread: float, seed: int):
    """Return k and log z of n states drawn uniformly from the box widened `spread` times
    its half-width on each side; capital stays positive."""
    rng = np.random.default_rng(seed)
    wide = model.approximation_bounds(spread)
    wide[0, 0] = 0.01 * model.kss
    k = rng.uniform(wide[0, 0], wide[0, 1], n)
    logz = rng.uniform(wide[1, 0], wide[1, 1], n)
    return k, logz


@pytest.mark.slow
def test_default_spec_meets_path_target():
    outcome = run_spec(JobSpec.model_validate({"method": {"basis": {"kind": "nn"}}}))
    path = outcome.fields["errors"]["path"]

    assert outcome.status == "succeeded"
    assert outcome.fields["converged"] is True
    assert path["max_log10"] <= -3.5
    # The evaluator's path is outside the box in 0.7% of its periods under the Chebyshev
    # solution too, mostly where log z passes 3 standard deviations. A drifting path
    # exceeds 2%.
    assert path["share_outside_box"] <= 0.02


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_policy_feasible_inside_and_outside_box(activation):
    model = GrowthModel()
    solution = solve_nn(model, short_method(activation=activation), seed=0, device="cpu",
                        control=SolveControl())
    k, logz = random_states(model, 20_000, spread=10.0, seed=1)

    c = solution.policy(k, logz)

    assert c.dtype == np.float64
    assert np.all(np.isfinite(c))
    assert np.all(c > 0)
    assert np.all(c < model.cash_on_hand(k, logz))


def test_policy_keeps_input_shape(short_solution):
    model = GrowthModel()
    k = np.full((3, 4), model.kss)
    logz = np.zeros((3, 4))

    assert short_solution.policy(k, logz).shape == (3, 4)
    assert short_solution.policy(np.array(model.kss), np.array(0.0)).shape == ()


def test_build_policy_reproduces_solution(short_solution):
    model = GrowthModel()
    k, logz = random_states(model, 5_000, spread=2.0, seed=2)
    parameters = json.loads(json.dumps(short_solution.parameters))

    rebuilt = build_policy(parameters)

    np.testing.assert_array_equal(rebuilt(k, logz), short_solution.policy(k, logz))


def test_solution_counts(short_solution):
    method = short_method()
    width, depth = method.basis.width, method.basis.depth
    expected = 2 * width + width + (depth - 1) * (width * width + width) + width + 1

    assert short_solution.n_params == expected
    assert short_solution.n_conditions == method.objective.batch_size
    assert short_solution.iterations == SHORT_STEPS


def test_same_seed_gives_same_parameters():
    method = short_method(steps=30)

    first = solve_nn(GrowthModel(), method, seed=5, device="cpu", control=SolveControl())
    second = solve_nn(GrowthModel(), method, seed=5, device="cpu", control=SolveControl())
    other = solve_nn(GrowthModel(), method, seed=6, device="cpu", control=SolveControl())

    assert first.parameters == second.parameters
    assert first.parameters["state_dict"] != other.parameters["state_dict"]


def test_untrained_policy_is_first_guess():
    model = GrowthModel()
    method = short_method()
    policy = initial_policy(model, method.basis, model.approximation_bounds(0.5), seed=0)
    k, logz = random_states(model, 1_000, spread=1.0, seed=3)

    with torch.no_grad():
        c = policy(torch.as_tensor(k), torch.as_tensor(logz)).numpy()

    np.testing.assert_allclose(c, model.initial_consumption(k, logz), rtol=1e-13)


def test_stability_check_flags_explosive_policy():
    model = GrowthModel()
    method = short_method()
    bounds = model.approximation_bounds(method.basis.domain_margin)
    eps, weights = (torch.as_tensor(a) for a in gauss_hermite(5))
    check = StabilityCheck(model, (bounds[0, 0], bounds[0, 1]), 0, eps, weights,
                           torch.float64, torch.device("cpu"))
    policy = initial_policy(model, method.basis, bounds, seed=0)

    assert check.run(policy).stable

    # Consuming a much smaller share than the first guess makes capital grow out of the box.
    with torch.no_grad():
        policy.mlp[-1].bias.fill_(-2.0)
    result = check.run(policy)

    assert not result.stable
    assert result.max_error == float("inf")


def test_past_deadline_raises_timed_out():
    control = SolveControl(deadline=time.monotonic() - 1.0)

    with pytest.raises(SolveTimedOut):
        solve_nn(GrowthModel(), short_method(), seed=0, device="cpu", control=control)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_without_cuda_raises_value_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        solve_nn(GrowthModel(), short_method(), seed=0, device="gpu", control=SolveControl())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_gpu():
    solution = solve_nn(GrowthModel(), short_method(), seed=0, device="gpu", control=SolveControl())
    k, logz = random_states(GrowthModel(), 100, 0.0, seed=1)
    c = solution.policy(k, logz)

    assert np.all(np.isfinite(c))
    assert solution.iterations == SHORT_STEPS
