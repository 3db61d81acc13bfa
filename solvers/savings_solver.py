"""Projection solver for the savings model: one 1-D basis per income state, with kink knots.

The policy of income state i is `c_i(a) = min(Phi_i(a) theta_i, a + b)` on that state's
interval `[lo_i, hi_i]`, where Phi_i is a 1-D basis in cash on hand a (a B-spline, a
Chebyshev or a monomial basis) and theta_i its coefficients. `lo_i = -R b + y[i]` is
the least cash on hand reachable in state i, so the interval is not widened below it.
Its upper end is widened by the spec's `domain_margin` times the half-width of the box,
`hi_i = a_max + margin (a_max - lo_i) / 2`, because next-period cash on hand
`a' = R s + y[j]` can exceed a_max. The coefficients of all states form one vector
theta of K = sum_i K_i entries.

At a node (a, i) with consumption `c = Phi_i(a) theta_i`, savings `s = a - c` and
next-period consumption `c'_j = c_j(R s + y[j])`, the two sides of the Karush-Kuhn-Tucker
conditions are

    x = a + b - c                                   slack of the borrowing bound, >= 0
    e = beta R sum_j P[i, j] (c'_j / c)^(-gamma) - 1   unit-free Euler error, <= 0

with `x e = 0`. The expectation is exact over the chain, so the spec's
`quadrature_nodes` plays no part. Two formulations turn these into residuals:

- complementarity (uniform or given knots, Chebyshev, monomial): the Fischer-Burmeister
  residual `phi(x, -e) = x - e - sqrt(x^2 + e^2)`, which is 0 exactly when x >= 0,
  e <= 0 and x e = 0. It is piecewise smooth, so Newton's method with the generalized
  Jacobian (semismooth Newton) applies.
- kink knots (splines): the constraint of state i binds on `[lo_i, a*_i]` and nowhere
  else. A knot of multiplicity `order` at a*_i lets the spline be linear below it and
  bend at it. Nodes at or below a*_i carry the residual x, the others carry e. This
  system is smooth, and the `order + 1` collocation points on `[lo_i, a*_i]` make the
  spline equal `a + b` there to rounding.

The kink a*_i is where the consumer ends the period at the borrowing limit, `s = -b`.
Given the policy of the next period, the Euler equation at `s = -b` gives it directly,

    a*_i = -b + C_i(-b),   C_i(s) = (beta R sum_j P[i, j] c_j(R s + y[j])^(-gamma))^(-1/gamma),

and the constraint binds in state i only if `a*_i > lo_i`. A kink of c_j at cash on
hand k (the primary kink, or one already propagated) makes the expectation bend at the
savings level `s = (k - y[j]) / R`, so c_i has a kink at `s + C_i(s)` as well, with a
smaller slope jump. At the default calibration there are 400 to 500 such kinks per
binding state with jumps above 1e-6, and their jumps fall from about 0.15 to 1e-4
over 20 generations. Each one that lies between knots costs an error of about its
jump times the knot spacing.

The solver places a knot of multiplicity `order` at the primary kinks. At the
propagated kinks with the largest jumps, up to HINGE_SHARE of a state's functions,
it adds one hinge function each (`hinge_transform`): the spline's slope may jump
there, while its second and third derivatives stay continuous, so a kink costs one
coefficient instead of `order`. Stored coefficients are those of the B-spline basis
with `order` knots at every kink, so `build_policy` needs no hinges. The solver
solves, recomputes every kink from the solution, and repeats until the kinks stop
moving. The remaining knots are spaced more densely towards the low end, where the
policy bends most.

Measured at the default calibration with n_basis 400 (tests/solvers/test_savings_solver.py):
max interior Euler error 10^-5.82 on the box points and 10^-6.05 on the path, in 6.7 s
of CPU time (one BLAS thread, on a 2-core VM). The largest errors sit at untracked
propagated kinks with jumps near 1e-4.

NOTE: with n_basis 400, other calibrations reach about 10^-5.3 to 10^-6 (gamma 3 with
b 0.5 and 7 Tauchen states: box 10^-5.33; gamma 5: 10^-5.36), not 10^-5.5 everywhere.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg
from threadpoolctl import threadpool_limits

from solvers import algorithms
from solvers.bases import ChebyshevBasis, MonomialBasis, SplineBasis, TensorBasis
from solvers.control import SolveControl
from solvers.savings import SavingsModel
from solvers.solution import Solution

logger = logging.getLogger(__name__)

SUPPORTED_BASES = ("spline", "chebyshev", "monomial")
SUPPORTED_OBJECTIVES = ("collocation", "least_squares")
SUPPORTED_ALGORITHMS = {
    "collocation": ("newton", "gauss_newton", "levenberg_marquardt"),
    "least_squares": ("gauss_newton", "levenberg_marquardt"),
}

# Kink tracking: rounds of solve-then-relocate, and the largest change of a kink
# location, in units of mean income, that counts as no change.
KINK_ROUNDS_MAX = 20
KINK_TOL = 1e-10

# Solves with more functions per state than WARM_START_N_BASIS start from the policy
# of WARM_START_ROUNDS rounds with that many (see `_solve_with_kinks`).
WARM_START_N_BASIS = 40
WARM_START_ROUNDS = 3

# Rounds in which the set of propagated kinks is chosen anew from the latest policy.
# Later rounds follow the lineages of the last choice and only move the kinks.
KINK_FREE_ROUNDS = 2

# Propagated kinks are tracked while their estimated slope jump (see `_children`) is at
# least KINK_JUMP_MIN, for at most KINK_GENERATIONS_MAX generations, keeping the
# KINK_FRONTIER_MAX largest jumps of each generation. At the default calibration a
# generation has up to about 220 children with jumps above 1e-6, so the frontier keeps
# them all. The jumps of state 0 fall from 0.49 at a*_0 to 0.15, 0.067, 0.036, 0.021 and 0.0021 ten
# generations on, at cash on hand 3.1 (read off the EGM reference).
KINK_JUMP_MIN = 1e-5
KINK_GENERATIONS_MAX = 40
KINK_FRONTIER_MAX = 400

# Steps, in units of mean income, of the finite differences that estimate the policy's
# slope at a kink. They are wide enough to reach past the knot of the previous round,
# which may lie a little off the kink located now.
SLOPE_STEP = 1e-4
PRIMARY_SLOPE_STEP = 1e-3

# At most this share of a state's functions, beyond the `2 order + 2` that the primary
# kink and the end knots need (see `kink_budget`), are hinges on propagated kinks.
HINGE_SHARE = 0.6

# Free knots of a kink-knot spline are at `start + (hi - start) u^KNOT_GRADING` for
# evenly spaced u in (0, 1), denser towards the low end, where the policy bends most.
KNOT_GRADING = 2.0

# Knots closer than this share of the interval are merged, and kinks closer than that
# count as one kink.
KINK_MERGE_SHARE = 1e-7

# Slope of the first guess above each state's lower end, before the first solve.
FIRST_GUESS_SLOPE = 0.1

# Dense systems of this size gain nothing from BLAS threads (see solvers.collocation).
SINGLE_THREAD_MAX_PARAMS = 2_000

# Jacobians with more columns get their condition number from Lanczos iterations, not
# from a full SVD (see `jacobian_condition_number`).
DENSE_SVD_MAX = 600

# Residual kinds of a node.
BINDING, EULER, COMPLEMENTARITY = 0, 1, 2


# ---------------------------------------------------------------------------
# Policy: one 1-D basis and coefficient block per income state


@dataclass
class StatePolicy:
    """Approximation of one income state's policy.

    basis: 1-D basis on `[lo, hi]` (bounds of shape (1, 2)). offset: index of the
    state's first coefficient in theta. kink: the cash on hand a* at or below which
    the constraint binds, or None when the solve did not place a kink in this state.
    """

    basis: TensorBasis
    offset: int
    kink: float | None = None
    transform: sp.csr_matrix | None = None
    node_basis: TensorBasis | None = None
    collocation_points: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Number of coefficients K_i of this state."""
        if self.transform is not None:
            return self.transform.shape[1]
        return self.basis.n_params

    def block(self, theta: np.ndarray) -> np.ndarray:
        """Return this state's coefficients, shape (K_i,)."""
        return theta[self.offset:self.offset + self.size]

    def coefficients(self, theta: np.ndarray) -> np.ndarray:
        """Return this state's coefficients of `basis`, shape (basis.n_params,)."""
        block = self.block(theta)
        return block if self.transform is None else self.transform @ block

    def nodes(self, oversampling: float = 1.0) -> np.ndarray:
        """Return the state's collocation points (M_i,), M_i = K_i at oversampling 1.

        With a transform, oversampling 1 gives `collocation_points`, and larger
        oversampling the nodes of `node_basis`.
        """
        if self.collocation_points is not None and oversampling == 1:
            return self.collocation_points
        source = self.basis if self.node_basis is None else self.node_basis
        return source.nodes(oversampling=oversampling)[:, 0]

    def matrix(self, a: np.ndarray, derivative: bool = False) -> np.ndarray:
        """Return the dense (N, K_i) basis matrix at cash on hand a (N,), or its slope."""
        phi = self.basis.matrix(a[:, None], derivative=0 if derivative else None)
        if self.transform is not None:
            phi = phi @ self.transform
        return phi.toarray() if sp.issparse(phi) else np.asarray(phi)


