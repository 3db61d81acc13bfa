"""Neural-network solution of the growth model: an MLP trained by Adam on Euler residuals.

The network outputs a correction `g(x)` to the log-odds of the share of cash on hand
that is consumed, around the model's stable first guess `c0 = initial_consumption`:

    x = 2 (s - low) / (high - low) - 1          state s = (k, log z) scaled to [-1, 1]
    logit(share) = log(c0 / (m - c0)) + B tanh(g(x) / B)
    c = m sigmoid(logit(share)),   k' = m - c

with cash on hand `m` and the bound B = CORRECTION_BOUND. Every such policy is feasible
(0 < c < m) at every state, and with the last layer initialised to zero training starts
exactly at the first guess, on the saddle path.

Training minimises the mean squared unit-free Euler error `e(s)` of `GrowthModel.euler_error`
over mini-batches of states, with the solver's Gauss-Hermite rule for the expectation and
torch's automatic differentiation for the gradient. A batch mixes uniform draws from the
widened approximation box with states of a pool of chains simulated under the current
policy (the share `ergodic_share`), so the ergodic region gets dense coverage. The
sampler and the optimizer are those of `solvers.sampled`, which trains linear bases on
the same objective.

Residual-only training can settle on an explosive policy: it satisfies the Euler equation
inside the box while simulated capital runs out of it. The guard is a periodic stability
check: chains started across the capital interval of the box are simulated with fixed
shocks, and the network passes when every chain keeps capital inside the widened box.
A failed check restores the best passing checkpoint (lowest maximum Euler error on the
check paths), and training ends on that best checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from solvers.autodiff import torch_threads
from solvers.control import SolveControl
from solvers.growth import GrowthModel, Policy
from solvers.quadrature import gauss_hermite
from solvers.sampled import (ADVANCE_EVERY, ADVANCE_PERIODS, REPORT_EVERY, StateSampler, build_optimizer,
                             take_step)
from solvers.solution import Solution
from solvers.methods import AdamAlgorithm, MethodSpec, NNBasis, SGDAlgorithm

logger = logging.getLogger(__name__)

CORRECTION_BOUND = 5.0  # largest shift of the consumption share's log-odds from the first guess
# Networks up to this size train on one torch thread on the CPU, because their matrix
# products are too small to gain from more. On a busy 2-core VM a second thread waiting
# for a core made 300 steps of a width-16 network take 96 s instead of 5 s.
SINGLE_THREAD_MAX_PARAMS = 100_000
CHECK_EVERY = 500  # steps between stability checks
CHECK_CHAINS = 16  # chains of a stability check, started evenly across the box's capital interval
CHECK_PERIODS = 400  # periods of each stability-check chain

ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU,
               "sigmoid": torch.nn.Sigmoid, "silu": torch.nn.SiLU}


class SharePolicy(torch.nn.Module):
    """Consumption policy `c(k, log z)` whose MLP corrects the first guess's share of cash on hand.

    bounds: (2, 2) approximation box, rows k and log z, that the inputs are scaled over.
    Calling it on tensors k and log z of one shape returns consumption of that shape.
    """

    def __init__(self, model: GrowthModel, basis: NNBasis, bounds: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("low", torch.as_tensor(bounds[:, 0], dtype=torch.float64))
        self.register_buffer("width", torch.as_tensor(bounds[:, 1] - bounds[:, 0], dtype=torch.float64))
        # The first guess is `initial_consumption = share z k^alpha`. That method takes numpy
        # arrays only, so its share of output is recomputed here for tensors.
        self.first_guess_share = model.css / model.kss ** model.alpha
        self.mlp = build_mlp(basis)

    def forward(self, k: torch.Tensor, logz: torch.Tensor) -> torch.Tensor:
        shape = k.shape
        k, logz = k.reshape(-1), logz.reshape(-1)
        x = 2 * (torch.stack([k, logz], dim=1) - self.low) / self.width - 1
        correction = CORRECTION_BOUND * torch.tanh(self.mlp(x)[:, 0] / CORRECTION_BOUND)

        # Log-odds of the first guess, log(c0 / (m - c0)). Writing m - c0 out as saved
        # income avoids subtracting near-equal terms.
        output = torch.exp(logz) * k ** self.model.alpha
        first_guess = self.first_guess_share * output
        saved = (1 - self.model.delta) * k + (1 - self.first_guess_share) * output
        logit = torch.log(first_guess) - torch.log(saved) + correction
        return (self.model.cash_on_hand(k, logz) * torch.sigmoid(logit)).reshape(shape)


def build_mlp(basis: NNBasis) -> torch.nn.Sequential:
    """Return the MLP 2 -> width (x depth) -> 1 with its last layer set to zero."""
    layers: list[torch.nn.Module] = []
    size = 2
    for _ in range(basis.depth):
        layers += [torch.nn.Linear(size, basis.width), ACTIVATIONS[basis.activation]()]
        size = basis.width
    last = torch.nn.Linear(size, 1)
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    layers.append(last)
    return torch.nn.Sequential(*layers)


def resolve_device(device: str) -> torch.device:
    """Map the spec's device ('cpu', 'gpu' or 'auto') to a torch device."""
    if device == "cpu":
        return torch.device("cpu")
    if device == "gpu":
        if not torch.cuda.is_available():
            raise ValueError("device 'gpu' was requested, but torch finds no CUDA device. "
                             "Use device 'cpu' or 'auto', or run the job on a worker with a GPU.")
        return torch.device("cuda")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ValueError(f"unknown device {device!r}; valid choices: cpu, gpu, auto")


