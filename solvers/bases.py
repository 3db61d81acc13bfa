"""Linear tensor-product bases: Chebyshev polynomials and B-splines.

A basis of K functions on a box in R^d represents `f(x) = sum_k theta_k phi_k(x)`,
where each phi_k is a product of one-dimensional functions, one per state. It supplies

- `nodes()`: the natural collocation points, shape (K, d), so that M = K;
- `matrix(x, derivative=None)`: the (N, K) matrix `phi_k(x_n)`, or its partial
  derivative along state `derivative`; dense for Chebyshev, scipy.sparse CSR for splines;
- `evaluate(theta, x)`: f at x, shape (N,), without forming the (N, K) matrix.

Columns are ordered as in `numpy.kron`: the last state varies fastest.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.polynomial import chebyshev as npcheb
from scipy.interpolate import BSpline


class TensorBasis:
    """Common tensor-product machinery; subclasses define the one-dimensional factors."""

    def __init__(self, bounds: np.ndarray, sizes: list[int]):
        self.bounds = np.asarray(bounds, dtype=float)
        self.sizes = [int(n) for n in sizes]
        if self.bounds.shape != (len(self.sizes), 2) or np.any(self.bounds[:, 0] >= self.bounds[:, 1]):
            raise ValueError(f"bounds must be a ({len(self.sizes)}, 2) array of increasing "
                             f"intervals; got {self.bounds.tolist()}")

    @property
    def n_params(self) -> int:
        """Number of coefficients K, the product of the per-state sizes."""
        return int(np.prod(self.sizes))

    def nodes_1d(self, dim: int) -> np.ndarray:
        """Return the collocation points of one state, shape (sizes[dim],)."""
        raise NotImplementedError

    def factor(self, dim: int, x: np.ndarray, derivative: bool) -> np.ndarray | sp.csr_matrix:
        """Return the (N, sizes[dim]) values (or first derivatives) of one state's functions."""
        raise NotImplementedError

    def nodes(self) -> np.ndarray:
        """Return the tensor grid of collocation points, shape (K, d)."""
        grids = np.meshgrid(*[self.nodes_1d(j) for j in range(len(self.sizes))], indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1)

    def matrix(self, x: np.ndarray, derivative: int | None = None):
        """Return the (N, K) basis matrix at x of shape (N, d), or its derivative along one state."""
        factors = [self.factor(j, x[:, j], derivative == j) for j in range(len(self.sizes))]
        result = factors[0]
        for other in factors[1:]:
            result = row_kron(result, other)
        return result

    def evaluate(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Return f(x) = matrix(x) @ theta, shape (N,), contracting one state at a time."""
        n = x.shape[0]
        values = _as_dense(self.factor(0, x[:, 0], False)) @ theta.reshape(self.sizes[0], -1)
        for j in range(1, len(self.sizes)):
            values = values.reshape(n, self.sizes[j], -1)
            values = np.einsum("nj,njr->nr", _as_dense(self.factor(j, x[:, j], False)), values)
        return values[:, 0]


class ChebyshevBasis(TensorBasis):
    """Tensor product of Chebyshev polynomials T_0..T_degree on each state's interval.

    A state x in [a, b] maps to `xi = 2 (x - a) / (b - a) - 1`. Points outside the box
    are extrapolated by the same polynomials (the three-term recurrence, not the cosine
    formula, so |xi| > 1 is valid).
    """

    def __init__(self, bounds: np.ndarray, degrees: list[int]):
        super().__init__(bounds, [d + 1 for d in degrees])
        self.degrees = list(degrees)

    def nodes_1d(self, dim: int) -> np.ndarray:
        """Return the Chebyshev zeros of T_{degree+1}, mapped to the state's interval."""
        a, b = self.bounds[dim]
        xi = npcheb.chebpts1(self.sizes[dim])
        return a + (xi + 1) * (b - a) / 2

    def factor(self, dim: int, x: np.ndarray, derivative: bool) -> np.ndarray:
        """Return T_i(xi(x)) or d/dx T_i(xi(x)) for i = 0..degree, shape (N, degree + 1)."""
        a, b = self.bounds[dim]
        xi = 2 * (x - a) / (b - a) - 1
        n = self.sizes[dim]
        values = np.empty((x.size, n))
        slopes = np.zeros((x.size, n))
        values[:, 0] = 1.0
        if n > 1:
            values[:, 1] = xi
            slopes[:, 1] = 1.0
        # T_{i+1} = 2 xi T_i - T_{i-1}, and its derivative T'_{i+1} = 2 T_i + 2 xi T'_i - T'_{i-1}.
        for i in range(1, n - 1):
            values[:, i + 1] = 2 * xi * values[:, i] - values[:, i - 1]
            slopes[:, i + 1] = 2 * values[:, i] + 2 * xi * slopes[:, i] - slopes[:, i - 1]
        return slopes * (2 / (b - a)) if derivative else values


class SplineBasis(TensorBasis):
    """Tensor product of B-splines of degree `order` with clamped uniform knots.

    Each state has `n` basis functions on the knot vector with `order + 1` copies of
    each end point and `n - order - 1` equally spaced interior knots. Collocation is at
    the Greville abscissae, which satisfy the Schoenberg-Whitney condition, so the
    square collocation matrix is nonsingular. Matrices are scipy.sparse CSR with at
    most (order + 1)^d non-zeros per row.
    """

    def __init__(self, bounds: np.ndarray, n_basis: list[int], order: int = 3):
        super().__init__(bounds, n_basis)
        if not 1 <= order <= 5 or any(n < order + 1 for n in n_basis):
            raise ValueError(f"spline of order {order} needs 1 <= order <= 5 and at least "
                             f"order + 1 = {order + 1} functions per state; got {n_basis}")
        self.order = order
        self.knots = [self._clamped_knots(a, b, n) for (a, b), n in zip(self.bounds, n_basis)]

    def _clamped_knots(self, a: float, b: float, n: int) -> np.ndarray:
        """Return the clamped uniform knot vector of length n + order + 1."""
        breaks = np.linspace(a, b, n - self.order + 1)
        return np.concatenate([[a] * self.order, breaks, [b] * self.order])

    def nodes_1d(self, dim: int) -> np.ndarray:
        """Return the Greville abscissae, the means of `order` consecutive interior knots."""
        t, p = self.knots[dim], self.order
        return np.array([t[i + 1:i + p + 1].mean() for i in range(self.sizes[dim])])

    def factor(self, dim: int, x: np.ndarray, derivative: bool) -> sp.csr_matrix:
        """Return the sparse (N, n) values or first derivatives of one state's B-splines."""
        t, p = self.knots[dim], self.order
        if not derivative:
            return BSpline.design_matrix(x, t, p, extrapolate=True)
        # The derivative recurrence of B-splines,
        # B'_{i,p} = p / (t_{i+p} - t_i) B_{i,p-1} - p / (t_{i+p+1} - t_{i+1}) B_{i+1,p-1}.
        # The degree p - 1 functions that are not identically zero live on the knots t[1:-1].
        lower = BSpline.design_matrix(x, t[1:-1], p - 1, extrapolate=True)
        return (lower @ self._derivative_map(dim)).tocsr()

    def _derivative_map(self, dim: int) -> sp.csr_matrix:
        """Return the (n - 1, n) matrix taking degree p - 1 values to degree p slopes."""
        t, p, n = self.knots[dim], self.order, self.sizes[dim]
        rows, cols, vals = [], [], []
        for i in range(n):
            left, right = t[i + p] - t[i], t[i + p + 1] - t[i + 1]
            if i >= 1 and left > 0:
                rows.append(i - 1), cols.append(i), vals.append(p / left)
            if i <= n - 2 and right > 0:
                rows.append(i), cols.append(i), vals.append(-p / right)
        return sp.csr_matrix((vals, (rows, cols)), shape=(n - 1, n))


def row_kron(a, b):
    """Return the row-wise Kronecker (face-splitting) product of two matrices.

    Row n of the result is `kron(a[n], b[n])`, shape (N, Ka * Kb). Dense inputs give a
    dense result; if either input is sparse the result is sparse CSR, built from the
    non-zeros of each row so that no dense (N, Ka * Kb) array is formed.
    """
    if not sp.issparse(a) and not sp.issparse(b):
        return np.einsum("ni,nj->nij", a, b).reshape(a.shape[0], -1)
    a_cols, a_vals = _padded_rows(sp.csr_matrix(a))
    b_cols, b_vals = _padded_rows(sp.csr_matrix(b))
    n, width = a.shape[0], b.shape[1]
    cols = (a_cols[:, :, None] * width + b_cols[:, None, :]).reshape(n, -1)
    vals = (a_vals[:, :, None] * b_vals[:, None, :]).reshape(n, -1)
    rows = np.repeat(np.arange(n), cols.shape[1])
    result = sp.csr_matrix((vals.ravel(), (rows, cols.ravel())), shape=(n, a.shape[1] * width))
    result.eliminate_zeros()
    return result


def _padded_rows(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Return per-row column indices and values, padded with zeros to the widest row."""
    counts = np.diff(m.indptr)
    width = max(int(counts.max(initial=0)), 1)
    cols = np.zeros((m.shape[0], width), dtype=np.int64)
    vals = np.zeros((m.shape[0], width))
    position = np.arange(m.nnz) - np.repeat(m.indptr[:-1], counts)
    row = np.repeat(np.arange(m.shape[0]), counts)
    cols[row, position] = m.indices
    vals[row, position] = m.data
    return cols, vals


def _as_dense(m) -> np.ndarray:
    """Return m as a dense array."""
    return m.toarray() if sp.issparse(m) else m