def evaluate_policy(states: list[StatePolicy], theta: np.ndarray, b: float,
                    a: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Return consumption `min(Phi_i(a) theta_i, a + b)` at cash on hand a and states i.

    a (float) and i (int) have one shape, and the result has that shape, in units of
    mean income.
    """
    a = np.asarray(a, dtype=float)
    i = np.asarray(i)
    flat_a, flat_i = a.ravel(), i.ravel()
    consumption = np.empty(flat_a.shape)

    for state in np.unique(flat_i):
        mask = flat_i == state
        approximation = states[int(state)]
        points = flat_a[mask][:, None]
        consumption[mask] = approximation.basis.evaluate(approximation.coefficients(theta), points)

    np.minimum(consumption, flat_a + b, out=consumption)
    return consumption.reshape(a.shape)


def build_policy(parameters: dict[str, Any]):
    """Rebuild the policy `c(a, i)` of a solve from its JSON-ready `parameters`.

    The result takes numpy arrays a (float) and i (int income-state indices) of one
    shape and returns consumption of that shape, bit for bit as the solve's policy.
    """
    states, offset = [], 0
    for record in parameters["states"]:
        basis = _basis_from_record(record)
        states.append(StatePolicy(basis, offset, record.get("kink")))
        offset += basis.n_params
    theta = np.concatenate([np.asarray(record["coefficients"], dtype=float)
                            for record in parameters["states"]])
    b = float(parameters["b"])

    def policy(a: np.ndarray, i: np.ndarray) -> np.ndarray:
        return evaluate_policy(states, theta, b, a, i)

    return policy


def _basis_from_record(record: dict[str, Any]) -> TensorBasis:
    """Return the 1-D basis that one state's parameter record describes."""
    bounds = np.array([record["bounds"]], dtype=float)
    kind = record["kind"]
    if kind == "spline":
        return SplineBasis(bounds, [None], order=record["order"], knots=[record["interior_knots"]])
    if kind in ("chebyshev", "monomial"):
        cls = ChebyshevBasis if kind == "chebyshev" else MonomialBasis
        return cls(bounds, [record["degree"]], nodes=record["nodes"], seed=record["seed"])
    raise ValueError(f"state record has basis kind {kind!r}; valid choices: "
                     f"{', '.join(SUPPORTED_BASES)}")


def _state_record(approximation: StatePolicy, theta: np.ndarray) -> dict[str, Any]:
    """Return one state's JSON-ready record: basis settings, bounds, kink and coefficients."""
    basis = approximation.basis
    record: dict[str, Any] = {"kind": basis.kind, "bounds": basis.bounds[0].tolist(),
                              "kink": approximation.kink,
                              "coefficients": approximation.coefficients(theta).tolist()}
    if basis.kind == "spline":
        record.update(order=basis.order, interior_knots=basis.interior_knots[0].tolist())
    else:
        record.update(degree=basis.degrees[0], nodes=basis.node_family, seed=basis.seed)
    return record


# ---------------------------------------------------------------------------
# Approximation domain and bases


def approximation_bounds(model: SavingsModel, margin: float) -> np.ndarray:
    """Return each state's interval of cash on hand `[lo_i, hi_i]`, shape (n, 2).

    The lower end is the box's, because no state reaches less cash on hand. The upper
    end is widened by `margin` times the box's half-width, `(a_max - lo_i) / 2`.
    """
    if not (math.isfinite(margin) and 0 <= margin <= 1):
        raise ValueError(f"domain_margin = {margin!r} is out of range; valid range is "
                         "0 <= domain_margin <= 1")
    box = model.bounds.copy()
    box[:, 1] += margin * (box[:, 1] - box[:, 0]) / 2
    return box


def polynomial_states(basis_spec, bounds: np.ndarray, seed: int) -> list[StatePolicy]:
    """Return one Chebyshev or monomial basis of degree `basis_spec.degree` per state."""
    cls = ChebyshevBasis if basis_spec.kind == "chebyshev" else MonomialBasis
    states, offset = [], 0
    for low, high in bounds:
        basis = cls(np.array([[low, high]]), [basis_spec.degree], nodes=basis_spec.nodes, seed=seed)
        states.append(StatePolicy(basis, offset))
        offset += basis.n_params
    return states


def spline_states(basis_spec, bounds: np.ndarray) -> list[StatePolicy]:
    """Return one spline per state with the spec's knots (None: uniform, or a list per state)."""
    knots = basis_spec.knots
    if knots is None:
        knots = [None] * bounds.shape[0]
    if len(knots) != bounds.shape[0]:
        raise ValueError(f"basis.knots has {len(knots)} entries; the model has "
                         f"{bounds.shape[0]} income states and needs one entry (a list or "
                         f"None) per state")

    states, offset = [], 0
    for (low, high), state_knots in zip(bounds, knots):
        basis = SplineBasis(np.array([[low, high]]), [basis_spec.n_basis], order=basis_spec.order,
                            knots=[state_knots])
        states.append(StatePolicy(basis, offset))
        offset += basis.n_params
    return states


def kink_spline_states(n_basis: int, order: int, bounds: np.ndarray,
                       kinks: "KinkSet") -> list[StatePolicy]:
    """Return one spline per state whose knots follow the tracked kinks.

    State i gets `n_basis` functions when no knots merge. Its primary kink, if any,
    takes `order` interior knots, so the spline is only continuous there. Each tracked
    propagated kink takes one function, a hinge (see `hinge_transform`): the spline
    may change its slope there, while its second and third derivatives stay
    continuous. The other interior knots are graded from the primary kink (or lo_i)
    to hi_i. The basis stored for a state is the B-spline basis with `order` knots
    at every kink, and the state's `transform` maps its coefficients to that basis.
    """
    states, offset = [], 0
    for state, (low, high) in enumerate(bounds):
        gap = KINK_MERGE_SHARE * (high - low)
        primary = kinks.primary[state:state + 1] if kinks.binds(state) else np.empty(0)
        hinges = _distinct(kinks.propagated[state], gap)
        start = primary[0] if primary.size else low

        free_count = n_basis - order - 1 - order * primary.size - hinges.size
        free = _graded_knots(start, high, free_count)
        smooth = _merge_knots(primary, _drop_near(free, hinges, gap), order, gap)
        refined = np.sort(np.concatenate([smooth, np.repeat(hinges, order)]))

        box = np.array([[low, high]])
        basis = SplineBasis(box, [None], order=order, knots=[refined])
        kink = float(primary[0]) if primary.size else None
        if hinges.size == 0:
            states.append(StatePolicy(basis, offset, kink))
        else:
            transform = hinge_transform(SplineBasis(box, [None], order=order, knots=[smooth]),
                                        basis, hinges)
            node_basis = SplineBasis(box, [None], order=order,
                                     knots=[np.sort(np.concatenate([smooth, hinges]))])
            points = select_collocation_points(basis, transform, kink)
            states.append(StatePolicy(basis, offset, kink, transform, node_basis, points))
        offset += states[-1].size
    return states


def hinge_transform(smooth: SplineBasis, refined: SplineBasis, hinges: np.ndarray) -> sp.csr_matrix:
    """Return the sparse map from smooth-spline and hinge coefficients to refined coefficients.

    smooth: 1-D B-spline basis (K_s functions). refined: the same knots plus `order`
    copies of each hinge location in `hinges` (H,), with K_r = K_s + order H
    functions. The result Z has shape (K_r, K_s + H). Its first K_s columns insert
    the hinge knots into the smooth spline, so they span the
    smooth splines exactly. Column K_s + k is a hinge at x_k = hinges[k]: the
    truncated power `(a - x_k)_+` minus a smooth spline that equals `a - x_k` from
    `order + 1` smooth knots above x_k on. That hinge is zero below x_k and above
    those knots, its slope jumps at x_k, and its second and third derivatives are
    continuous there. Each hinge column is scaled to a largest entry of 1.
    """
    order = refined.order
    insertion = knot_insertion_matrix(smooth, refined)
    t_smooth, t_refined = smooth.knots[0], refined.knots[0]
    xi_smooth, xi_refined = smooth.greville(0), refined.greville(0)
    size_refined = refined.n_params
    columns = []
    for location in hinges:
        # The localizing spline takes the coefficients of `a - x_k` from the first smooth
        # function whose support starts at or above x_k. So it equals `a - x_k` from
        # knot `first + order` on, where only such functions are nonzero.
        first = int(np.searchsorted(t_smooth, location, side="left"))
        local = np.zeros(smooth.n_params)
        local[first:] = xi_smooth[first:] - location
        hinge = np.maximum(xi_refined - location, 0.0) - insertion @ local

        end = t_smooth[min(first + order, t_smooth.size - 1)]
        outside = (t_refined[:size_refined] >= end) | (t_refined[order + 1:] <= location)
        hinge[outside] = 0.0
        columns.append(hinge / np.abs(hinge).max())
    return sp.hstack([insertion, sp.csr_matrix(np.column_stack(columns))], format="csr")


def select_collocation_points(refined: SplineBasis, transform: sp.csr_matrix,
                              kink: float | None) -> np.ndarray:
    """Return K collocation points for the basis `refined.matrix @ transform` (K columns).

    The Greville abscissae of the refined basis are the candidates, more than K of
    them. Those at or below the primary kink `kink` are always taken, `order + 1`
    of them, so that the spline equals `a + b` there. The rest are chosen greedily by QR
    with column pivoting on the transposed matrix, after projecting out the rows
    already taken: each step takes the point whose row adds the most new volume.
    Greville abscissae of the knots with each hinge once interpolate 2 to 8 times
    worse at the default calibration, because the matrix there is badly conditioned.
    """
    candidates = refined.greville(0)
    matrix = refined.matrix(candidates[:, None]) @ transform
    matrix = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)

    fixed = candidates <= kink if kink is not None else np.zeros(candidates.size, dtype=bool)
    rest = np.flatnonzero(~fixed)
    remaining = matrix[rest]
    if fixed.any():
        taken = np.linalg.qr(matrix[fixed].T)[0]
        remaining = remaining - (remaining @ taken) @ taken.T

    count = transform.shape[1] - int(fixed.sum())
    pivots = scipy.linalg.qr(remaining.T, mode="r", pivoting=True)[1]
    chosen = np.concatenate([np.flatnonzero(fixed), rest[pivots[:count]]])
    return np.sort(candidates[chosen])