# NOTE: training on CUDA is untested, and CUDA kernels are not guaranteed to give bitwise
# equal weights from run to run, so a rerun with the same seed may differ there.


@dataclass
class CheckResult:
    """Outcome of one stability check: whether capital stayed inside the check's interval,
    and the largest |Euler error| on the check paths (inf when it did not)."""

    stable: bool
    max_error: float


class StabilityCheck:
    """Stability test of a policy: fixed chains simulated under it must keep capital in a k interval.

    The chains start at CHECK_CHAINS capital levels spread evenly over the box's capital
    interval, at log z = 0, and share one fixed set of shocks across checks so that
    checks of different checkpoints compare like with like.
    """

    def __init__(self, model: GrowthModel, k_limits: tuple[float, float], seed: int,
                 eps: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype, device: torch.device):
        self.model = model
        self.k_limits = k_limits
        self.eps, self.weights = eps, weights
        box = model.bounds
        self.k_start = torch.linspace(box[0, 0], box[0, 1], CHECK_CHAINS, dtype=dtype, device=device)
        shocks = np.random.default_rng(seed).standard_normal((CHECK_PERIODS, CHECK_CHAINS))
        self.shocks = torch.as_tensor(shocks, dtype=dtype, device=device)

    @torch.no_grad()
    def run(self, policy: SharePolicy, control: SolveControl | None = None) -> CheckResult:
        """Simulate the chains and return whether they stayed in the interval, with the error.

        control, when given, is asked every 50 periods whether the job must stop, because
        for a large network the check takes long enough to overrun a time limit.
        """
        k, logz = self.k_start, torch.zeros_like(self.k_start)
        k_path, logz_path = [], []
        for t in range(CHECK_PERIODS):
            if control is not None and t % 50 == 0:
                control.check()
            k_path.append(k)
            logz_path.append(logz)
            k = self.model.cash_on_hand(k, logz) - policy(k, logz)
            logz = self.model.rho * logz + self.model.sigma * self.shocks[t]
        k_all, logz_all = torch.cat(k_path), torch.cat(logz_path)

        low, high = self.k_limits
        if not bool(torch.all(torch.isfinite(k_all) & (k_all >= low) & (k_all <= high))):
            return CheckResult(False, math.inf)
        errors = self.model.euler_error(policy, k_all, logz_all, self.eps, self.weights).abs()
        return CheckResult(True, float(errors.max()))


