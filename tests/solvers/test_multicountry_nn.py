"""The torch Euler terms that train the N-country network, against the numpy model."""

import numpy as np
import pytest
import torch
from solvers.integration import make_rule
from solvers.methods import NNBasis
from solvers.multicountry import MultiCountryModel
from solvers.multicountry_nn import MultiCountryNet, TorchEuler, numpy_policy, resources


def random_net(model: MultiCountryModel, seed: int) -> MultiCountryNet:
    """Return a float64 network whose last layer is non-zero, so its correction matters."""
    torch.manual_seed(seed)
    net = MultiCountryNet(model, NNBasis(kind="nn", width=16)).double()
    with torch.no_grad():
        last = net.mlp[-1]
        last.weight.normal_(0, 0.3)
        last.bias.normal_(0, 0.1)
    return net


def box_states(model: MultiCountryModel, count: int) -> np.ndarray:
    low, high = model.bounds[:, 0], model.bounds[:, 1]
    return low + np.random.default_rng(1).random((count, model.n_states)) * (high - low)


@pytest.mark.parametrize("params", [
    {"countries": 1},
    {"countries": 3},
    {"countries": 3, "gamma": (0.5, 1.0, 3.0)},
    {"countries": 2, "gamma": 2.0, "phi": 0.5},
    {"countries": 2, "delta": 1.0},
])
def test_torch_euler_errors_match_numpy(params):
    model = MultiCountryModel(**params)
    net = random_net(model, seed=0)
    states = box_states(model, 40)
    eps, weights = make_rule("m1", model.shock_cov, 5)

    euler = TorchEuler(model, torch.float64, torch.device("cpu"))
    with torch.no_grad():
        terms = euler.terms(net, torch.as_tensor(states), torch.as_tensor(eps)[None, :, :])
    torch_errors = np.einsum("j,njc->nc", weights, terms.numpy()) - 1
    numpy_errors = model.euler_errors(numpy_policy(net), states, eps, weights)[:, :model.countries]

    np.testing.assert_allclose(torch_errors, numpy_errors, rtol=1e-10, atol=1e-12)


def test_resources_match_output_plus_capital():
    model = MultiCountryModel(countries=2)
    states = box_states(model, 10)
    k, loga = model.split(states)
    expected = model.output(k, loga) + (1 - model.delta) * k
    actual = resources(model, torch.as_tensor(k), torch.as_tensor(loga)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-14)
