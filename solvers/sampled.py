"""Sampled mean squared Euler error: mini-batch training of a linear basis, and the pieces
that the neural-network solver shares with it.

The `sampled_mse` objective minimises the mean squared unit-free Euler error over
mini-batches of states with Adam or SGD and torch's automatic differentiation. Both the
network (`solvers.nn`) and the linear bases train on batches from one `StateSampler`:
uniform draws from the approximation domain mixed with states of a pool of chains
simulated under the current policy (the share `ergodic_share`). Both use the learning
rate of `build_optimizer`, which decays from `learning_rate` to 1% of it along a cosine.

For a monomial, Chebyshev, spline or grid basis the policy is `c = Phi(s) theta`, with
theta a float64 torch parameter that starts at the first guess the collocation solvers
use (`collocation.first_guess`). The Euler error needs 0 < c < m (cash on hand). A linear
policy can leave that interval, where the error is NaN. The collocation solvers reject
such a step in their line search, but a stochastic step cannot be rejected in the same
way. Training therefore clamps consumption into
[FEASIBLE_SHARE[0] m, FEASIBLE_SHARE[1] m], and a clamped point passes no gradient to c.
The returned policy is the plain `Phi theta`, as for every other linear-basis solver,
so the evaluator scores the coefficients themselves, and an infeasible policy makes the
job diverged.

`converged` is True when the largest absolute Euler residual of the returned policy on
the least-squares node set (oversampling 2, the points of the first guess) is below
CONVERGED_MAX_RESIDUAL. The record's `diagnostics.node_max_residual` contains that value.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from solvers.collocation import basis_diagnostics, build_basis, euler_system, first_guess, linear_policy
from solvers.control import SolveControl, SolveDiverged
from solvers.growth import GrowthModel
from solvers.quadrature import gauss_hermite
from solvers.solution import Solution

logger = logging.getLogger(__name__)

REPORT_EVERY = 25  # steps between calls of SolveControl.report
ADVANCE_EVERY = 10  # steps between advances of the simulated pool
ADVANCE_PERIODS = 2  # periods the pool moves at each advance
POOL_PER_BATCH = 4  # simulated chains in the pool per ergodic state in a batch
FEASIBLE_SHARE = (1e-3, 1 - 1e-3)  # consumption is clamped to these shares of cash on hand in training
CONVERGED_MAX_RESIDUAL = 1e-3  # max |Euler residual| on the node set below which a run counts as converged
CHECK_OVERSAMPLING = 2.0  # node set of the convergence check, as a multiple of K


class StateSampler:
    """Source of mini-batches of states: uniform draws from a box plus a pool of simulated chains.

    The pool starts uniform over the box and moves under the current policy with its own
    shocks. A chain whose capital leaves the box or becomes non-finite restarts at a
    uniform draw, so the batch stays where the policy is trained.
    """

    def __init__(self, model: GrowthModel, bounds: np.ndarray, batch_size: int, ergodic_share: float,
                 generator: torch.Generator, dtype: torch.dtype, device: torch.device):
        self.model = model
        self.generator = generator
        self.low = torch.as_tensor(bounds[:, 0], dtype=dtype, device=device)
        self.width = torch.as_tensor(bounds[:, 1] - bounds[:, 0], dtype=dtype, device=device)
        self.n_ergodic = int(round(ergodic_share * batch_size))
        self.n_uniform = batch_size - self.n_ergodic
        self.pool = self.uniform(POOL_PER_BATCH * self.n_ergodic)

    def uniform(self, n: int) -> torch.Tensor:
        """Return n states drawn uniformly from the box, shape (n, 2)."""
        unit = torch.rand(n, 2, generator=self.generator, dtype=self.low.dtype, device=self.low.device)
        return self.low + unit * self.width

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return k and log z of one mini-batch, each of shape (batch_size,)."""
        if not self.n_ergodic:
            states = self.uniform(self.n_uniform)
            return states[:, 0], states[:, 1]
        pick = torch.randint(self.pool.shape[0], (self.n_ergodic,), generator=self.generator,
                             device=self.pool.device)
        states = torch.cat([self.uniform(self.n_uniform), self.pool[pick]])
        return states[:, 0], states[:, 1]

    @torch.no_grad()
    def advance(self, policy, periods: int) -> None:
        """Move every chain of the pool forward by `periods` periods under the policy.

        policy maps tensors k and log z of one shape to consumption of that shape.
        """
        k, logz = self.pool[:, 0], self.pool[:, 1]
        for _ in range(periods):
            shock = torch.randn(k.shape, generator=self.generator, dtype=k.dtype, device=k.device)
            k = self.model.cash_on_hand(k, logz) - policy(k, logz)
            logz = self.model.rho * logz + self.model.sigma * shock
        self.pool = torch.stack([k, logz], dim=1)

        outside = ~((k >= self.low[0]) & (k <= self.low[0] + self.width[0]))
        if outside.any():
            self.pool[outside] = self.uniform(int(outside.sum()))


def build_optimizer(parameters, algorithm) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Return the Adam or SGD (with momentum) optimizer of an algorithm spec and its schedule,
    a cosine decay of the learning rate from `learning_rate` to 1% of it over `steps`."""
    if algorithm.kind == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=algorithm.learning_rate, momentum=algorithm.momentum)
    elif algorithm.kind == "adam":
        optimizer = torch.optim.Adam(parameters, lr=algorithm.learning_rate)
    else:
        raise ValueError(f"algorithm {algorithm.kind!r} does not train on mini-batches; "
                         f"valid choices: adam, sgd")
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=algorithm.steps, eta_min=0.01 * algorithm.learning_rate)
    return optimizer, schedule


def take_step(optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
              loss: torch.Tensor) -> None:
    """Apply one optimizer step down the gradient of loss, then advance the learning-rate schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()


