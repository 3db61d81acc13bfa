"""Smolyak sparse grids of Chebyshev extrema and the Smolyak Chebyshev polynomial basis.

The one-dimensional rule of level i has the m(i) extrema of T_(m(i)-1) as nodes, with
m(1) = 1 and m(i) = 2^(i-1) + 1, so the node sets are nested: {0}, {-1, 0, 1},
{-1, -1/sqrt(2), 0, 1/sqrt(2), 1}, ... The isotropic sparse grid of level mu in d states
is the union of the tensor grids of the multi-indices i with d <= |i| <= d + mu. The
anisotropic grid with levels (mu_1, ..., mu_d) keeps the multi-indices with
|i| <= d + max_j mu_j and i_j - 1 <= mu_j. Equal levels give the isotropic grid. Judd,
Maliar, Maliar and Valero build the basis on the same index set and introduce the
anisotropic grid ("Smolyak method for solving dynamic economic models: Lagrange
interpolation, anisotropic grid and adaptive domain", NBER Working Paper 19326, 2013).

Positions. The points of one state are numbered in the order the levels add them.
Position 0 is 0, positions 1 and 2 are -1 and 1, positions 3 and 4 are -+1/sqrt(2), and
level i adds positions m(i-1) to m(i) - 1. The level-i rule has positions 0 to m(i) - 1,
which is exactly the set of Chebyshev degrees of its interpolant, T_0 to T_(m(i)-1). So a
node and a basis function are both named by one multi-index p of positions, and the
basis is the set of T_(p_1)(x_1) ... T_(p_d)(x_d) over the multi-indices p of the grid:
as many functions as nodes, a square interpolation system.

Write k_j = level(p_j) for the increment level of position p_j (0 for p_j = 0, 1 for
p_j in {1, 2}, ceil(log2 p_j) above). The grid keeps p when sum_j k_j <= max(mu) and
k_j <= mu_j. An increment k adds n(k) new points per state, n(0) = 1, n(1) = 2,
n(k) = 2^(k-1) for k >= 2, so the number of nodes K is the sum over the kept k of
prod_j n(k_j). For the isotropic levels,

- mu = 1: K = 1 + 2d;
- mu = 2: K = 1 + 4d + 2d(d - 1) = 2d^2 + 2d + 1;
- mu = 3: K = 1 + 8d + 6d(d - 1) + 4d(d - 1)(d - 2)/3, which is 29 at d = 2 and
  11,561 at d = 20.

A basis function is constant in every state with p_j = 0, so it varies in at most
max(mu) states. `matrix` multiplies only those factors, at a cost of O(N K max(mu)),
and never forms a tensor product over the d states.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import scipy.sparse as sp
from numpy.polynomial import chebyshev as npcheb

from solvers.bases import ChebyshevBasis, TensorBasis, _check_bounds, _check_oversampling

logger = logging.getLogger(__name__)

NODE_FAMILY = "chebyshev_extrema"
# Entries of the (rows, K) block of basis values that `evaluate` forms at a time:
# 8 bytes each, about 32 MB per block.
EVALUATE_BLOCK_ENTRIES = 4_000_000


def rule_size(i: int) -> int:
    """Return m(i), the number of nodes of the one-dimensional rule of level i >= 1."""
    return 1 if i == 1 else 2 ** (i - 1) + 1


def increment_size(k: int) -> int:
    """Return n(k) = m(k + 1) - m(k), the number of points that increment level k adds.

    n(0) = 1 (the midpoint), n(1) = 2 (the end points), n(k) = 2^(k-1) for k >= 2.
    """
    return rule_size(1) if k == 0 else rule_size(k + 1) - rule_size(k)


def smolyak_size(d: int, level) -> int:
    """Return the number of nodes (and of basis functions) K of a Smolyak grid, without building it.

    `level` is an isotropic level mu >= 0 or a sequence of d levels mu_j >= 0. K is the
    sum of the coefficients of t^0 to t^(max mu) in prod_j g_j(t), with
    g_j(t) = sum_(k=0..mu_j) n(k) t^k, computed in exact integer arithmetic in
    O(d max(mu)^2) steps.
    """
    levels = check_levels(d, level)
    top = max(levels)
    counts = [1] + [0] * top
    for mu_j in levels:
        factor = [increment_size(k) for k in range(mu_j + 1)]
        counts = [sum(counts[s - k] * factor[k] for k in range(min(s, len(factor) - 1) + 1))
                  for s in range(top + 1)]
    return sum(counts)


def check_levels(d: int, level) -> list[int]:
    """Return the d per-state levels of an isotropic level or a per-state sequence, or raise."""
    if int(d) != d or d < 1:
        raise ValueError(f"a Smolyak grid needs a number of states d >= 1; got {d}")
    if np.ndim(level) == 0:
        levels = [level] * int(d)
    else:
        levels = list(level)
        if len(levels) != d:
            raise ValueError(f"level must be one integer or a sequence of one level per "
                             f"state ({d}); got {len(levels)} levels: {levels}")

    for j, mu_j in enumerate(levels):
        numeric = isinstance(mu_j, (int, float, np.integer, np.floating)) and not isinstance(mu_j, bool)
        if not numeric or not np.isfinite(mu_j) or int(mu_j) != mu_j or mu_j < 0:
            raise ValueError(f"Smolyak level of state {j} must be an integer >= 0; got {mu_j!r}")
    return [int(mu_j) for mu_j in levels]


def nested_points(top: int) -> np.ndarray:
    """Return the Chebyshev extrema on [-1, 1] in position order, shape (m(top + 1),).

    Position 0 is 0, and increment level k >= 1 appends its n(k) new points in increasing
    order. With M = m(k + 1) - 1, the sine form sin(pi (2s - M) / (2M)) of the extrema
    -cos(pi s / M), s = 0..M, keeps them exactly symmetric, with 0 exactly at the middle.
    """
    points = [np.zeros(1)]
    for k in range(1, top + 1):
        spacing = rule_size(k + 1) - 1
        new = np.array([0, spacing]) if k == 1 else np.arange(1, spacing, 2)
        points.append(np.sin(np.pi * (2 * new - spacing) / (2 * spacing)))
    return np.concatenate(points)


def position_levels(positions: np.ndarray) -> np.ndarray:
    """Return the increment level of each position: 0, 1 for 1 and 2, ceil(log2 p) above."""
    positions = np.asarray(positions, dtype=np.int64)
    levels = np.zeros(positions.shape, dtype=np.int64)
    above = positions >= 1
    levels[above] = np.maximum(1, np.ceil(np.log2(positions[above])).astype(np.int64))
    return levels


def increment_vectors(levels: list[int]) -> list[tuple[tuple[int, int], ...]]:
    """Return the kept increment vectors k, each as its non-zero (state, k_j) pairs.

    A vector is kept when sum_j k_j <= max(levels) and k_j <= levels[j]. States appear
    in increasing order within a vector, and the zero vector is the empty tuple.
    """
    top = max(levels)
    vectors = []

    def extend(start: int, budget: int, prefix: tuple) -> None:
        vectors.append(prefix)
        for j in range(start, len(levels)):
            for k in range(1, min(levels[j], budget) + 1):
                extend(j + 1, budget - k, prefix + ((j, k),))

    extend(0, top, ())
    return vectors


def grid_positions(levels: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the multi-indices of a Smolyak grid and their non-zero entries.

    Returns `positions` (K, d), the position (= Chebyshev degree) per state, and
    `active_states`, `active_positions` (K, R) with R = min(d, max(levels)): the states
    with a non-zero position in increasing order and those positions, padded with state
    -1 and position 0. Rows are sorted by total increment level, then by `positions`
    in lexicographic order, so the isotropic grid of level mu is the first rows of the
    isotropic grid of any higher level.
    """
    d, top = len(levels), max(levels)
    width = max(1, min(d, top))
    states, entries = [], []
    for vector in increment_vectors(levels):
        ranges = [range(rule_size(k), rule_size(k + 1)) for _, k in vector]
        for block in itertools.product(*ranges):
            states.append([j for j, _ in vector] + [-1] * (width - len(vector)))
            entries.append(list(block) + [0] * (width - len(vector)))
    active_states = np.array(states, dtype=np.int64).reshape(-1, width)
    active_positions = np.array(entries, dtype=np.int64).reshape(-1, width)

    positions = np.zeros((active_states.shape[0], d), dtype=np.int64)
    rows = np.nonzero(active_states >= 0)
    positions[rows[0], active_states[rows]] = active_positions[rows]

    total = position_levels(positions).sum(axis=1)
    order = np.lexsort([positions[:, j] for j in reversed(range(d))] + [total])
    return positions[order], active_states[order], active_positions[order]