def knot_insertion_matrix(coarse: SplineBasis, fine: SplineBasis) -> sp.csr_matrix:
    """Return the (K_f, K_c) map from coarse to fine B-spline coefficients of the same spline.

    The fine knot vector must contain the coarse one. The map solves the collocation
    system of the fine basis at its Greville abscissae, which is banded and
    nonsingular, for the coarse functions' values there. An entry (j, i) is nonzero only
    when the support of fine function j lies inside that of coarse function i, and
    the rest, rounding of size 1e-16, are set to 0.
    """
    order = fine.order
    points = fine.greville(0)[:, None]
    values = coarse.matrix(points).toarray()
    insertion = scipy.sparse.linalg.splu(fine.matrix(points).tocsc()).solve(values)

    t_coarse, t_fine = coarse.knots[0], fine.knots[0]
    start_fine, end_fine = t_fine[:fine.n_params], t_fine[order + 1:]
    start_coarse, end_coarse = t_coarse[:coarse.n_params], t_coarse[order + 1:]
    inside = ((start_fine[:, None] >= start_coarse[None, :])
              & (end_fine[:, None] <= end_coarse[None, :]))
    insertion[~inside] = 0.0
    return sp.csr_matrix(insertion)


def _distinct(locations: np.ndarray, gap: float) -> np.ndarray:
    """Return the sorted locations without any that lies within `gap` of the one before it.

    Rounds that follow kink lineages can move two kinks together, and `order` knots
    at each would exceed the multiplicity a spline allows.
    """
    if locations.size < 2:
        return locations
    keep = np.concatenate([[True], np.diff(locations) > gap])
    return locations[keep]