def clamped_policy(model: GrowthModel, torch_basis, theta: torch.Tensor):
    """Return c(k, log z) = Phi theta clamped into the FEASIBLE_SHARE interval of cash on hand."""
    def consumption(k: torch.Tensor, logz: torch.Tensor) -> torch.Tensor:
        cash = model.cash_on_hand(k, logz)
        c = torch_basis.policy(theta)(k, logz)
        return torch.minimum(torch.maximum(c, FEASIBLE_SHARE[0] * cash), FEASIBLE_SHARE[1] * cash)

    return consumption


def solve_sampled(model: GrowthModel, method, control: SolveControl, seed: int = 0) -> Solution:
    """Solve the growth model with a linear basis by Adam or SGD on the sampled mean squared
    Euler error. The module docstring states the clamp and the convergence rule.

    seed fixes the batches and any random basis nodes, so a rerun gives the same theta.
    Raises SolveDiverged when the batch loss becomes non-finite. SolveControl's time-out
    and cancellation propagate.
    """
    from solvers.autodiff import TorchBasis, torch_threads

    # NOTE: the default learning rates were set for network weights. Adam moves every
    # coefficient by about the learning rate per step, whatever its scale. After 1000 steps
    # Chebyshev degree 5 reached max |R| 1.7e-6 on the nodes, degree 6 reached 1.3e-4 with
    # seed 1 but stalled at 0.23 with seed 0 (errors at the log z edge of the domain), and
    # degree 10, whose high coefficients are below 1e-6, ended at 0.46. SGD needed
    # learning_rate 2 at degree 5. The convergence rule reports such runs as unconverged.
    basis = build_basis(model, method.basis, seed)
    objective, algorithm = method.objective, method.algorithm
    eps_np, weights_np = gauss_hermite(method.quadrature_nodes)
    theta = torch.nn.Parameter(torch.as_tensor(first_guess(model, basis), dtype=torch.float64))
    policy = clamped_policy(model, TorchBasis(basis), theta)
    generator = torch.Generator().manual_seed(seed)
    sampler = StateSampler(model, basis.bounds, objective.batch_size, objective.ergodic_share,
                           generator, torch.float64, torch.device("cpu"))

    logger.info("sampled_mse start: %s K %d, %s, %d steps, batch %d, learning rate %g, seed %d",
                method.basis.kind, basis.n_params, algorithm.kind, algorithm.steps,
                objective.batch_size, algorithm.learning_rate, seed)
    # Batches of a few thousand points run faster on one torch thread than on several
    # that wait on each other, as for the small dense systems of the collocation solvers.
    with torch_threads(1):
        train_linear(policy, theta, sampler, eps_np, weights_np, algorithm, control)

    theta_np = theta.detach().numpy().copy()
    points = basis.nodes(oversampling=CHECK_OVERSAMPLING)
    with np.errstate(all="ignore"):
        residual, _ = euler_system(model, basis, theta_np, points, eps_np, weights_np, False)
    node_max = float(np.max(np.abs(residual))) if np.all(np.isfinite(residual)) else float("inf")
    converged = node_max < CONVERGED_MAX_RESIDUAL
    logger.info("sampled_mse stop: %d steps, max |R| %.2e on %d nodes, converged %s",
                algorithm.steps, node_max, points.shape[0], converged)

    parameters = {"basis": method.basis.model_dump(), "bounds": basis.bounds.tolist(),
                  "theta": theta_np.tolist()}
    diagnostics = {**basis_diagnostics(basis, points), "node_max_residual": node_max}
    return Solution(policy=linear_policy(basis, theta_np), n_params=basis.n_params,
                    n_conditions=objective.batch_size, iterations=algorithm.steps,
                    converged=converged, parameters=parameters, extra=diagnostics)


def train_linear(policy, theta: torch.nn.Parameter, sampler: StateSampler, eps: np.ndarray,
                 weights: np.ndarray, algorithm, control: SolveControl) -> None:
    """Run Adam or SGD on the mean squared Euler error of the policy, updating theta in place.

    Calls `control.report(step, max |e| on the step's batch)` at step 1 and every
    REPORT_EVERY steps, and raises SolveDiverged at the first non-finite batch loss.
    """
    model = sampler.model
    eps_t = torch.as_tensor(eps, dtype=theta.dtype)
    weights_t = torch.as_tensor(weights, dtype=theta.dtype)
    optimizer, schedule = build_optimizer([theta], algorithm)
    for step in range(1, algorithm.steps + 1):
        k, logz = sampler.batch()
        errors = model.euler_error(policy, k, logz, eps_t, weights_t)
        loss = (errors ** 2).mean()
        if not torch.isfinite(loss):
            raise SolveDiverged(f"the batch loss became {float(loss)} at step {step}", step, float("inf"))
        take_step(optimizer, schedule, loss)

        if step == 1 or step % REPORT_EVERY == 0:
            control.report(step, float(errors.detach().abs().max()))
        if step % ADVANCE_EVERY == 0:
            sampler.advance(policy, ADVANCE_PERIODS)