def rule_inverse(points: np.ndarray) -> np.ndarray:
    """Return the (m, m) matrix C taking values at m Chebyshev extrema to Chebyshev coefficients.

    With V[p, n] = T_n(x_p), C = V^(-1) by the discrete orthogonality of the extrema:
    C[n, p] = 2 / (m - 1) * w_p / c_n * T_n(x_p), where w_p = 1/2 at x_p = -1 or 1 and
    c_n = 2 for n = 0 and n = m - 1, else 1. A single point (m = 1) gives C = [[1]].
    """
    m = points.size
    if m == 1:
        return np.ones((1, 1))
    vander = npcheb.chebvander(points, m - 1)
    w = np.where(np.abs(points) == 1.0, 0.5, 1.0)
    c = np.ones(m)
    c[[0, -1]] = 2.0
    return 2 / (m - 1) * (vander * w[:, None]).T / c[:, None]


def increment_operator(k: int, points: np.ndarray) -> np.ndarray:
    """Return Delta_k (m(k + 1), m(k + 1)), the coefficients that increment level k adds.

    Delta_0 = C_1 and Delta_k = C_(k+1) - C_k for k >= 1, where C_i is `rule_inverse` of
    the first m(i) nested points and C_k is padded with zeros to the size of C_(k+1).
    Applied to values at the first m(k + 1) points, Delta_k returns the change in the
    Chebyshev coefficients from the level-k to the level-(k + 1) interpolant, which is
    small for a smooth function.
    """
    fine = rule_size(k + 1)
    delta = rule_inverse(points[:fine]).copy()
    if k >= 1:
        coarse = rule_size(k)
        delta[:coarse, :coarse] -= rule_inverse(points[:coarse])
    return delta