def _drop_near(free_knots: np.ndarray, locations: np.ndarray, gap: float) -> np.ndarray:
    """Return the free knots farther than `gap` from every location."""
    if free_knots.size == 0 or locations.size == 0:
        return free_knots
    distance = np.abs(free_knots[:, None] - locations[None, :]).min(axis=1)
    return free_knots[distance > gap]


def _graded_knots(start: float, end: float, count: int) -> np.ndarray:
    """Return `count` knots strictly inside (start, end), denser towards start."""
    unit = np.arange(1, count + 1) / (count + 1)
    return start + (end - start) * unit ** KNOT_GRADING


def _merge_knots(kink_knots: np.ndarray, free_knots: np.ndarray, order: int,
                 gap: float) -> np.ndarray:
    """Return the sorted interior knots: each kink `order` times, and the free knots.

    A free knot within `gap` of a kink is dropped, so that no value repeats more than
    `order` times and no knot interval is shorter than rounding can resolve.
    """
    if kink_knots.size:
        distance = np.abs(free_knots[:, None] - kink_knots[None, :]).min(axis=1)
        free_knots = free_knots[distance > gap]
    return np.sort(np.concatenate([np.repeat(kink_knots, order), free_knots]))


# ---------------------------------------------------------------------------
# Kink location


@dataclass
class KinkSet:
    """Kinks of the policy per income state, in cash on hand (units of mean income).

    primary: a*_i per state, shape (n,), the cash on hand up to which the constraint
    binds; it binds in state i only where `a*_i > lo_i`. propagated: one array of
    tracked propagated kinks per state, sorted, each strictly above the state's a*_i.
    lower: lo_i per state, shape (n,). merge_gap: distance per state (n,) below which
    two locations count as one. lineages: per state, the lineage of each propagated
    kink, in the order of `propagated` (see `locate_kinks`).
    """

    primary: np.ndarray
    propagated: list[np.ndarray]
    lower: np.ndarray
    merge_gap: np.ndarray
    lineages: list[list[tuple]]

    def binds(self, state: int) -> bool:
        """Return True when the constraint binds on part of state's interval."""
        return bool(self.primary[state] > self.lower[state] + self.merge_gap[state])

    def knots(self, state: int) -> np.ndarray:
        """Return the distinct kink locations of one state, sorted."""
        if self.binds(state):
            return np.concatenate([[self.primary[state]], self.propagated[state]])
        return self.propagated[state]

    def distance(self, other: "KinkSet") -> float:
        """Return the largest change of a kink location, or inf when the sets differ in shape."""
        if any(self.binds(s) != other.binds(s) for s in range(self.primary.size)):
            return math.inf
        change = float(np.abs(self.primary - other.primary).max())
        for mine, theirs in zip(self.propagated, other.propagated):
            if mine.size != theirs.size:
                return math.inf
            if mine.size:
                change = max(change, float(np.abs(mine - theirs).max()))
        return change

    def as_dict(self) -> dict[str, Any]:
        """Return the kinks as a JSON-ready dict."""
        return {"primary": self.primary.tolist(),
                "binds": [self.binds(s) for s in range(self.primary.size)],
                "propagated": [p.tolist() for p in self.propagated]}


def euler_consumption(model: SavingsModel, policy, savings: np.ndarray,
                      states: np.ndarray) -> np.ndarray:
    """Return C_i(s), the consumption that satisfies the Euler equation at savings s.

    savings (N,) and states (N,) integer. `C_i(s) = (beta R E[c(R s + y[j], j)^-gamma | i])^(-1/gamma)`,
    with the next-period policy `policy`. In units of mean income, shape (N,).
    """
    a_next = model.next_cash_on_hand(savings)
    j_next = np.broadcast_to(np.arange(model.n_states), a_next.shape)
    c_next = policy(a_next.ravel(), j_next.ravel()).reshape(a_next.shape)

    probability = model.P[states]
    marginal = np.where(probability > 0, probability * c_next ** (-model.gamma), 0.0)
    return (model.beta * model.R * marginal.sum(axis=1)) ** (-1.0 / model.gamma)