def solve_nn(model: GrowthModel, method: MethodSpec, seed: int, device: str,
             control: SolveControl) -> Solution:
    """Solve the growth model with a neural network trained by Adam; see the module docstring.

    Training runs in float32 on the chosen device. The returned policy is the best
    checkpoint that passed the stability check (the final weights when none passed),
    evaluated in float64 on the CPU. `converged` is True when all `steps` ran and the
    check after the last step kept simulated capital inside the approximation box.
    `seed` fixes the initial weights, the batches and the check's shocks, so a rerun on
    the same device gives the same parameters. Raises ValueError for a device torch
    cannot use, and lets SolveControl's exceptions (time-out, cancellation, divergence)
    propagate.
    """
    basis, algorithm = method.basis, method.algorithm
    torch_device = resolve_device(device)
    dtype = torch.float32
    bounds = model.approximation_bounds(basis.domain_margin)

    policy = initial_policy(model, basis, bounds, seed).to(device=torch_device, dtype=dtype)
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    eps_np, weights_np = gauss_hermite(method.quadrature_nodes)
    eps = torch.as_tensor(eps_np, dtype=dtype, device=torch_device)
    weights = torch.as_tensor(weights_np, dtype=dtype, device=torch_device)
    objective = method.objective
    sampler = StateSampler(model, bounds, objective.batch_size, objective.ergodic_share,
                           generator, dtype, torch_device)
    check = StabilityCheck(model, (bounds[0, 0], bounds[0, 1]), seed, eps, weights, dtype, torch_device)

    logger.info("nn training start: %dx%d %s, %s, %d steps, batch %d, learning rate %g, device %s, seed %d",
                basis.depth, basis.width, basis.activation, algorithm.kind, algorithm.steps,
                objective.batch_size, algorithm.learning_rate, torch_device, seed)
    n_params = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    threads = 1 if torch_device.type == "cpu" and n_params <= SINGLE_THREAD_MAX_PARAMS else None
    with torch_threads(threads):
        result = train(policy, sampler, check, eps, weights, algorithm, control)
    logger.info("nn training stop: %d steps, best stable check at step %d with max |e| %.2e, "
                "%d rollbacks, final check stable %s", result.steps, result.best_step,
                result.best_error, result.rollbacks, result.final_stable)

    parameters = policy_parameters(model, basis, bounds, result.state)
    best_error = result.best_error if math.isfinite(result.best_error) else None
    return Solution(
        policy=build_policy(parameters),
        n_params=n_params,
        n_conditions=objective.batch_size,
        iterations=result.steps,
        converged=result.final_stable,
        parameters=parameters,
        extra={"best_check_step": result.best_step, "best_check_max_error": best_error,
               "rollbacks": result.rollbacks},
    )


