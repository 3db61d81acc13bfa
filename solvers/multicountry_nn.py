"""Neural-network solution of the N-country model: an MLP trained by Adam or SGD on Euler residuals.

The network maps the 2N normalised log states to N + 1 logits, and a softmax turns them
into shares of world resources `W = sum_j (A a_j k_j^alpha + (1 - delta) k_j)`:

    x = ((log k - log k_mid) / h_k, log a / h_a)    centred and scaled by the state box in logs
    s = softmax(log s0(log a) + B tanh(g(x) / B))   s0: the shares of a first guess, (N + 1,)
    k'_j = W s_j,  j = 1..N;  world consumption W s_(N+1) > 0

with B = CORRECTION_BOUND. The first guess consumes the steady-state share of W,
`css / (A + 1 - delta)`, and splits investment across countries in proportion to
`exp(rho log a_j / (1 - alpha))`, the split that equalises expected marginal products
without risk. It depends on k only through W, as the policy does when phi = 0: a guess
with country-specific persistence in k (such as the polynomial solvers' first guess)
let simulated paths drift away at N = 50. With the last layer initialised to zero,
training starts exactly at that guess. Every policy of this form keeps k' > 0 and
world consumption positive when phi = 0. NOTE: with adjustment costs (phi > 0) the
cost is subtracted after the split, so a network can still produce c <= 0; such states
give NaN residuals, which are left out of the loss and make the job diverge if they
persist on the evaluator's path.

The loss is the mean over a batch of states of the squared unit-free Euler errors of
every country (`MultiCountryModel.euler_errors`, rebuilt here in torch), with the
expectation taken by one of these rules:

- "m1" (the default), "m2", "gauss_hermite": the deterministic rules of
  `solvers.integration`, the same nodes for every state;
- "monte_carlo": `draws` fresh draws per state and step, equal weights;
- "all_in_one": two independent draws per state, and the loss is the mean of
  `e(eps_1) e(eps_2)`. The draws are independent, so its expectation is the squared
  expected error, without the variance term that squaring one draw's error adds.

A batch mixes states of `batch_size` chains simulated under the current policy (the
share `ergodic_share`) with uniform draws from the state box widened by `domain_margin`.
The chains advance ADVANCE_PERIODS periods every ADVANCE_EVERY steps, so the training
states follow the ergodic set as the policy changes. Training runs in float32 on the CPU,
or on CUDA when the job requests device "gpu" (or "auto" and one exists).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch

from solvers.control import SolveControl
from solvers.integration import make_rule
from solvers.methods import MethodSpec, NNBasis
from solvers.multicountry import MultiCountryModel
from solvers.nn import ACTIVATIONS, resolve_device
from solvers.sampled import build_optimizer, take_step
from solvers.solution import Solution

logger = logging.getLogger(__name__)

CORRECTION_BOUND = 5.0  # largest shift of a log share from the first guess
ADVANCE_EVERY = 10  # steps between two advances of the training chains
ADVANCE_PERIODS = 5  # periods the chains move at each advance
BURN_IN = 200  # periods the chains run under the first guess before training
REPORT_EVERY = 25  # steps between two progress reports
EVALUATE_ROWS = 50_000  # states per forward pass of the numpy policy
RULES = ("m1", "m2", "gauss_hermite", "monte_carlo", "all_in_one")
# Steps with at most this many hidden activations (batch x nodes x width) train on one
# thread, because below it torch's thread coordination costs more than the work. Measured on a 2-core VM
# under load: 47 ms a step with 2 threads, 3 ms with 1, at N = 1, width 32, batch 256.
ONE_THREAD_ACTIVATIONS = 1_000_000


class MultiCountryNet(torch.nn.Module):
    """Policy k'(states) of the N-country model: an MLP correcting a first guess's shares of W.

    forward takes states (n, 2N) ordered [k_1..k_N, log a_1..log a_N] and returns k' (n, N).
    """

    def __init__(self, model: MultiCountryModel, basis: NNBasis):
        super().__init__()
        self.model = model
        n = model.countries
        layers: list[torch.nn.Module] = []
        size = 2 * n
        for _ in range(basis.depth):
            layers += [torch.nn.Linear(size, basis.width), ACTIVATIONS[basis.activation]()]
            size = basis.width
        last = torch.nn.Linear(size, n + 1)
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        layers.append(last)
        self.mlp = torch.nn.Sequential(*layers)

        log_bounds = model.log_bounds
        self.register_buffer("centre", torch.as_tensor(log_bounds.mean(axis=1)))
        self.register_buffer("half_width", torch.as_tensor((log_bounds[:, 1] - log_bounds[:, 0]) / 2))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        n = self.model.countries
        k, loga = states[:, :n], states[:, n:]
        x = (torch.cat([torch.log(k), loga], dim=1) - self.centre) / self.half_width
        wealth = resources(self.model, k, loga).sum(dim=1, keepdim=True)

        model = self.model
        consumed = model.css / (model.A + 1 - model.delta)
        split = torch.log_softmax(model.rho * loga / (1 - model.alpha), dim=1)
        base = torch.cat([split + math.log(1 - consumed),
                          torch.full_like(wealth, math.log(consumed))], dim=1)
        correction = CORRECTION_BOUND * torch.tanh(self.mlp(x) / CORRECTION_BOUND)
        shares = torch.softmax(base + correction, dim=1)
        return wealth * shares[:, :n]


def resources(model: MultiCountryModel, k: torch.Tensor, loga: torch.Tensor) -> torch.Tensor:
    """Return each country's output plus undepreciated capital, the shape of k."""
    # exp and log instead of pow, whose forward and backward cost 4 times as much on CPU.
    return model.A * torch.exp(loga + model.alpha * torch.log(k)) + (1 - model.delta) * k