def locate_kinks(model: SavingsModel, policy, bounds: np.ndarray, max_kinks: int,
                 follow: list[list[tuple]] | None = None) -> KinkSet:
    """Locate the primary kink of every state and its strongest propagated kinks.

    policy: the current `c(a, i)`. bounds: each state's interval (n, 2). max_kinks:
    the maximum number of kinks, primary included, that one state keeps. Kinks are propagated
    generation by generation (see the module docstring) while their estimated slope
    jump (`_children`) is at least KINK_JUMP_MIN, and each state keeps the ones with
    the largest jumps. follow: lineages to locate instead of choosing anew, one list
    per state as in `KinkSet.lineages`. A lineage is the tuple of states a kink passed
    through, from the state of its primary kink. Following them keeps the set of
    kinks fixed between rounds, because kinks of nearly equal jumps would otherwise
    swap places and the rounds would not settle.
    """
    n, lower = model.n_states, bounds[:, 0]
    merge_gap = KINK_MERGE_SHARE * (bounds[:, 1] - bounds[:, 0])
    all_states = np.arange(n)
    primary = -model.b + euler_consumption(model, policy, np.full(n, -model.b), all_states)
    binding = primary > lower + merge_gap
    prefixes = None if follow is None else {key[:g] for keys in follow for key in keys
                                            for g in range(1, len(key) + 1)}

    parent_states = np.flatnonzero(binding)
    parents = Kinks(states=parent_states, cash=primary[parent_states],
                    consumption=primary[parent_states] + model.b,
                    jumps=1 - _slope(policy, primary[parent_states], parent_states, side=1),
                    lineages=[(int(s),) for s in parent_states])
    floor = np.maximum(primary, lower) + merge_gap

    found: list[Kinks] = []
    for _ in range(KINK_GENERATIONS_MAX):
        child = _children(model, policy, parents)
        inside = (child.cash > floor[child.states]) & (child.cash < bounds[child.states, 1])
        if prefixes is None:
            inside &= child.jumps >= KINK_JUMP_MIN
        else:
            inside &= np.array([key in prefixes for key in child.lineages], dtype=bool)
        order = np.flatnonzero(inside)[np.argsort(-child.jumps[inside], kind="stable")]
        if prefixes is None:
            order = order[:KINK_FRONTIER_MAX]
        parents = child.take(order)
        if parents.states.size == 0:
            break
        found.append(parents)

    candidates = Kinks.concatenate(found)
    propagated, lineages = [], []
    for state in range(n):
        mine = candidates.take(np.flatnonzero(candidates.states == state))
        if follow is None:
            slots = max_kinks - (1 if binding[state] else 0)
            chosen = _heaviest_distinct(mine, slots, merge_gap[state])
        else:
            wanted = set(follow[state])
            chosen = mine.take(np.array([k for k, key in enumerate(mine.lineages) if key in wanted],
                                        dtype=np.int64))
        ordered = np.argsort(chosen.cash)
        propagated.append(chosen.cash[ordered])
        lineages.append([chosen.lineages[k] for k in ordered])
    return KinkSet(primary=primary, propagated=propagated, lower=lower.copy(),
                   merge_gap=merge_gap, lineages=lineages)


@dataclass
class Kinks:
    """Kinks as parallel arrays (N,): income state, cash on hand, consumption there,
    estimated slope jump, and lineage (the states passed through, primary first)."""

    states: np.ndarray
    cash: np.ndarray
    consumption: np.ndarray
    jumps: np.ndarray
    lineages: list[tuple]

    def take(self, index: np.ndarray) -> "Kinks":
        """Return the kinks at the integer positions `index`."""
        return Kinks(self.states[index], self.cash[index], self.consumption[index],
                     self.jumps[index], [self.lineages[k] for k in index])

    @staticmethod
    def concatenate(parts: list["Kinks"]) -> "Kinks":
        """Return all kinks of `parts` as one set."""
        if not parts:
            return Kinks(np.empty(0, dtype=np.int64), np.empty(0), np.empty(0), np.empty(0), [])
        return Kinks(np.concatenate([p.states for p in parts]),
                     np.concatenate([p.cash for p in parts]),
                     np.concatenate([p.consumption for p in parts]),
                     np.concatenate([p.jumps for p in parts]),
                     [key for p in parts for key in p.lineages])


def _children(model: SavingsModel, policy, parents: Kinks) -> Kinks:
    """Return the kinks that the parent kinks cause in the current policy.

    A kink of c_j at cash on hand k lies at savings `s = (k - y[j]) / R` of every state
    i with P[i, j] > 0, kept when -b < s < a_max, and there at cash on hand
    `s + C_i(s)`. Differentiating the Euler equation on both sides of the kink gives
    the estimate of its slope jump

        D_i = (1 - c_i')^2 beta R^2 P[i, j] (c_j(k) / c_i)^(-gamma - 1) D_j

    with c_i' the slope of the current policy there.
    """
    savings = (parents.cash - model.y[parents.states]) / model.R
    usable = (savings > -model.b) & (savings < model.a_max)
    pairs = [(i, p) for p in np.flatnonzero(usable) for i in range(model.n_states)
             if model.P[i, parents.states[p]] > 0]
    if not pairs:
        return Kinks.concatenate([])

    states = np.array([i for i, _ in pairs], dtype=np.int64)
    source = np.array([p for _, p in pairs], dtype=np.int64)
    consumption = euler_consumption(model, policy, savings[source], states)
    cash = savings[source] + consumption

    slope = _slope(policy, cash, states, side=0)
    probability = model.P[states, parents.states[source]]
    ratio = (parents.consumption[source] / consumption) ** (-model.gamma - 1)
    jumps = (1 - slope) ** 2 * model.beta * model.R ** 2 * probability * ratio * parents.jumps[source]
    lineages = [parents.lineages[p] + (int(i),) for i, p in pairs]
    return Kinks(states, cash, consumption, np.abs(jumps), lineages)


def _slope(policy, a: np.ndarray, states: np.ndarray, side: int) -> np.ndarray:
    """Return the policy's slope at (a, states) by finite differences, shape (N,).

    side 1 takes the right-hand slope over PRIMARY_SLOPE_STEP, side 0 the central one
    over SLOPE_STEP, which at a kink is the mean of both sides.
    """
    if side == 1:
        return (policy(a + PRIMARY_SLOPE_STEP, states) - policy(a, states)) / PRIMARY_SLOPE_STEP
    return (policy(a + SLOPE_STEP, states) - policy(a - SLOPE_STEP, states)) / (2 * SLOPE_STEP)


def _heaviest_distinct(kinks: Kinks, count: int, gap: float) -> Kinks:
    """Return up to `count` kinks, largest jump first, skipping any within `gap` of one kept."""
    kept: list[int] = []
    for index in np.argsort(-kinks.jumps, kind="stable"):
        if len(kept) >= count:
            break
        if all(abs(kinks.cash[index] - kinks.cash[other]) > gap for other in kept):
            kept.append(int(index))
    return kinks.take(np.array(kept, dtype=np.int64))


def first_guess_kinks(model: SavingsModel, bounds: np.ndarray, max_kinks: int) -> KinkSet:
    """Return the kinks of the first guess, consumption `a + b` in every state.

    This guess makes every state bind at its lower end, so the first primary kinks are
    where the consumer would be constrained if constrained next period too.
    """
    return locate_kinks(model, lambda a, i: a + model.b, bounds, max_kinks)


# ---------------------------------------------------------------------------
# Residual system