def initial_policy(model: GrowthModel, basis: NNBasis, bounds: np.ndarray, seed: int) -> SharePolicy:
    """Return the float64 CPU policy with weights drawn from `seed`, leaving torch's global
    random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SharePolicy(model, basis, bounds).double()


@dataclass
class TrainingResult:
    """Weights to return and how training went.

    state: the best checkpoint that passed its stability check, or the final weights
    when none passed. best_step and best_error locate that checkpoint (-1 and inf when
    none passed). final_stable: whether the check after the last step passed.
    """

    state: dict[str, torch.Tensor]
    best_step: int
    best_error: float
    steps: int
    rollbacks: int
    final_stable: bool


class CheckpointKeeper:
    """Store of the stable checkpoint with the lowest check error, restored when a check fails."""

    def __init__(self):
        self.state: dict[str, torch.Tensor] | None = None
        self.step = -1
        self.error = math.inf
        self.rollbacks = 0

    def update(self, policy: SharePolicy, step: int, result: CheckResult) -> None:
        """Store the policy when it passed and beats the best, or roll back when it failed.

        A failed check restores the best stable checkpoint, if one exists. Without one
        (the first guess itself failed, say under large shocks) training continues.
        """
        if result.stable and result.max_error <= self.error:
            self.state, self.step, self.error = _snapshot(policy), step, result.max_error
        elif not result.stable and self.state is not None:
            self.rollbacks += 1
            logger.warning("nn stability check failed at step %d: simulated capital left the "
                           "approximation box; restoring the checkpoint of step %d", step, self.step)
            policy.load_state_dict(self.state)
        elif not result.stable:
            logger.warning("nn stability check failed at step %d and no checkpoint has passed "
                           "yet; training continues", step)


def train(policy: SharePolicy, sampler: StateSampler, check: StabilityCheck,
          eps: torch.Tensor, weights: torch.Tensor, algorithm: AdamAlgorithm | SGDAlgorithm,
          control: SolveControl) -> TrainingResult:
    """Run Adam or SGD with momentum on the mean squared Euler error, with stability checks and rollbacks.

    The learning rate decays from `learning_rate` to 1% of it along a cosine. Calls
    `control.report(step, max |e| on the step's batch)` at step 1 and every REPORT_EVERY
    steps, and checks stability before the first step, every CHECK_EVERY steps and
    after the last step.
    """
    model = policy.model
    optimizer, schedule = build_optimizer(policy.parameters(), algorithm)
    keeper = CheckpointKeeper()
    keeper.update(policy, 0, check.run(policy, control))

    last_check = None
    for step in range(1, algorithm.steps + 1):
        k, logz = sampler.batch()
        errors = model.euler_error(policy, k, logz, eps, weights)
        loss = (errors ** 2).mean()
        take_step(optimizer, schedule, loss)

        if step == 1 or step % REPORT_EVERY == 0:
            control.report(step, float(errors.detach().abs().max()))
        if step % ADVANCE_EVERY == 0:
            sampler.advance(policy, ADVANCE_PERIODS)
        if step % CHECK_EVERY == 0 or step == algorithm.steps:
            last_check = check.run(policy, control)
            keeper.update(policy, step, last_check)

    final_stable = last_check is not None and last_check.stable
    state = keeper.state if keeper.state is not None else _snapshot(policy)
    return TrainingResult(state, keeper.step, keeper.error, algorithm.steps,
                          keeper.rollbacks, final_stable)


def _snapshot(policy: SharePolicy) -> dict[str, torch.Tensor]:
    """Return a detached copy of the policy's state dict."""
    return {name: value.detach().clone() for name, value in policy.state_dict().items()}


def policy_parameters(model: GrowthModel, basis: NNBasis, bounds: np.ndarray,
                      state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Return JSON-ready data from which `build_policy` rebuilds the policy."""
    return {
        "model": {**dataclasses.asdict(model), "k_box": list(model.k_box)},
        "basis": basis.model_dump(),
        "bounds": bounds.tolist(),
        "state_dict": {name: value.detach().cpu().double().tolist()
                       for name, value in state.items() if name.startswith("mlp.")},
    }


def build_policy(parameters: dict[str, Any]) -> Policy:
    """Rebuild the numpy policy `c(k, log z)` from `Solution.parameters`.

    The network runs in float64 on the CPU. The returned callable takes numpy arrays k
    and log z of one shape and returns consumption as float64 of that shape.
    """
    model_fields = dict(parameters["model"])
    model_fields["k_box"] = tuple(model_fields["k_box"])
    model = GrowthModel(**model_fields)
    basis = NNBasis.model_validate(parameters["basis"])
    bounds = np.asarray(parameters["bounds"], dtype=float)

    with torch.random.fork_rng(devices=[]):
        network = SharePolicy(model, basis, bounds).double()
    state = {name: torch.tensor(value, dtype=torch.float64)
             for name, value in parameters["state_dict"].items()}
    network.mlp.load_state_dict({name.removeprefix("mlp."): value for name, value in state.items()})
    network.eval()

    def policy(k: np.ndarray, logz: np.ndarray) -> np.ndarray:
        k_tensor = torch.as_tensor(np.asarray(k, dtype=np.float64))
        logz_tensor = torch.as_tensor(np.asarray(logz, dtype=np.float64))
        with torch.no_grad():
            return network(k_tensor, logz_tensor).numpy()

    return policy