class TorchEuler:
    """The Euler terms of `MultiCountryModel.euler_parts` in torch, for training.

    `terms(net, states, eps)` returns `beta (c'_j / c_j)^(-gamma_j) R'_j / (1 + phi (k'/k - 1))`
    of shape (n, J, N) for per-state nodes eps (n, J, N) or shared nodes (1, J, N); the
    expectation of these terms minus 1 is the unit-free Euler error.
    """

    def __init__(self, model: MultiCountryModel, dtype: torch.dtype, device: torch.device):
        self.model = model
        self.gammas = torch.as_tensor(model.gammas, dtype=dtype, device=device)
        self.log_tau = torch.as_tensor(np.log(model.tau), dtype=dtype, device=device)
        self.one_gamma = bool(np.all(model.gammas == model.gammas[0]))
        self.log_utility = bool(np.all(model.gammas == 1.0))
        share = np.exp(np.log(model.tau) / model.gammas[0])
        self.shares = torch.as_tensor(share / share.sum(), dtype=dtype, device=device)

    def consumption(self, k: torch.Tensor, loga: torch.Tensor, k_next: torch.Tensor) -> torch.Tensor:
        """Return the risk-sharing consumption (n, N) from the resource constraint."""
        model = self.model
        spent = k_next
        if model.phi != 0.0:
            spent = spent + 0.5 * model.phi * k * (k_next / k - 1) ** 2
        total = (resources(model, k, loga) - spent).sum(dim=1)
        if self.one_gamma:
            return total[:, None] * self.shares[None, :]
        return self._allocate(total)

    def _allocate(self, total: torch.Tensor) -> torch.Tensor:
        """Return c (n, N) with tau_j c_j^(-gamma_j) equal across j and sum c = total.

        Newton's method on x = log lambda runs without gradients, then one more Newton
        step with gradients, whose derivative at the solution is that of the implicit
        function, so the loss gradient includes how c moves with total.
        """
        log_total = torch.log(total)

        def step(x: torch.Tensor) -> torch.Tensor:
            c = torch.exp((self.log_tau[None, :] - x[:, None]) / self.gammas[None, :])
            sum_c = c.sum(dim=1)
            slope = -(c / self.gammas[None, :]).sum(dim=1) / sum_c
            return x - (torch.log(sum_c) - log_total) / slope

        with torch.no_grad():
            gamma_bar = self.gammas.mean()
            x = gamma_bar * (torch.logsumexp(self.log_tau / gamma_bar, dim=0) - log_total)
            for _ in range(30):
                x = step(x)
        x = step(x.detach())
        return torch.exp((self.log_tau[None, :] - x[:, None]) / self.gammas[None, :])

    def terms(self, net: MultiCountryNet, states: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        model, n = self.model, self.model.countries
        rows, nodes = states.shape[0], eps.shape[1]
        k, loga = states[:, :n], states[:, n:]
        k_next = net(states)
        c = self.consumption(k, loga, k_next)

        loga_next = model.rho * loga[:, None, :] + eps
        loga_next = loga_next.expand(rows, nodes, n)
        k_rep = k_next[:, None, :].expand(rows, nodes, n)
        next_states = torch.cat([k_rep, loga_next], dim=2).reshape(rows * nodes, 2 * n)
        k_next_next = net(next_states)
        c_next = self.consumption(k_rep.reshape(-1, n), loga_next.reshape(-1, n), k_next_next)
        c_next = c_next.reshape(rows, nodes, n)
        k_next_next = k_next_next.reshape(rows, nodes, n)

        log_k_next = torch.log(k_next)[:, None, :]
        gross_return = 1 - model.delta + model.alpha * model.A * torch.exp(loga_next + (model.alpha - 1) * log_k_next)
        if model.phi != 0.0:
            gross_return = gross_return + 0.5 * model.phi * ((k_next_next / k_rep) ** 2 - 1)
        marginal_cost = 1 + model.phi * (k_next / k - 1)
        if self.log_utility:
            discount = c[:, None, :] / c_next
        else:
            discount = torch.exp(-self.gammas * (torch.log(c_next) - torch.log(c)[:, None, :]))
        return model.beta * discount * gross_return / marginal_cost[:, None, :]


class ChainSampler:
    """Training states: chains simulated under the current policy, mixed with uniform box draws.

    The chains start at the steady state and run BURN_IN periods under the initial policy.
    `advance` moves them on with fresh shocks. Chain states are clipped to the widened box,
    so a poor early policy cannot carry the training set far outside the domain.
    """

    def __init__(self, model: MultiCountryModel, basis: NNBasis, chains: int, ergodic_share: float,
                 generator: torch.Generator, dtype: torch.dtype, device: torch.device):
        self.model, self.generator, self.dtype, self.device = model, generator, dtype, device
        self.chains, self.ergodic_share = chains, ergodic_share
        self.low, self.high = widened_box(model, basis.domain_margin)
        self.low = torch.as_tensor(self.low, dtype=dtype, device=device)
        self.high = torch.as_tensor(self.high, dtype=dtype, device=device)
        self.factor = torch.as_tensor(np.linalg.cholesky(model.shock_cov), dtype=dtype, device=device)
        steady = torch.as_tensor(model.steady_state(), dtype=dtype, device=device)
        self.state = steady.repeat(chains, 1)

    def advance(self, net: MultiCountryNet, periods: int) -> None:
        """Move every chain `periods` periods under net with fresh shocks."""
        n = self.model.countries
        with torch.no_grad():
            for _ in range(periods):
                z = torch.randn(self.chains, n, generator=self.generator, dtype=self.dtype, device=self.device)
                k_next = net(self.state)
                loga_next = self.model.rho * self.state[:, n:] + z @ self.factor.T
                state = torch.cat([k_next, loga_next], dim=1)
                state = torch.where(torch.isfinite(state), state, self.state)
                self.state = torch.minimum(torch.maximum(state, self.low), self.high)

    def batch(self, size: int) -> torch.Tensor:
        """Return `size` training states (size, 2N): chain states, then uniform box draws."""
        from_chains = min(self.chains, int(round(self.ergodic_share * size)))
        picked = torch.randperm(self.chains, generator=self.generator, device=self.device)[:from_chains]
        uniform = torch.rand(size - from_chains, self.low.shape[0], generator=self.generator,
                             dtype=self.dtype, device=self.device)
        return torch.cat([self.state[picked], self.low + uniform * (self.high - self.low)], dim=0)


def widened_box(model: MultiCountryModel, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the box widened by margin times its half-width per side; capital stays above half its lower end."""
    bounds = model.bounds
    half = (bounds[:, 1] - bounds[:, 0]) / 2
    low, high = bounds[:, 0] - margin * half, bounds[:, 1] + margin * half
    n = model.countries
    low[:n] = np.maximum(low[:n], 0.5 * bounds[:n, 0])
    return low, high


class TrainingRule:
    """The expectation rule of training: fixed nodes, or fresh draws per state and step."""

    def __init__(self, model: MultiCountryModel, method: MethodSpec, generator: torch.Generator,
                 dtype: torch.dtype, device: torch.device):
        integration = getattr(method, "integration", None)
        self.name = "m1" if integration is None or integration.kind == "default" else integration.kind
        if self.name not in RULES:
            raise ValueError(f"integration kind {self.name!r} is not available for the nn basis; "
                             f"valid choices: default, {', '.join(RULES)}")
        self.draws = 2 if self.name == "all_in_one" else int(getattr(integration, "draws", 1))
        self.generator, self.dtype, self.device = generator, dtype, device
        self.factor = torch.as_tensor(np.linalg.cholesky(model.shock_cov), dtype=dtype, device=device)
        self.eps = self.weights = None
        if self.name not in ("monte_carlo", "all_in_one"):
            eps, weights = make_rule(self.name, model.shock_cov, method.quadrature_nodes)
            self.eps = torch.as_tensor(eps, dtype=dtype, device=device)[None, :, :]
            self.weights = torch.as_tensor(weights, dtype=dtype, device=device)

    @property
    def nodes(self) -> int:
        """Number of next-period states per training state."""
        return self.draws if self.eps is None else self.eps.shape[1]

    def loss(self, euler: TorchEuler, net: MultiCountryNet, states: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Return the training loss and the largest |Euler error| estimate on the batch."""
        if self.eps is not None:
            errors = torch.einsum("j,njc->nc", self.weights, euler.terms(net, states, self.eps)) - 1
            errors = errors[torch.isfinite(errors).all(dim=1)]
            return (errors ** 2).mean(), float(errors.detach().abs().max())

        z = torch.randn(states.shape[0], self.draws, self.factor.shape[0], generator=self.generator,
                        dtype=self.dtype, device=self.device)
        terms = euler.terms(net, states, z @ self.factor.T)
        terms = terms[torch.isfinite(terms).all(dim=(1, 2))]
        if self.name == "all_in_one":
            product = (terms[:, 0] - 1) * (terms[:, 1] - 1)
            return product.mean(), float((terms.detach().mean(dim=1) - 1).abs().max())
        errors = terms.mean(dim=1) - 1
        return (errors ** 2).mean(), float(errors.detach().abs().max())


def training_nodes(model: MultiCountryModel, method: MethodSpec) -> int:
    """Return the next-period states per training state of the method's rule."""
    integration = getattr(method, "integration", None)
    name = "m1" if integration is None or integration.kind == "default" else integration.kind
    n = model.countries
    counts = {"m1": 2 * n, "m2": 2 * n * n + 1, "all_in_one": 2,
              "monte_carlo": getattr(integration, "draws", 1),
              "gauss_hermite": method.quadrature_nodes ** n}
    return int(counts[name])


def count_parameters(countries: int, basis: NNBasis) -> int:
    """Return the number of weights and biases of the MLP 2N -> width (x depth) -> N + 1."""
    size, total = 2 * countries, 0
    for _ in range(basis.depth):
        total += size * basis.width + basis.width
        size = basis.width
    return total + size * (countries + 1) + countries + 1


def estimate_bytes(countries: int, basis: NNBasis, batch_size: int, nodes: int) -> int:
    """Return an estimate of the peak bytes of one training step (float32 activations kept for backward).

    The next-period pass dominates: batch_size * nodes rows, each with the 2N inputs,
    `depth` hidden layers of `width` and about 12 N float32 intermediates of the residual.
    """
    rows = batch_size * (nodes + 1)
    per_row = 2 * countries + 2 * basis.depth * basis.width + 12 * countries
    return 4 * rows * per_row + 16 * count_parameters(countries, basis)


def numpy_policy(net: MultiCountryNet):
    """Return the policy as a numpy callable: states (n, 2N) float64 -> k' (n, N) float64.

    The network runs in its training dtype on its device, in batches of EVALUATE_ROWS rows.
    """
    parameter = next(net.parameters())

    def policy(states: np.ndarray) -> np.ndarray:
        states = np.asarray(states, dtype=float)
        out = np.empty((states.shape[0], net.model.countries))
        with torch.no_grad():
            for start in range(0, states.shape[0], EVALUATE_ROWS):
                block = torch.as_tensor(states[start:start + EVALUATE_ROWS], dtype=parameter.dtype,
                                        device=parameter.device)
                out[start:start + EVALUATE_ROWS] = net(block).double().cpu().numpy()
        return out

    return policy


def solve_multicountry_nn(model: MultiCountryModel, method: MethodSpec, seed: int, device: str,
                          control: SolveControl) -> Solution:
    """Train the network policy of the N-country model; see the module docstring.

    method.basis is the NNBasis (width, depth, activation, domain_margin), method.objective
    the sampled_mse settings (batch_size, ergodic_share), method.algorithm adam or sgd
    (steps, learning_rate), and method.integration the training rule. The seed fixes the
    initial weights, the shocks of the chains, the batches and the Monte Carlo draws.
    `converged` is True when every step ran and the chains ended finite and inside the
    widened box without clipping.
    """
    torch_device = resolve_device(device)
    dtype = torch.float32
    basis, objective, algorithm = method.basis, method.objective, method.algorithm
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MultiCountryNet(model, basis).to(device=torch_device, dtype=dtype)
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    euler = TorchEuler(model, dtype, torch_device)
    rule = TrainingRule(model, method, generator, dtype, torch_device)
    sampler = ChainSampler(model, basis, objective.batch_size, objective.ergodic_share, generator,
                           dtype, torch_device)
    sampler.advance(net, BURN_IN)

    logger.info("multi-country nn start: N=%d, %dx%d %s, rule %s (%d nodes), %s %d steps, batch %d, "
                "device %s, seed %d", model.countries, basis.depth, basis.width, basis.activation,
                rule.name, rule.nodes, algorithm.kind, algorithm.steps, objective.batch_size,
                torch_device, seed)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    if torch_device.type == "cpu" and objective.batch_size * rule.nodes * basis.width <= ONE_THREAD_ACTIVATIONS:
        torch.set_num_threads(1)
    try:
        last_max = train(net, euler, rule, sampler, objective.batch_size, algorithm, control)
    finally:
        torch.set_num_threads(threads)
    inside = _chains_inside(model, net, sampler)
    logger.info("multi-country nn done: %d steps in %.1f s, last batch max |e| %.2e, chains inside %s",
                algorithm.steps, time.perf_counter() - started, last_max, inside)

    net.eval()
    parameters = {"kind": "multi_country_nn", "basis": basis.model_dump(),
                  "state_dict": {name: value.detach().cpu().double().tolist()
                                 for name, value in net.state_dict().items() if name.startswith("mlp.")}}
    extra = {"rule": rule.name, "rule_nodes": rule.nodes, "last_batch_max_abs_euler_error": last_max,
             "device": str(torch_device), "chains_inside_box": inside}
    return Solution(policy=numpy_policy(net), n_params=count_parameters(model.countries, basis),
                    n_conditions=objective.batch_size * model.countries, iterations=algorithm.steps,
                    converged=inside, parameters=parameters, extra=extra)


def train(net: MultiCountryNet, euler: TorchEuler, rule: TrainingRule, sampler: ChainSampler,
          batch_size: int, algorithm, control: SolveControl) -> float:
    """Run the optimizer for algorithm.steps steps; return the last reported batch max |e|.

    Calls `control.report(step, batch max |e|)` at step 1 and every REPORT_EVERY steps.
    """
    optimizer, schedule = build_optimizer(net.parameters(), algorithm)
    last_max = math.nan
    for step in range(1, algorithm.steps + 1):
        states = sampler.batch(batch_size)
        loss, batch_max = rule.loss(euler, net, states)
        take_step(optimizer, schedule, loss)

        if step % ADVANCE_EVERY == 0:
            sampler.advance(net, ADVANCE_PERIODS)
        if step == 1 or step % REPORT_EVERY == 0 or step == algorithm.steps:
            last_max = batch_max
            control.report(step, batch_max)
    return last_max


def _chains_inside(model: MultiCountryModel, net: MultiCountryNet, sampler: ChainSampler) -> bool:
    """Return True when one more period keeps every chain finite and strictly inside the widened box."""
    n = model.countries
    with torch.no_grad():
        k_next = net(sampler.state)
    values = k_next.double().cpu().numpy()
    low, high = sampler.low[:n].double().cpu().numpy(), sampler.high[:n].double().cpu().numpy()
    return bool(np.all(np.isfinite(values)) and np.all(values > low) and np.all(values < high))


def build_policy(model: MultiCountryModel, parameters: dict[str, Any]):
    """Rebuild the numpy policy states (n, 2N) -> k' (n, N) from `Solution.parameters`, in float64."""
    basis = NNBasis.model_validate(parameters["basis"])
    with torch.random.fork_rng(devices=[]):
        net = MultiCountryNet(model, basis).double()
    state = {name.removeprefix("mlp."): torch.tensor(value, dtype=torch.float64)
             for name, value in parameters["state_dict"].items()}
    net.mlp.load_state_dict(state)
    net.eval()
    return numpy_policy(net)