class SavingsSystem:
    """Residuals R(theta) at the nodes of every state, with the dense Jacobian dR/dtheta.

    points: cash on hand of the nodes (M,). node_states: their income states (M,).
    kinds: BINDING (residual x = a + b - c), EULER (residual e) or COMPLEMENTARITY
    (residual phi(x, -e)) per node. clip_next: whether next-period consumption is
    clipped at `a' + b`, as the returned policy is. With kink knots the spline equals
    `a + b` where the constraint binds, so clipping would only add rounding.
    """

    def __init__(self, model: SavingsModel, states: list[StatePolicy], points: np.ndarray,
                 node_states: np.ndarray, kinds: np.ndarray, clip_next: bool):
        self.model = model
        self.states = states
        self.points = points
        self.node_states = node_states
        self.kinds = kinds
        self.clip_next = clip_next
        self.n_params = sum(s.size for s in states)
        # Nodes of each state form one contiguous run (see `node_set`).
        self.state_rows = [self._rows(state) for state in range(len(states))]
        self.own_matrix = self._own_matrix()

    def _rows(self, state: int):
        """Return the rows of one state's nodes, as a slice when they are contiguous."""
        rows = np.flatnonzero(self.node_states == state)
        if rows.size and rows[-1] - rows[0] + 1 == rows.size:
            return slice(int(rows[0]), int(rows[-1]) + 1)
        return rows

    def _own_matrix(self) -> np.ndarray:
        """Return the (M, K) matrix of each node's own-state basis, zero in other blocks."""
        matrix = np.zeros((self.points.size, self.n_params))
        for state, approximation in enumerate(self.states):
            rows = self.state_rows[state]
            columns = slice(approximation.offset, approximation.offset + approximation.size)
            matrix[rows, columns] = approximation.matrix(self.points[rows])
        return matrix

    def __call__(self, theta: np.ndarray, with_jacobian: bool):
        """Return the residuals (M,) and, if asked, the Jacobian (M, K), else None."""
        model = self.model
        c = self.own_matrix @ theta
        slack = self.points + model.b - c
        a_next = model.next_cash_on_hand(self.points - c)
        c_next, slope_next, matrices = self._next_period(theta, a_next, with_jacobian)

        probability = model.P[self.node_states]
        with np.errstate(all="ignore"):
            ratio = model.beta * model.R * probability * (c_next / c[:, None]) ** (-model.gamma)
        ratio = np.where(probability > 0, ratio, 0.0)
        euler = ratio.sum(axis=1) - 1

        binding = self.kinds == BINDING
        complementarity = self.kinds == COMPLEMENTARITY
        residual = np.where(binding, slack, euler)
        fb_value, fb_slack, fb_euler = fischer_burmeister(slack, -euler)
        residual = np.where(complementarity, fb_value, residual)
        if not with_jacobian:
            return residual, None

        # Rows are overwritten in place: the (M, K) matrix is the largest array of a solve.
        jacobian = self._euler_jacobian(c, c_next, slope_next, ratio, euler, matrices)
        jacobian[binding] = -self.own_matrix[binding]
        if complementarity.any():
            rows = np.flatnonzero(complementarity)
            jacobian[rows] = (-fb_slack[rows, None] * self.own_matrix[rows]
                              - fb_euler[rows, None] * jacobian[rows])
        return residual, jacobian

    def _next_period(self, theta: np.ndarray, a_next: np.ndarray, with_jacobian: bool):
        """Return c'_j, dc'_j/da' (both (M, n)) and, if asked, each state's (M, K_j) basis matrix."""
        c_next = np.empty_like(a_next)
        slope_next = np.empty_like(a_next)
        matrices = []
        for state, approximation in enumerate(self.states):
            points = a_next[:, state:state + 1]
            coefficients = approximation.coefficients(theta)
            c_next[:, state] = approximation.basis.matrix(points) @ coefficients
            slope_next[:, state] = approximation.basis.matrix(points, derivative=0) @ coefficients

            clipped = None
            if self.clip_next:
                clipped = c_next[:, state] > a_next[:, state] + self.model.b
                c_next[clipped, state] = a_next[clipped, state] + self.model.b
                slope_next[clipped, state] = 1.0
            if with_jacobian:
                phi = approximation.matrix(a_next[:, state])
                if clipped is not None:
                    phi[clipped] = 0.0
                matrices.append(phi)
        return c_next, slope_next, matrices

    def _euler_jacobian(self, c, c_next, slope_next, ratio, euler, matrices) -> np.ndarray:
        """Return de/dtheta (M, K).

        With `w_j = beta R P[i, j] (c'_j / c)^-gamma` and `dc'_j = Phi_j(a'_j) dtheta_j
        - R c'_j,a dc`,

            de = sum_j (-gamma w_j / c'_j) Phi_j(a'_j) dtheta_j
                 + [sum_j gamma w_j R c'_j,a / c'_j + gamma (e + 1) / c] Phi_i(a) dtheta_i
        """
        gamma, R = self.model.gamma, self.model.R
        with np.errstate(all="ignore"):
            weight = np.where(ratio != 0, gamma * ratio / c_next, 0.0)
        own = (weight * R * slope_next).sum(axis=1) + gamma * (euler + 1) / c

        # Block by block: own_matrix is zero outside each node's own state's columns.
        jacobian = np.empty((self.points.size, self.n_params))
        for state, approximation in enumerate(self.states):
            columns = slice(approximation.offset, approximation.offset + approximation.size)
            np.multiply(-weight[:, state:state + 1], matrices[state], out=jacobian[:, columns])
            rows = self.state_rows[state]
            jacobian[rows, columns] += own[rows, None] * self.own_matrix[rows, columns]
        return jacobian