class SmolyakBasis(ChebyshevBasis):
    """Chebyshev polynomials on the Smolyak sparse grid of Chebyshev extrema, isotropic or anisotropic.

    `level` is an integer mu >= 0 (isotropic) or a sequence of d levels (mu_1, ..., mu_d).
    A state x in [a, b] maps to `xi = 2 (x - a) / (b - a) - 1`, as in `ChebyshevBasis`.
    `multi_indices` (K, d) contains the Chebyshev degree of every function per state, and
    `sizes[j]` = m(mu_j + 1) is the number of one-dimensional polynomials of state j.
    These are the attributes of a complete `ChebyshevBasis`, so code written for one
    (`product_matrix`, the torch basis of `solvers.autodiff`) evaluates this basis unchanged.

    Interpolation is square: `nodes()` gives the K grid points and `matrix(nodes())` is
    invertible. `fit(values)` returns theta with two sparse products, without a dense
    solve. The 2-norm condition number of matrix(nodes()) (numpy.linalg.cond) is about
    51 at d = 4, level 3, but it grows fast with d at a fixed level: at level 2 it is
    about 630, 12,900 and 252,000 at d = 10, 20 and 40.

    The interpolant reproduces exactly every polynomial in the span, which contains all
    polynomials of total degree <= min(mu) (isotropic: mu), because level(n) <= n. It
    contains more, for example T_2(x_1) at level 1.
    """

    product = "smolyak"

    def __init__(self, bounds: np.ndarray, level):
        box = np.asarray(bounds, dtype=float)
        if box.ndim != 2:
            raise ValueError(f"bounds must be a (d, 2) array of increasing intervals; "
                             f"got shape {box.shape}")
        self.levels = check_levels(box.shape[0], level)
        self.level = self.levels[0] if np.ndim(level) == 0 else list(self.levels)
        top = max(self.levels)

        TensorBasis.__init__(self, _check_bounds(box, len(self.levels)),
                             [rule_size(min(mu_j, top) + 1) for mu_j in self.levels])
        self.degrees = [n - 1 for n in self.sizes]
        self.total_degree = None
        self.node_family = NODE_FAMILY
        self.seed = 0

        self.multi_indices, self.active_states, self.active_positions = grid_positions(self.levels)
        self.points_1d = nested_points(top)
        self._maps = None
        logger.debug("Smolyak basis: d = %d, levels %s, K = %d", self.n_states, self.levels,
                     self.n_params)

    def nodes_1d(self, dim: int, count: int | None = None) -> np.ndarray:
        """Return the sorted coordinates that the grid's nodes take in state dim, shape (sizes[dim],)."""
        if count is not None and count != self.sizes[dim]:
            raise ValueError(f"state {dim} of a Smolyak grid has {self.sizes[dim]} coordinates; "
                             f"got count {count}")
        a, b = self.bounds[dim]
        return np.sort(a + (self.points_1d[:self.sizes[dim]] + 1) * (b - a) / 2)

    def grid_counts(self, oversampling: float = 1.0) -> list[int]:
        """Raise: a Smolyak grid is not a tensor grid, so it has no per-state counts."""
        raise ValueError("a Smolyak basis has no tensor grid of nodes; call nodes(oversampling), "
                         "which returns sparse-grid points")

    def nodes(self, oversampling: float = 1.0) -> np.ndarray:
        """Return the sparse-grid points in the box, shape (M, d), in the row order of `multi_indices`.

        M = K at oversampling 1. Above 1 (least squares) the points are the grid with
        every level raised by the smallest t >= 1 that gives M >= oversampling * K. That
        grid contains this one, so the matrix at it keeps full column rank. M grows
        fast with t: d = 20 at level 2 has K = 841, and level 3 has 11,561 points.
        """
        ratio = _check_oversampling(oversampling)
        if ratio == 1.0:
            return self.map_to_box(self.multi_indices)

        raise_by = 1
        while smolyak_size(self.n_states, [mu + raise_by for mu in self.levels]) < ratio * self.n_params:
            raise_by += 1
        positions, _, _ = grid_positions([mu + raise_by for mu in self.levels])
        return self.map_to_box(positions)

    def map_to_box(self, positions: np.ndarray) -> np.ndarray:
        """Return the points (M, d) of the box at the nested positions (M, d) of each state."""
        top = int(position_levels(positions).max(initial=0))
        xi = nested_points(top)[positions]
        return self.bounds[:, 0] + (xi + 1) * (self.bounds[:, 1] - self.bounds[:, 0]) / 2

    def matrix(self, x: np.ndarray, derivative: int | None = None) -> np.ndarray:
        """Return the dense (N, K) basis matrix at x (N, d), or its derivative along one state.

        The result is the transpose of a C-ordered (K, N) array, so it is Fortran-ordered.

        Column k is the product of T_(p_j)(xi_j) over the at most R = max(mu) states j
        with p_j > 0. Columns constant in state `derivative` have derivative zero there.
        """
        x = self._check_points(x)
        factors = self.factors(x, derivative)
        width = max(self.sizes)
        # Rows of one-dimensional values, one per (state, degree), and a last row of ones
        # for the padding slots. Gathering whole rows is a contiguous copy, several times
        # faster than gathering columns of an (N, d * width) table.
        table = np.ones((self.n_states * width + 1, x.shape[0]))
        for j, factor in enumerate(factors):
            table[j * width:j * width + factor.shape[1]] = factor.T

        padded = self.active_states < 0
        flat = np.where(padded, self.n_states * width, self.active_states * width + self.active_positions)
        result = table[flat[:, 0]]
        gathered = np.empty_like(result) if flat.shape[1] > 1 else None
        for r in range(1, flat.shape[1]):
            np.take(table, flat[:, r], axis=0, out=gathered)
            result *= gathered

        if derivative is not None:
            result[~np.any(self.active_states == derivative, axis=1)] = 0.0
        return result.T

    def evaluate(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Return f(x) = matrix(x) @ theta, shape (N,), forming at most EVALUATE_BLOCK_ENTRIES values at a time."""
        x = self._check_points(x)
        theta = self._check_theta(theta)
        rows = max(1, EVALUATE_BLOCK_ENTRIES // self.n_params)
        return np.concatenate([self.matrix(x[start:start + rows]) @ theta
                               for start in range(0, x.shape[0], rows)] or [np.zeros(0)])

    def fit(self, values: np.ndarray) -> np.ndarray:
        """Return theta (K,) or (K, q) that interpolates values (K,) or (K, q) at nodes().

        theta = sum_k (Delta_(k_1) x ... x Delta_(k_d)) values, summed over the kept
        increment vectors k, where each term acts on the values at the tensor grid of
        positions p_j < m(k_j + 1) and gives coefficients of the same multi-indices. This is
        Smolyak's formula with the difference operators of `increment_operator`, applied
        as two sparse products: one that computes every term's contributions, and one
        that adds them up per coefficient. Summing the small contributions keeps the
        rounding error near machine precision. Multiplying by the explicit inverse of
        `interpolation_matrix`, whose entries grow with d, does not. At d = 100, level 2
        it reproduced polynomials of size about 5 to within 2e-10, and `fit` to 6e-14.
        """
        values = np.asarray(values, dtype=float)
        if values.ndim not in (1, 2) or values.shape[0] != self.n_params:
            raise ValueError(f"values must have shape (K,) or (K, q) with K = {self.n_params} "
                             f"nodes; got {values.shape}")
        contributions, totals = self._hierarchical_maps()
        return totals @ (contributions @ values)

    def interpolation_matrix(self) -> sp.csr_matrix:
        """Return the sparse (K, K) inverse of matrix(nodes()), with `fit`'s terms added up.

        Its entries grow with d (the largest is about 166 at d = 40, level 2), so
        `fit(values)` is more accurate than `interpolation_matrix() @ values`.
        """
        contributions, totals = self._hierarchical_maps()
        return (totals @ contributions).tocsr()

    def describe(self) -> dict:
        """Return the basis settings as a JSON-ready dict for result records."""
        return {"kind": self.kind, "product": self.product, "bounds": self.bounds.tolist(),
                "level": self.level, "levels": list(self.levels), "sizes": list(self.sizes),
                "n_params": self.n_params, "nodes": self.node_family}

    def _hierarchical_maps(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Return the sparse maps of `fit`, built on first use: contributions (T, K) and totals (K, T).

        T is the total number of points of the tensor grids of all kept increment
        vectors. Row t of contributions is one term's contribution to one coefficient,
        and totals adds the contributions of each coefficient.
        """
        if self._maps is not None:
            return self._maps

        lookup = {self._key(states, entries): row for row, (states, entries)
                  in enumerate(zip(self.active_states.tolist(), self.active_positions.tolist()))}
        rows, cols, data, targets = [], [], [], []
        offset = 0
        for vector in increment_vectors(self.levels):
            states = [j for j, _ in vector]
            counts = [rule_size(k + 1) for _, k in vector]
            block = np.array([lookup[self._key(states, p)]
                              for p in itertools.product(*[range(m) for m in counts])], dtype=np.int64)
            kron = np.ones((1, 1))
            for _, k in vector:
                kron = np.kron(kron, increment_operator(k, self.points_1d))

            rows.append(offset + np.repeat(np.arange(block.size), block.size))
            cols.append(np.tile(block, block.size))
            data.append(kron.ravel())
            targets.append(block)
            offset += block.size

        contributions = sp.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                                      shape=(offset, self.n_params))
        contributions.eliminate_zeros()
        totals = sp.csr_matrix((np.ones(offset), (np.concatenate(targets), np.arange(offset))),
                               shape=(self.n_params, offset))
        self._maps = (contributions, totals)
        return self._maps

    @staticmethod
    def _key(states, entries) -> tuple:
        """Return the hashable (state, position) pairs of the non-zero positions."""
        return tuple((j, p) for j, p in zip(states, entries) if j >= 0 and p > 0)
