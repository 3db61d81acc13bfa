"""Torch versions of the linear bases and of the Euler system, for automatic differentiation.

`TorchBasis` evaluates `c(s) = Phi(s) theta` for a monomial, Chebyshev or B-spline basis
of `solvers.bases` with torch operations only, so torch differentiates c with respect to
theta and to the state s, to any order. With such a policy, the Euler residual of
`GrowthModel.euler_error` at fixed nodes gives, by `torch.func`:

- `autodiff_system`: R (M,) and its Jacobian dR/dtheta (M, K) by forward mode, in place
  of the analytic Jacobian of `collocation.euler_system`;
- `loss_hessian`: the Hessian (K, K) of the least-squares loss `L = ||R||^2 / (2M)`,
  which is `J'J / M + sum_i r_i Hess(r_i) / M`, by forward mode over reverse mode.

Everything runs in float64 on the CPU. Both derivatives push K tangent vectors through
the residual, so their time grows with K times the cost of one residual. The tangents go
through in chunks of at most TANGENT_BUDGET / (points x width) vectors, which bounds the
memory, and a `check` callback runs between chunks so that a time limit or a
cancellation stops a long derivative.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from solvers.bases import ChebyshevBasis, MonomialBasis, SplineBasis, TensorBasis
from solvers.growth import GrowthModel

logger = logging.getLogger(__name__)

DTYPE = torch.float64
# Entries (points x basis width x tangents) in one chunk of tangent vectors. With 4e6, a
# Hessian at K = 441 peaked at 1.2 GB resident (0.6 GB with 1e6, 3.4 GB with 1.6e7),
# measured on a 2-core VM.
TANGENT_BUDGET = 4_000_000


class TorchBasis:
    """A linear basis of `solvers.bases` evaluated with torch operations.

    Polynomial factors follow the same recurrences as the numpy basis (extrapolating
    outside the box). A B-spline computes only the `order + 1` functions that are
    non-zero at a point, by the Cox-de Boor recursion, and places them in a dense
    (N, n) factor. It extends the first and last polynomial pieces outside the domain,
    as `scipy.interpolate.BSpline` does with `extrapolate=True`.
    """

    def __init__(self, basis: TensorBasis):
        if not isinstance(basis, (ChebyshevBasis, MonomialBasis, SplineBasis)):
            raise ValueError(f"TorchBasis takes a chebyshev, monomial or spline basis; "
                             f"got {type(basis).__name__}")
        self.basis = basis
        self.sizes = list(basis.sizes)
        self.n_params = basis.n_params
        # Python floats, because 0-d tensors would cost a conversion in every operation.
        self.bounds = [(float(a), float(b)) for a, b in basis.bounds]
        indices = getattr(basis, "multi_indices", None)
        self.multi_indices = None if indices is None else torch.as_tensor(indices)
        if isinstance(basis, SplineBasis):
            self.knots = [torch.as_tensor(t, dtype=DTYPE) for t in basis.knots]

    @property
    def width(self) -> int:
        """Return the columns of the widest (N, columns) intermediate: the largest per-state
        factor, or the (N, K) matrix of a complete polynomial basis."""
        return self.n_params if self.multi_indices is not None else max(self.sizes)

    def evaluate(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Return `Phi(points) theta`, shape (N,), for theta (K,) and points (N, d)."""
        if isinstance(self.basis, SplineBasis):
            return self._evaluate_spline(theta, points)
        factors = [self._polynomial_factor(j, points[:, j]) for j in range(len(self.sizes))]
        if self.multi_indices is not None:
            matrix = factors[0][:, self.multi_indices[:, 0]]
            for j in range(1, len(factors)):
                matrix = matrix * factors[j][:, self.multi_indices[:, j]]
            return matrix @ theta

        # Contract one state at a time, as `TensorBasis.evaluate` does.
        n = points.shape[0]
        values = factors[0] @ theta.reshape(self.sizes[0], -1)
        for j in range(1, len(factors)):
            values = values.reshape(n, self.sizes[j], -1)
            values = torch.einsum("nj,njr->nr", factors[j], values)
        return values[:, 0]

    def policy(self, theta: torch.Tensor) -> Callable:
        """Return c(k, log z) for tensors k and log z of one shape, consumption of that shape."""
        def consumption(k: torch.Tensor, logz: torch.Tensor) -> torch.Tensor:
            points = torch.stack([k.reshape(-1), logz.reshape(-1)], dim=1)
            return self.evaluate(theta, points).reshape(k.shape)

        return consumption

    def _polynomial_factor(self, dim: int, x: torch.Tensor) -> torch.Tensor:
        """Return the (N, sizes[dim]) Chebyshev or monomial values of one state."""
        a, b = self.bounds[dim]
        n = self.sizes[dim]
        if isinstance(self.basis, ChebyshevBasis):
            xi = 2 * (x - a) / (b - a) - 1
            twice = 2 * xi
            columns = [torch.ones_like(xi), xi][:n]
            for i in range(1, n - 1):
                columns.append(twice * columns[i] - columns[i - 1])
        else:
            u = (x - a) / (b - a)
            columns = [torch.ones_like(u)]
            for _ in range(1, n):
                columns.append(columns[-1] * u)
        return torch.stack(columns, dim=1)

    def _spline_local(self, dim: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the order + 1 non-zero B-spline values at each point (N, p + 1) and their
        columns (N, p + 1), by the Cox-de Boor recursion on the point's knot span."""
        t, p, n = self.knots[dim], self.basis.order, self.sizes[dim]
        # The knot span t[span] <= x < t[span + 1] is a constant of the point: clamping it
        # to the first or last span extends those pieces outside the domain.
        span = torch.searchsorted(t, x.detach().contiguous(), right=True) - 1
        span = span.clamp(p, n - 1)
        left = [x - t[span + 1 - j] for j in range(1, p + 1)]
        right = [t[span + j] - x for j in range(1, p + 1)]

        values = [torch.ones_like(x)]
        for r in range(1, p + 1):
            saved = torch.zeros_like(x)
            updated = []
            for s in range(r):
                ratio = values[s] / (right[s] + left[r - s - 1])
                updated.append(saved + right[s] * ratio)
                saved = left[r - s - 1] * ratio
            updated.append(saved)
            values = updated
        columns = span[:, None] - p + torch.arange(p + 1)
        return torch.stack(values, dim=1), columns

    def _evaluate_spline(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Return `Phi(points) theta`, placing each state's non-zero values in a dense (N, n) factor."""
        factors = []
        for j in range(len(self.sizes)):
            values, columns = self._spline_local(j, points[:, j])
            dense = torch.zeros(points.shape[0], self.sizes[j], dtype=values.dtype)
            factors.append(dense.scatter(1, columns, values))
        n = points.shape[0]
        result = factors[0] @ theta.reshape(self.sizes[0], -1)
        for j in range(1, len(factors)):
            result = result.reshape(n, self.sizes[j], -1)
            result = torch.einsum("nj,njr->nr", factors[j], result)
        return result[:, 0]


def euler_residual_function(model: GrowthModel, basis: TensorBasis, points: np.ndarray,
                            eps: np.ndarray, weights: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return theta (K,) -> the unit-free Euler residuals (M,) at fixed nodes (M, 2), in torch.

    eps, weights: (J,) quadrature rule of the innovation. The residual is
    `GrowthModel.euler_error` of the policy `Phi theta`, the quantity `euler_system` computes.
    """
    torch_basis = TorchBasis(basis)
    k = torch.as_tensor(points[:, 0], dtype=DTYPE)
    logz = torch.as_tensor(points[:, 1], dtype=DTYPE)
    eps_t = torch.as_tensor(eps, dtype=DTYPE)
    weights_t = torch.as_tensor(weights, dtype=DTYPE)

    def residual(theta: torch.Tensor) -> torch.Tensor:
        return model.euler_error(torch_basis.policy(theta), k, logz, eps_t, weights_t)

    return residual


def tangent_chunk(basis: TensorBasis, n_nodes: int, n_quad: int) -> int:
    """Return how many tangent vectors go through the residual at once (at least 1)."""
    entries = n_nodes * (n_quad + 1) * TorchBasis(basis).width
    return max(1, min(basis.n_params, TANGENT_BUDGET // max(entries, 1)))


def directional_derivatives(function: Callable[[torch.Tensor], torch.Tensor], theta: np.ndarray,
                            chunk: int, check: Callable[[], None] | None = None) -> np.ndarray:
    """Return the derivatives of function at theta along every unit vector, shape (K, ...).

    Row i is `d function / d theta_i`, by forward mode, `chunk` tangents at a time;
    check() runs after each chunk.
    """
    theta_t = torch.as_tensor(theta, dtype=DTYPE)
    n_params = theta_t.numel()

    def along(tangent: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(function, (theta_t,), (tangent,))[1]

    rows = []
    with warnings.catch_warnings():
        # torch 2.13 compiles its forward-mode decompositions with the deprecated
        # torch.jit.script on first use; the warning concerns torch's code, not this one.
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
        for start in range(0, n_params, chunk):
            tangents = torch.eye(n_params, dtype=DTYPE)[start:start + chunk]
            rows.append(torch.func.vmap(along)(tangents))
            if check is not None:
                check()
    return torch.cat(rows).numpy()


def autodiff_system(model: GrowthModel, basis: TensorBasis, points: np.ndarray,
                    eps: np.ndarray, weights: np.ndarray, check: Callable[[], None] | None = None):
    """Return the system (theta, with_jacobian) -> (R (M,), J (M, K) dense or None) with J
    by forward-mode automatic differentiation, one column per unit tangent of theta."""
    residual = euler_residual_function(model, basis, points, eps, weights)
    chunk = tangent_chunk(basis, points.shape[0], eps.size)

    def system(theta: np.ndarray, with_jacobian: bool):
        with torch.no_grad():
            values = residual(torch.as_tensor(theta, dtype=DTYPE)).numpy()
        if not with_jacobian:
            return values, None
        return values, np.ascontiguousarray(directional_derivatives(residual, theta, chunk, check).T)

    return system


def loss_hessian(model: GrowthModel, basis: TensorBasis, points: np.ndarray, eps: np.ndarray,
                 weights: np.ndarray, check: Callable[[], None] | None = None
                 ) -> Callable[[np.ndarray], np.ndarray]:
    """Return theta (K,) -> the Hessian (K, K) of `L = ||R||^2 / (2M)` at the nodes (M, 2).

    The gradient `J'R / M` comes from reverse mode and each Hessian column from a
    forward-mode derivative of it along a unit tangent, so the Hessian contains the
    second derivatives of every residual, not only the Gauss-Newton part `J'J / M`.
    """
    residual = euler_residual_function(model, basis, points, eps, weights)
    n_nodes = points.shape[0]
    chunk = tangent_chunk(basis, n_nodes, eps.size)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return (residual(theta) ** 2).sum() / (2 * n_nodes)

    gradient = torch.func.grad(loss)

    def hessian(theta: np.ndarray) -> np.ndarray:
        matrix = directional_derivatives(gradient, theta, chunk, check)
        # Rounding leaves the two triangles unequal by about machine epsilon.
        return (matrix + matrix.T) / 2

    return hessian


@contextmanager
def torch_threads(limit: int | None):
    """Run the block with at most `limit` torch threads (None leaves them as they are).

    torch's thread count is global to the process, so it is restored on exit.
    """
    previous = torch.get_num_threads()
    if limit is not None:
        torch.set_num_threads(min(limit, previous))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