def fischer_burmeister(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return `phi = x + y - sqrt(x^2 + y^2)` and its partial derivatives in x and y, each (M,).

    phi is 0 exactly when x >= 0, y >= 0 and x y = 0. At x = y = 0, where phi has no
    derivative, the element `(1 - 1/sqrt(2), 1 - 1/sqrt(2))` of its generalized
    Jacobian is returned.
    """
    radius = np.hypot(x, y)
    value = x + y - radius
    at_origin = radius == 0
    safe = np.where(at_origin, 1.0, radius)
    d_x = np.where(at_origin, 1 - math.sqrt(0.5), 1 - x / safe)
    d_y = np.where(at_origin, 1 - math.sqrt(0.5), 1 - y / safe)
    return value, d_x, d_y


def node_set(states: list[StatePolicy], objective, kink_mode: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the nodes' cash on hand (M,), income states (M,) and residual kinds (M,).

    Collocation takes each basis's own nodes (M_i = K_i), least squares
    `oversampling` times as many. With kink knots, nodes at or below a state's kink
    are BINDING and the rest EULER. Otherwise every node is COMPLEMENTARITY.
    """
    points, node_states, kinds = [], [], []
    for state, approximation in enumerate(states):
        if objective.kind == "collocation":
            nodes = approximation.nodes()
        else:
            nodes = approximation.nodes(oversampling=objective.oversampling)

        if not kink_mode:
            kind = np.full(nodes.size, COMPLEMENTARITY)
        elif approximation.kink is None:
            kind = np.full(nodes.size, EULER)
        else:
            kind = np.where(nodes <= approximation.kink, BINDING, EULER)
        points.append(nodes)
        node_states.append(np.full(nodes.size, state))
        kinds.append(kind)
    return np.concatenate(points), np.concatenate(node_states), np.concatenate(kinds)


# ---------------------------------------------------------------------------
# Solve


@dataclass
class RoundResult:
    """One solve on fixed bases: the bases, coefficients and the algorithm's result."""

    states: list[StatePolicy]
    result: algorithms.AlgorithmResult
    n_conditions: int


def solve_savings(model: SavingsModel, method, seed: int, control: SolveControl,
                  kink_knots: bool | None = None) -> Solution:
    """Solve the savings model with one 1-D basis per income state.

    method: a `solvers.methods.MethodSpec` with a spline, chebyshev or monomial basis,
    a collocation or least_squares objective and a newton, gauss_newton or
    levenberg_marquardt algorithm (newton on collocation only). seed: seeds random
    node families. kink_knots: place knots on the located kinks (splines only); None
    reads `method.basis.knots == "kink"`. Raises ValueError naming an unsupported
    part, and SolveTimedOut or SolveCancelled through `control`.

    The returned policy takes a (float) and i (int) of one shape and returns
    consumption of that shape. `parameters` rebuilds it through `build_policy`.
    """
    basis_spec, objective, algorithm = method.basis, method.objective, method.algorithm
    kink_mode = _check_method(basis_spec, objective, algorithm, kink_knots)
    bounds = approximation_bounds(model, basis_spec.domain_margin)
    started = time.perf_counter()
    logger.info("savings solve started: basis %s, objective %s, algorithm %s, kink knots %s",
                basis_spec.kind, objective.kind, algorithm.kind, kink_mode)

    threads = 1 if basis_spec_size(basis_spec, model.n_states) <= SINGLE_THREAD_MAX_PARAMS else None
    with threadpool_limits(limits=threads, user_api="blas"):
        if kink_mode:
            final, kinks, rounds, kink_change = _solve_with_kinks(model, basis_spec, bounds, objective,
                                                                  algorithm, control)
        else:
            states = (spline_states(basis_spec, bounds) if basis_spec.kind == "spline"
                      else polynomial_states(basis_spec, bounds, seed))
            theta = first_guess(model, states, None)
            final = _solve_round(model, states, theta, objective, algorithm, control, False)
            kinks, rounds, kink_change = None, 1, None

    theta = final.result.theta
    parameters = {"basis": basis_spec.model_dump(), "b": model.b,
                  "states": [_state_record(s, theta) for s in final.states]}
    seconds = time.perf_counter() - started
    logger.info("savings solve stopped: %d rounds, %d iterations in all, max |R| %.2e, "
                "converged %s, %.2f s", rounds, final.result.iterations,
                final.result.residual_max, final.result.converged, seconds)

    extra: dict[str, Any] = {"sizes": [s.size for s in final.states], "rounds": rounds,
                             "residual_max": final.result.residual_max, "seconds": seconds}
    if kinks is not None:
        extra.update(kinks=kinks.as_dict(), kink_change=kink_change)
    converged = final.result.converged and (kinks is None or kink_change <= KINK_TOL)
    return Solution(policy=build_policy(parameters), n_params=sum(s.size for s in final.states),
                    n_conditions=final.n_conditions, iterations=final.result.iterations,
                    converged=bool(converged), parameters=parameters,
                    condition_number=jacobian_condition_number(final.result.jacobian),
                    extra=extra)


def jacobian_condition_number(jacobian: np.ndarray | None) -> float | None:
    """Return the 2-norm condition number of the final Jacobian (Lanczos above DENSE_SVD_MAX).

    A full SVD of a (1500, 1500) matrix took 17 s on a loaded 2-core machine. The
    largest singular values of J and of J^-1 (through one LU factorization) are found by
    ARPACK instead, with a fixed start vector and tolerance 1e-10.
    """
    if jacobian is None or jacobian.shape[0] != jacobian.shape[1]:
        return algorithms.condition_number(jacobian)
    if jacobian.shape[1] <= DENSE_SVD_MAX:
        return algorithms.condition_number(jacobian)
    if not np.all(np.isfinite(jacobian)):
        return math.nan

    size = jacobian.shape[0]
    start = np.ones(size) / math.sqrt(size)
    largest = scipy.sparse.linalg.svds(jacobian, k=1, v0=start, tol=1e-10,
                                       return_singular_vectors=False)[0]
    try:
        factor = scipy.linalg.lu_factor(jacobian, check_finite=False)
    except (ValueError, np.linalg.LinAlgError):
        return math.inf
    if np.any(np.diag(factor[0]) == 0):
        return math.inf
    inverse = scipy.sparse.linalg.LinearOperator(
        (size, size), dtype=float,
        matvec=lambda x: scipy.linalg.lu_solve(factor, x),
        rmatvec=lambda x: scipy.linalg.lu_solve(factor, x, trans=1))
    inverse_largest = scipy.sparse.linalg.svds(inverse, k=1, v0=start, tol=1e-10,
                                               return_singular_vectors=False)[0]
    return float(largest * inverse_largest)


def basis_spec_size(basis_spec, n_states: int) -> int:
    """Return the number of coefficients K that a basis spec requests over all states."""
    if basis_spec.kind == "spline":
        return int(basis_spec.n_basis) * n_states
    return (int(basis_spec.degree) + 1) * n_states


def _solve_with_kinks(model: SavingsModel, basis_spec, bounds: np.ndarray, objective,
                      algorithm, control: SolveControl):
    """Alternate solves and kink relocation until the kinks move by at most KINK_TOL.

    Returns the last round, its kinks, the number of rounds and the last kink change.
    Each round starts from the previous policy fitted to the new bases. Above
    WARM_START_N_BASIS functions per state, WARM_START_ROUNDS rounds with that many
    functions come first, because Newton's method from the first guess needs many
    damped steps, and those are cheap on the small system.
    """
    order, n_basis = basis_spec.order, basis_spec.n_basis
    policy, rounds, iterations = None, 0, 0
    if n_basis > WARM_START_N_BASIS:
        warm, _, rounds, _ = _kink_rounds(model, WARM_START_N_BASIS, order, bounds, objective,
                                          algorithm, control, None, WARM_START_ROUNDS)
        policy = _round_policy(warm, model.b)
        iterations = warm.result.iterations

    final, kinks, more_rounds, change = _kink_rounds(model, n_basis, order, bounds, objective,
                                                     algorithm, control, policy, KINK_ROUNDS_MAX)
    if change > KINK_TOL:
        # NOTE: kinks still moving after KINK_ROUNDS_MAX rounds; the solve is reported
        # as not converged and keeps the last round's knots.
        logger.warning("kinks still moved by %.2e after %d rounds", change, KINK_ROUNDS_MAX)
    # A job's iteration count covers every round, not only the last.
    final.result.iterations += iterations
    return final, kinks, rounds + more_rounds, change


def _kink_rounds(model: SavingsModel, n_basis: int, order: int, bounds: np.ndarray, objective,
                 algorithm, control: SolveControl, policy, max_rounds: int):
    """Run at most max_rounds rounds of solve-then-relocate with n_basis functions per state.

    policy: the policy whose kinks the first round's knots follow, or None for the
    first guess (`first_guess_kinks`). Returns the last round, its kinks, the number
    of rounds and the last kink change; the last round's iterations cover all rounds.
    """
    max_kinks = kink_budget(n_basis, order)
    if policy is None:
        kinks = first_guess_kinks(model, bounds, max_kinks)
    else:
        kinks = locate_kinks(model, policy, bounds, max_kinks)
    change, total_iterations = math.inf, 0
    for rounds in range(1, max_rounds + 1):
        control.check()
        states = kink_spline_states(n_basis, order, bounds, kinks)
        theta = first_guess(model, states, policy)
        final = _solve_round(model, states, theta, objective, algorithm, control, True)
        total_iterations += final.result.iterations

        policy = _round_policy(final, model.b)
        follow = kinks.lineages if rounds > KINK_FREE_ROUNDS else None
        located = locate_kinks(model, policy, bounds, max_kinks, follow)
        change = located.distance(kinks)
        logger.info("kink round %d with n_basis %d: max |R| %.2e, kink change %.2e", rounds,
                    n_basis, final.result.residual_max, change)
        if change <= KINK_TOL:
            break
        kinks = located

    final.result.iterations = total_iterations
    return final, kinks, rounds, change


def kink_budget(n_basis: int, order: int) -> int:
    """Return the most kinks, primary included, that one state of `n_basis` functions tracks.

    The primary kink takes `order` knots and each propagated kink one hinge; at least
    one free knot must remain. Raises ValueError when n_basis leaves no room for that.
    """
    least = 2 * order + 2
    if n_basis < least:
        raise ValueError(f"basis.n_basis = {n_basis} leaves no room for kink knots with order "
                         f"{order}; valid range with kink knots is n_basis >= {least}")
    return 1 + int(HINGE_SHARE * (n_basis - least))


def _round_policy(round_result: RoundResult, b: float):
    """Return the clipped policy `c(a, i)` of one round."""
    theta = round_result.result.theta

    def policy(a: np.ndarray, i: np.ndarray) -> np.ndarray:
        return evaluate_policy(round_result.states, theta, b, a, i)

    return policy


def _solve_round(model: SavingsModel, states: list[StatePolicy], theta: np.ndarray,
                 objective, algorithm, control: SolveControl, kink_mode: bool) -> RoundResult:
    """Solve the residual system on fixed bases, starting from theta."""
    points, node_states, kinds = node_set(states, objective, kink_mode)
    system = SavingsSystem(model, states, points, node_states, kinds, clip_next=not kink_mode)

    square = objective.kind == "collocation"
    if algorithm.kind == "newton":
        result = algorithms.newton(system, theta, algorithm.tol, algorithm.max_iterations, control)
    elif algorithm.kind == "gauss_newton":
        result = algorithms.gauss_newton(system, theta, algorithm.tol, algorithm.max_iterations, control,
                                         square)
    else:
        result = algorithms.levenberg_marquardt(system, theta, algorithm.tol, algorithm.max_iterations,
                                                algorithm.damping, control, square)
    return RoundResult(states=states, result=result, n_conditions=int(points.size))


def first_guess(model: SavingsModel, states: list[StatePolicy], policy) -> np.ndarray:
    """Return theta fitted in least squares to a guess of consumption on twice K_i points per state.

    The guess is `policy` when given (the previous round), else
    `lo_i + b + FIRST_GUESS_SLOPE (a - lo_i)`, which meets the borrowing bound at the
    lower end and stays below it.
    """
    blocks = []
    for state, approximation in enumerate(states):
        points = approximation.nodes(oversampling=2.0)
        if policy is None:
            low = model.bounds[state, 0]
            values = low + model.b + FIRST_GUESS_SLOPE * (points - low)
        else:
            values = policy(points, np.full(points.size, state))
        matrix = approximation.matrix(points)
        blocks.append(np.linalg.lstsq(matrix, values, rcond=None)[0])
    return np.concatenate(blocks)


def validate_method(model: SavingsModel, method) -> None:
    """Raise ValueError, before any solving, for a method this solver would reject: an
    unsupported part, too few functions for kink knots, or knots that do not fit a state."""
    basis_spec = method.basis
    kink_mode = _check_method(basis_spec, method.objective, method.algorithm, None)
    bounds = approximation_bounds(model, basis_spec.domain_margin)
    if kink_mode:
        kink_budget(basis_spec.n_basis, basis_spec.order)
    elif basis_spec.kind == "spline":
        spline_states(basis_spec, bounds)


def _check_method(basis_spec, objective, algorithm, kink_knots: bool | None) -> bool:
    """Raise ValueError for a part this solver does not support; return whether kink knots apply."""
    if basis_spec.kind not in SUPPORTED_BASES:
        raise ValueError(f"basis.kind {basis_spec.kind!r} is not supported by the savings solver; "
                         f"valid choices: {', '.join(SUPPORTED_BASES)}")
    if objective.kind not in SUPPORTED_OBJECTIVES:
        raise ValueError(f"objective.kind {objective.kind!r} is not supported by the savings "
                         f"solver; valid choices: {', '.join(SUPPORTED_OBJECTIVES)}")
    valid_algorithms = SUPPORTED_ALGORITHMS[objective.kind]
    if algorithm.kind not in valid_algorithms:
        raise ValueError(f"algorithm.kind {algorithm.kind!r} is not supported by the savings "
                         f"solver with objective {objective.kind!r}; valid choices: "
                         f"{', '.join(valid_algorithms)}")

    spec_knots = getattr(basis_spec, "knots", None)
    spec_kink = isinstance(spec_knots, str) and spec_knots == "kink"
    kink_mode = spec_kink if kink_knots is None else bool(kink_knots)
    if spec_kink and not kink_mode:
        raise ValueError("basis.knots = 'kink' asks for kink knots, but kink_knots is False; "
                         "pass kink_knots None or True, or set basis.knots to None")
    if kink_mode and basis_spec.kind != "spline":
        raise ValueError(f"kink knots need a spline basis; got basis.kind {basis_spec.kind!r}")
    if kink_mode and spec_knots is not None and not spec_kink:
        raise ValueError("kink knots replace the spec's basis.knots; set basis.knots to None "
                         "or 'kink'")
    if isinstance(spec_knots, str) and not spec_kink:
        raise ValueError(f"basis.knots = {spec_knots!r} is not supported; valid choices: None, "
                         "'kink' or one list of interior knots per state")
    return kink_mode
