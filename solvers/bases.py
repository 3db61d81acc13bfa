"""Linear bases on a box in R^d: Chebyshev and monomial polynomials, and B-splines.

A basis of K functions represents `f(x) = sum_k theta_k phi_k(x)`, where each phi_k is
a product of one-dimensional functions, one per state. It supplies

- `nodes(oversampling=1.0)`: collocation points, shape (M, d). A tensor basis gives
  M = K at oversampling 1 (square collocation) and M >= oversampling * K above 1
  (least-squares objectives);
- `matrix(x, derivative=None)`: the (N, K) matrix `phi_k(x_n)`, or its partial
  derivative along state `derivative`; dense for polynomials, scipy.sparse CSR for splines;
- `evaluate(theta, x)`: f at x, shape (N,). A tensor basis contracts one state at a
  time and never forms the (N, K) matrix;
- `describe()`: a JSON-ready dict of the basis settings, for result records.

A tensor basis keeps every product of the one-dimensional functions. Its columns are
ordered as in `numpy.kron`: the last state varies fastest. A complete polynomial basis
keeps only the products of total degree at most D, in the same order.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from numpy.polynomial import chebyshev as npcheb
from scipy.interpolate import BSpline

NODE_FAMILIES = ("chebyshev_zeros", "chebyshev_extrema", "equispaced", "random")
PRODUCTS = ("tensor", "complete")
MAX_SPLINE_ORDER = 5


class TensorBasis:
    """Common tensor-product machinery; subclasses define the one-dimensional factors.

    `sizes[j]` is the number of one-dimensional functions on state j, and the basis
    has K = prod(sizes) functions.
    """

    kind = "tensor"

    def __init__(self, bounds: np.ndarray, sizes: list[int]):
        self.sizes = [int(n) for n in sizes]
        self.bounds = _check_bounds(bounds, len(self.sizes))

    @property
    def n_states(self) -> int:
        """Number of states d, the columns of a point array."""
        return len(self.sizes)

    @property
    def n_params(self) -> int:
        """Number of coefficients K, the product of the per-state sizes."""
        return int(np.prod(self.sizes))

    def nodes_1d(self, dim: int, count: int | None = None) -> np.ndarray:
        """Return the collocation points of one state, shape (count), with count sizes[dim] by default."""
        raise NotImplementedError

    def factor(self, dim: int, x: np.ndarray, derivative: bool) -> np.ndarray | sp.csr_matrix:
        """Return the (N, sizes[dim]) values (or first derivatives) of one state's functions."""
        raise NotImplementedError

    def grid_counts(self, oversampling: float = 1.0) -> list[int]:
        """Return the number of points per state of the node grid.

        At oversampling 1 this is `sizes`, so the grid has K points. Above 1, state j
        gets `ceil(n_j * oversampling ** (1 / d))` points, so the grid has
        `prod_j ceil(n_j r^(1/d)) >= r prod_j n_j = r K` points.
        """
        ratio = _check_oversampling(oversampling)
        if ratio == 1.0:
            return list(self.sizes)
        return [math.ceil(n * ratio ** (1 / self.n_states)) for n in self.sizes]

    def nodes(self, oversampling: float = 1.0) -> np.ndarray:
        """Return the tensor grid of collocation points, shape (M, d), last state fastest.

        M = K at oversampling 1. Above 1 (for least-squares objectives) M >= oversampling * K,
        with the per-state counts of `grid_counts` (at least those, for splines).
        """
        counts = self.grid_counts(oversampling)
        return tensor_grid([self.nodes_1d(j, n) for j, n in enumerate(counts)])

    def factors(self, x: np.ndarray, derivative: int | None = None) -> list:
        """Return the one-dimensional factors at x (N, d), one (N, sizes[j]) matrix per state.

        The factor of state `derivative` contains first derivatives, the others values.
        """
        x = self._check_points(x)
        if derivative is not None and not 0 <= derivative < self.n_states:
            raise ValueError(f"derivative must be None or a state index from 0 to "
                             f"{self.n_states - 1}; got {derivative}")
        return [self.factor(j, x[:, j], derivative == j) for j in range(self.n_states)]

    def matrix(self, x: np.ndarray, derivative: int | None = None):
        """Return the (N, K) basis matrix at x of shape (N, d), or its derivative along one state."""
        return product_matrix(self.factors(x, derivative))

    def evaluate(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Return f(x) = matrix(x) @ theta, shape (N,), contracting one state at a time."""
        x = self._check_points(x)
        theta = self._check_theta(theta)
        n = x.shape[0]
        values = _as_dense(self.factor(0, x[:, 0], False)) @ theta.reshape(self.sizes[0], -1)
        for j in range(1, len(self.sizes)):
            values = values.reshape(n, self.sizes[j], -1)
            factor = _as_dense(self.factor(j, x[:, j], False))
            values = (factor[:, None, :] @ values)[:, 0, :]
        return values[:, 0]

    def describe(self) -> dict:
        """Return the basis settings as a JSON-ready dict for result records."""
        return {"kind": self.kind, "product": "tensor", "bounds": self.bounds.tolist(),
                "sizes": list(self.sizes), "n_params": self.n_params}

    def _check_points(self, x: np.ndarray) -> np.ndarray:
        """Return x as a float array, raising unless its shape is (N, d)."""
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.n_states:
            raise ValueError(f"points must have shape (N, {self.n_states}); got {x.shape}")
        return x

    def _check_theta(self, theta: np.ndarray) -> np.ndarray:
        """Return theta as a float array, raising unless it has K entries."""
        theta = np.asarray(theta, dtype=float)
        if theta.size != self.n_params:
            raise ValueError(f"theta must have K = {self.n_params} entries; got {theta.size}")
        return theta.ravel()


class PolynomialBasis(TensorBasis):
    """Products of one-dimensional polynomials of degree 0..D per state, tensor or complete.

    `product="tensor"` keeps every product, K = prod_j (degrees[j] + 1).
    `product="complete"` keeps the multi-indices (i_1, ..., i_d) with total degree
    `i_1 + ... + i_d <= D`, where D = max(degrees), so K = C(d + D, d). Each state then
    has D + 1 one-dimensional functions (`sizes`), whatever its entry in `degrees`.

    `nodes` names the one-dimensional node family of every state:

    - "chebyshev_zeros": zeros of T_n, interior points (the default);
    - "chebyshev_extrema": extrema of T_(n-1) (Gauss-Lobatto), including both end points;
    - "equispaced": n equally spaced points, including both end points;
    - "random": n sorted uniform draws. State j draws from the Generator
      `default_rng(SeedSequence(seed).spawn(d)[j])`, so states draw independently and
      the same seed gives the same points.

    A family asked for a single point returns the midpoint of the interval.
    """

    kind = "polynomial"

    def __init__(self, bounds: np.ndarray, degrees: list[int], product: str = "tensor",
                 nodes: str = "chebyshev_zeros", seed: int = 0):
        self.degrees = _check_degrees(degrees)
        self.product = _check_choice("product", product, PRODUCTS)
        self.node_family = _check_choice("nodes", nodes, NODE_FAMILIES)
        self.seed = int(seed)

        if self.product == "tensor":
            self.total_degree = None
            self.multi_indices = None
            super().__init__(bounds, [d + 1 for d in self.degrees])
        else:
            self.total_degree = max(self.degrees)
            super().__init__(bounds, [self.total_degree + 1] * len(self.degrees))
            self.multi_indices = total_degree_indices(self.n_states, self.total_degree)

    @property
    def n_params(self) -> int:
        """Number of coefficients K: prod_j (degrees[j] + 1), or C(d + D, d) when complete."""
        if self.multi_indices is None:
            return super().n_params
        return int(self.multi_indices.shape[0])

    def nodes_1d(self, dim: int, count: int | None = None) -> np.ndarray:
        """Return `count` points of the node family on one state, sorted, shape (count,)."""
        count = self.sizes[dim] if count is None else int(count)
        a, b = self.bounds[dim]
        if self.node_family == "random":
            children = np.random.SeedSequence(self.seed).spawn(self.n_states)
            return family_nodes("random", count, a, b, np.random.default_rng(children[dim]))
        return family_nodes(self.node_family, count, a, b)

    def grid_counts(self, oversampling: float = 1.0) -> list[int]:
        """Return the number of points per state of the node grid.

        A tensor basis follows `TensorBasis.grid_counts`. A complete basis with d >= 2
        and D >= 1 has no unisolvent tensor grid of K points, so oversampling 1 raises.
        Above 1 it gets n points on every state, the smallest n with n^d >= oversampling * K
        and n >= D + 1. With n <= D points g_1..g_n on a state, the degree-n polynomial
        prod_i (x_j - g_i) lies in the span and vanishes on the grid, so the matrix would
        lose rank.
        """
        if self.multi_indices is None:
            return super().grid_counts(oversampling)

        ratio = _check_oversampling(oversampling)
        d, degree, k = self.n_states, self.total_degree, self.n_params
        if ratio == 1.0 and d >= 2 and degree >= 1:
            raise ValueError(
                f"a complete (total-degree {degree}) basis in {d} states has no unisolvent "
                f"tensor grid of K = {k} points, so it cannot be collocated on a square "
                f"system; use the 'least_squares' or 'galerkin' objective and call "
                f"nodes(oversampling) with oversampling > 1")

        # The root is rounded, so step n to the smallest integer that meets both bounds.
        n = max(degree + 1, math.ceil((ratio * k) ** (1 / d)))
        while n ** d < ratio * k:
            n += 1
        while n - 1 >= degree + 1 and (n - 1) ** d >= ratio * k:
            n -= 1
        return [n] * d

    def matrix(self, x: np.ndarray, derivative: int | None = None) -> np.ndarray:
        """Return the dense (N, K) basis matrix at x (N, d), or its derivative along one state."""
        return product_matrix(self.factors(x, derivative), self.multi_indices)

    def evaluate(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Return f(x) = matrix(x) @ theta, shape (N,).

        A tensor basis contracts one state at a time. A complete basis forms the (N, K)
        matrix, which is small, and never the (N, (D + 1)^d) tensor one.
        """
        if self.multi_indices is None:
            return super().evaluate(theta, x)
        return self.matrix(x) @ self._check_theta(theta)

    def describe(self) -> dict:
        """Return the basis settings as a JSON-ready dict for result records."""
        record = super().describe()
        record.update(kind=self.kind, product=self.product, degrees=list(self.degrees),
                      total_degree=self.total_degree, nodes=self.node_family)
        if self.node_family == "random":
            record["seed"] = self.seed
        return record


class ChebyshevBasis(PolynomialBasis):
    """Chebyshev polynomials T_0..T_degree on each state's interval, tensor or complete.

    A state x in [a, b] maps to `xi = 2 (x - a) / (b - a) - 1`. Points outside the box
    are extrapolated by the same polynomials (the three-term recurrence, not the cosine
    formula, so |xi| > 1 is valid). On Chebyshev zeros the square collocation matrix is
    orthogonal up to column scaling, with condition number sqrt(2)^d.
    """

    kind = "chebyshev"

    def factor(self, dim: int, x: np.ndarray, derivative: bool) -> np.ndarray:
        """Return T_i(xi(x)) or d/dx T_i(xi(x)) for i = 0..sizes[dim] - 1, shape (N, sizes[dim])."""
        a, b = self.bounds[dim]
        xi = 2 * (x - a) / (b - a) - 1
        n = self.sizes[dim]
        values = np.empty((x.size, n))
        values[:, 0] = 1.0
        if n > 1:
            values[:, 1] = xi
        # T_{i+1} = 2 xi T_i - T_{i-1}
        for i in range(1, n - 1):
            values[:, i + 1] = 2 * xi * values[:, i] - values[:, i - 1]
        if not derivative:
            return values
        # T'_{i+1} = 2 T_i + 2 xi T'_i - T'_{i-1}
        slopes = np.zeros((x.size, n))
        if n > 1:
            slopes[:, 1] = 1.0
        for i in range(1, n - 1):
            slopes[:, i + 1] = 2 * values[:, i] + 2 * xi * slopes[:, i] - slopes[:, i - 1]
        return slopes * (2 / (b - a))


class MonomialBasis(PolynomialBasis):
    """Ordinary polynomials u^0..u^degree on each state, tensor or complete.

    A state x in [a, b] maps to `u = (x - a) / (b - a)` in [0, 1], the interval on which
    ordinary polynomials are usually shown. Their collocation matrix is a Vandermonde
    matrix and is badly conditioned. At degree 15 on the 16 Chebyshev zeros its 2-norm
    condition number (numpy.linalg.cond) is about 1.5e11 in one state, against sqrt(2)
    for Chebyshev polynomials. In two states it is the square, beyond 1 / machine epsilon,
    so the computed value (about 1e19 to 1e20) is not accurate. Mapping to [-1, 1]
    instead would give about 2.8e5 in one state. Points outside the box are
    extrapolated by the same polynomials.
    """

    kind = "monomial"

    def factor(self, dim: int, x: np.ndarray, derivative: bool) -> np.ndarray:
        """Return u^i or d/dx u^i = i u^(i-1) / (b - a) for i = 0..sizes[dim] - 1, shape (N, sizes[dim])."""
        a, b = self.bounds[dim]
        u = (x - a) / (b - a)
        n = self.sizes[dim]
        values = np.empty((x.size, n))
        values[:, 0] = 1.0
        for i in range(1, n):
            values[:, i] = values[:, i - 1] * u

        if not derivative:
            return values
        slopes = np.zeros((x.size, n))
        slopes[:, 1:] = values[:, :-1] * np.arange(1, n) / (b - a)
        return slopes


class SplineBasis(TensorBasis):
    """Tensor product of B-splines of degree `order` on clamped knot vectors.

    Each state j has the knot vector with `order + 1` copies of each end point around
    its interior knots, and `len(interior) + order + 1` basis functions. `knots` is None
    or a list with one entry per state:

    - None: `n_basis[j] - order - 1` equally spaced interior knots (the default);
    - a sorted sequence of interior knots strictly inside (a, b). A value may repeat up
      to `order` times. A knot of multiplicity m makes the spline C^(order - m) there,
      so multiplicity `order` leaves it continuous with a kink. The state then has
      `len(interior) + order + 1` functions and `n_basis[j]` is ignored (it may be None).

    Collocation at oversampling 1 is at the Greville abscissae, the means of `order`
    consecutive knots. With interior multiplicities at most `order` they are distinct
    and satisfy the Schoenberg-Whitney condition, so the square collocation matrix is
    nonsingular. A knot of multiplicity `order` is itself a Greville abscissa, where the
    one basis function that peaks there equals 1 and the others vanish. Oversampled
    nodes are described in `nodes_1d`. Matrices are scipy.sparse CSR with at most
    (order + 1)^d non-zeros per row.
    """

    kind = "spline"
    node_family = "greville"

    def __init__(self, bounds: np.ndarray, n_basis: list[int | None], order: int = 3,
                 knots: list | None = None):
        n_basis = list(n_basis)
        self.order = _check_spline_order(order)
        box = _check_bounds(bounds, len(n_basis))
        interiors, placement = self._interior_knots(box, n_basis, knots)

        super().__init__(box, [len(interior) + self.order + 1 for interior in interiors])
        self.interior_knots = interiors
        self.knot_placement = placement
        self.knots = [_clamped_vector(a, b, interior, self.order)
                      for (a, b), interior in zip(self.bounds, interiors)]

    def _interior_knots(self, box: np.ndarray, n_basis: list, knots: list | None):
        """Return each state's interior knots (sorted arrays) and "uniform" or "given"."""
        if knots is None:
            knots = [None] * len(n_basis)
        if len(knots) != len(n_basis):
            raise ValueError(f"knots must have one entry per state ({len(n_basis)}), each None "
                             f"or a sequence of interior knots; got {len(knots)} entries")

        interiors, placement = [], []
        for j, ((a, b), n, state_knots) in enumerate(zip(box, n_basis, knots)):
            if state_knots is None:
                interiors.append(self._uniform_interior(j, a, b, n))
                placement.append("uniform")
            else:
                interiors.append(_check_interior_knots(j, state_knots, a, b, self.order))
                placement.append("given")
        return interiors, placement

    def _uniform_interior(self, dim: int, a: float, b: float, n) -> np.ndarray:
        """Return the n - order - 1 equally spaced interior knots of (a, b)."""
        p = self.order
        if n is None or int(n) != n or n < p + 1:
            raise ValueError(f"spline of order {p} needs at least order + 1 = {p + 1} "
                             f"functions per state; got n_basis[{dim}] = {n}")
        return np.linspace(a, b, int(n) - p + 1)[1:-1]

    def greville(self, dim: int) -> np.ndarray:
        """Return the Greville abscissae of one state, the means of `order` consecutive knots.

        Shape (sizes[dim],). Each mean is clipped to its knots' range, because rounding in
        the mean of `order` equal knots could move the point off a repeated knot.
        """
        t, p = self.knots[dim], self.order
        return np.array([np.clip(t[i + 1:i + p + 1].mean(), t[i + 1], t[i + p])
                         for i in range(self.sizes[dim])])

    def nodes_1d(self, dim: int, count: int | None = None) -> np.ndarray:
        """Return at least `count` sorted collocation points of one state.

        count None or sizes[dim] gives the Greville abscissae. A larger count (least-squares
        objectives) starts from the Greville abscissae, so the matrix keeps full column
        rank, and adds the midpoint of every knot interval that has no point strictly
        inside it. The remaining `count - len(points)` points are shared among the gaps
        between consecutive points in proportion to gap length (largest remainder), and
        spaced evenly inside each gap. So every knot interval is covered, and there can be
        more than `count` points when many intervals had none.
        """
        greville = self.greville(dim)
        if count is None or count == self.sizes[dim]:
            return greville
        if count < self.sizes[dim]:
            raise ValueError(f"state {dim} has {self.sizes[dim]} spline functions and needs at "
                             f"least that many nodes; got count {count}")

        breaks = np.unique(self.knots[dim])
        covered = _cover_intervals(greville, breaks)
        return _fill_gaps(covered, int(count))

    def factor(self, dim: int, x: np.ndarray, derivative: bool) -> sp.csr_matrix:
        """Return the sparse (N, n) values or first derivatives of one state's B-splines.

        At a knot of multiplicity `order` the derivative is the right-hand one, because
        the degree `order - 1` functions are right-continuous there.
        """
        t, p = self.knots[dim], self.order
        if not derivative:
            return BSpline.design_matrix(x, t, p, extrapolate=True)
        # The derivative recurrence of B-splines,
        # B'_{i,p} = p / (t_{i+p} - t_i) B_{i,p-1} - p / (t_{i+p+1} - t_{i+1}) B_{i+1,p-1}.
        # The degree p - 1 functions that are not identically zero live on the knots t[1:-1].
        lower = BSpline.design_matrix(x, t[1:-1], p - 1, extrapolate=True)
        return (lower @ self._derivative_map(dim)).tocsr()

    def _derivative_map(self, dim: int) -> sp.csr_matrix:
        """Return the (n - 1, n) matrix taking degree p - 1 values to degree p slopes.

        A term with a zero-length support, t_{i+p} = t_i, multiplies a function that is
        identically zero, so it is dropped instead of dividing 0 by 0.
        """
        t, p, n = self.knots[dim], self.order, self.sizes[dim]
        rows, cols, vals = [], [], []
        for i in range(n):
            left, right = t[i + p] - t[i], t[i + p + 1] - t[i + 1]
            if i >= 1 and left > 0:
                rows.append(i - 1), cols.append(i), vals.append(p / left)
            if i <= n - 2 and right > 0:
                rows.append(i), cols.append(i), vals.append(-p / right)
        return sp.csr_matrix((vals, (rows, cols)), shape=(n - 1, n))

    def describe(self) -> dict:
        """Return the basis settings as a JSON-ready dict for result records."""
        record = super().describe()
        record.update(kind=self.kind, order=self.order, nodes=self.node_family,
                      knot_placement=list(self.knot_placement),
                      interior_knots=[interior.tolist() for interior in self.interior_knots])
        return record


def product_matrix(factors: list, multi_indices: np.ndarray | None = None):
    """Return the (N, K) product-basis matrix from one (N, n_j) factor per state.

    With multi_indices None, column k is the product over states of every combination,
    ordered as in `numpy.kron` (K = prod n_j). Sparse factors give a CSR result.
    Otherwise column k is `prod_j factors[j][:, multi_indices[k, j]]` for the (K, d)
    integer array multi_indices, a dense (N, K) result that never forms the full product.
    """
    if multi_indices is None:
        result = factors[0]
        for other in factors[1:]:
            result = row_kron(result, other)
        return result

    result = np.ones((factors[0].shape[0], multi_indices.shape[0]))
    for j, factor in enumerate(factors):
        result *= _as_dense(factor)[:, multi_indices[:, j]]
    return result


def total_degree_indices(n_states: int, degree: int) -> np.ndarray:
    """Return the (K, d) multi-indices with entries >= 0 and total degree <= degree.

    K = C(d + degree, d). Rows keep the `numpy.kron` order of the full (degree + 1)^d
    grid, last state fastest, so a complete matrix is a column subset of the tensor one.
    The rows are built by recursion over the states, so the (degree + 1)^d grid is never
    formed (3^20 rows at d = 20, degree 2).
    """
    if n_states == 1:
        return np.arange(degree + 1)[:, None]
    blocks = []
    for first in range(degree + 1):
        rest = total_degree_indices(n_states - 1, degree - first)
        blocks.append(np.column_stack([np.full(rest.shape[0], first), rest]))
    return np.vstack(blocks)


def family_nodes(family: str, count: int, a: float, b: float,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Return `count` sorted points of a node family on [a, b], shape (count,).

    Chebyshev zeros are `cos((2i - 1) pi / (2 count))`, i = 1..count, and Chebyshev
    extrema `cos(i pi / (count - 1))`, i = 0..count - 1, both mapped from [-1, 1]. A
    single point of any family is the midpoint. "random" draws from rng.
    """
    _check_choice("nodes", family, NODE_FAMILIES)
    if count < 1:
        raise ValueError(f"a node family needs at least 1 point; got count {count}")
    if family == "random":
        if rng is None:
            raise ValueError("random nodes need a numpy Generator; got rng None")
        return np.sort(rng.uniform(a, b, count))
    if count == 1:
        return np.array([(a + b) / 2])

    if family == "chebyshev_zeros":
        xi = npcheb.chebpts1(count)
    elif family == "chebyshev_extrema":
        xi = npcheb.chebpts2(count)
    else:
        return np.linspace(a, b, count)
    return a + (xi + 1) * (b - a) / 2


def tensor_grid(points_1d: list[np.ndarray]) -> np.ndarray:
    """Return the tensor grid of per-state points, shape (prod of lengths, d), last state fastest."""
    grids = np.meshgrid(*points_1d, indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1)


def row_kron(a, b):
    """Return the row-wise Kronecker (face-splitting) product of two matrices.

    Row n of the result is `kron(a[n], b[n])`, shape (N, Ka * Kb). Dense inputs give a
    dense result. If either input is sparse, the result is sparse CSR, built from the
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


def _cover_intervals(points: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """Return the sorted points plus the midpoint of each (breaks[l], breaks[l+1]) with no point inside."""
    added = [(lo + hi) / 2 for lo, hi in zip(breaks[:-1], breaks[1:])
             if not np.any((points > lo) & (points < hi))]
    return np.sort(np.concatenate([points, added]))


def _fill_gaps(points: np.ndarray, count: int) -> np.ndarray:
    """Return sorted points with evenly spaced points added inside the gaps until there are count.

    Gap g of length L_g gets floor(E L_g / sum L) of the E missing points, and the gaps
    with the largest remainders get one more each.
    """
    extra = count - points.size
    if extra <= 0:
        return points
    gaps = np.diff(points)
    quota = extra * gaps / gaps.sum()
    shares = np.floor(quota).astype(int)
    largest_remainders = np.argsort(-(quota - shares), kind="stable")
    shares[largest_remainders[:extra - shares.sum()]] += 1

    added = [points[g] + gaps[g] * np.arange(1, s + 1) / (s + 1) for g, s in enumerate(shares) if s]
    return np.sort(np.concatenate([points, *added]))


def _clamped_vector(a: float, b: float, interior: np.ndarray, order: int) -> np.ndarray:
    """Return the knot vector with order + 1 copies of a and of b around the interior knots."""
    return np.concatenate([[a] * (order + 1), interior, [b] * (order + 1)])


def _check_bounds(bounds: np.ndarray, n_states: int) -> np.ndarray:
    """Return bounds as a float (d, 2) array of increasing intervals, or raise."""
    box = np.asarray(bounds, dtype=float)
    if box.shape != (n_states, 2) or np.any(box[:, 0] >= box[:, 1]):
        raise ValueError(f"bounds must be a ({n_states}, 2) array of increasing "
                         f"intervals; got {box.tolist()}")
    return box


def _check_degrees(degrees: list[int]) -> list[int]:
    """Return the degrees as a list of non-negative ints, or raise."""
    checked = []
    for j, degree in enumerate(degrees):
        if int(degree) != degree or degree < 0:
            raise ValueError(f"degrees[{j}] must be a non-negative integer; got {degree}")
        checked.append(int(degree))
    if not checked:
        raise ValueError("degrees must have one entry per state; got none")
    return checked


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return value if it is one of choices, or raise naming them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _check_oversampling(oversampling: float) -> float:
    """Return the oversampling ratio as a float >= 1, or raise."""
    ratio = float(oversampling)
    if not np.isfinite(ratio) or ratio < 1:
        raise ValueError(f"oversampling must be a finite ratio M / K >= 1; got {oversampling}")
    return ratio


def _check_spline_order(order: int) -> int:
    """Return the spline order (polynomial degree) as an int from 1 to MAX_SPLINE_ORDER, or raise."""
    if int(order) != order or not 1 <= order <= MAX_SPLINE_ORDER:
        raise ValueError(f"spline order must be an integer from 1 to {MAX_SPLINE_ORDER} "
                         f"(1 linear, 2 quadratic, 3 cubic); got {order}")
    return int(order)


def _check_interior_knots(dim: int, state_knots, a: float, b: float, order: int) -> np.ndarray:
    """Return one state's interior knots as a float array, or raise naming the bad value."""
    interior = np.asarray(state_knots, dtype=float)
    if interior.ndim != 1:
        raise ValueError(f"knots[{dim}] must be a flat sequence of interior knots; "
                         f"got shape {interior.shape}")

    for value in interior:
        if not (np.isfinite(value) and a < value < b):
            raise ValueError(f"knots[{dim}] contains {value}, which is not strictly inside the "
                             f"state's interval ({a}, {b}); interior knots must lie in it")

    for before, after in zip(interior[:-1], interior[1:]):
        if after < before:
            raise ValueError(f"knots[{dim}] must be sorted in increasing order; "
                             f"{after} follows {before}")

    values, multiplicities = np.unique(interior, return_counts=True)
    for value, multiplicity in zip(values, multiplicities):
        if multiplicity > order:
            raise ValueError(
                f"knots[{dim}] repeats {value} {multiplicity} times; a spline of order {order} "
                f"allows multiplicity 1 to {order}. Multiplicity {order} gives a kink, and "
                f"more would make the spline discontinuous")
    return interior

