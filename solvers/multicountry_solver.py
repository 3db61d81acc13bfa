"""Polynomial and spline solvers for the N-country model: a fixed grid, or the ergodic set.

The policy of country j is `k_j' = Phi(x) theta_j`, one linear basis Phi of K functions
on the 2N states shared by all countries, so the coefficients form a (K, N) matrix theta
and the policy has K N parameters. Both algorithms repeat one step at a set of states x: compute a
target for k'(x) from the Euler equations with the current policy, regress the targets
on Phi(x), and move theta a share `damping` of the way to the fitted coefficients, with
Anderson acceleration over the last few steps. The target (`euler_targets`) is either
`k'(x) (1 + e(x))`, with e the unit-free Euler error of each country (the fixed-point
form of Judd, Maliar and Maliar 2011, Quantitative Economics 2(2)), or by default one
Newton step on the Euler equations at each point with next-period values held fixed.
The fixed point has e = 0 wherever the basis can represent the policy.

- `fixed_grid`: x is a grid fixed in advance in the state box. A complete polynomial
  uses scrambled Sobol points (oversampling times K of them). A tensor polynomial uses
  the tensor grid of Chebyshev zeros, and a tensor spline the Greville abscissae. A
  Smolyak basis uses its sparse grid and interpolates with `SmolyakBasis.fit`.
  Convergence: the largest change of k' on the grid, relative to k' and divided by
  `damping`, falls below `tol`.
- `gssa` (generalized stochastic simulation algorithm): x is a path of `periods` states
  simulated under the current policy with a fixed, seeded shock series, so the fit
  concentrates on the ergodic set. The regression normalises the regressors and uses a
  truncated SVD or a ridge penalty, so it stays stable when the regressors are nearly
  collinear. Convergence: the mean relative change of the simulated capital series
  between iterations, divided by `damping`, falls below `tol`.

NOTE: neither algorithm solves the Euler equations to convergence at each point given
the next-period policy (time iteration in the strict sense). The one-step update needs
no nonlinear solve, which keeps d = 20 cheap, and the outer iteration converges linearly.

Complete polynomials of degree D keep the C(2N + D, D) products of total degree at most
D. Their basis matrix is built here from the (D + 1) one-dimensional factors per state,
multiplying only the at most D factors of degree above 0 in each column, so the cost is
O(n K D) instead of the O(n K d) of `solvers.bases.product_matrix`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.stats import qmc
from threadpoolctl import threadpool_limits

from solvers.bases import ChebyshevBasis, MonomialBasis, PolynomialBasis, SplineBasis, TensorBasis
from solvers.control import SolveControl, SolveDiverged
from solvers.integration import RULES, make_rule
from solvers.multicountry import MultiCountryModel
from solvers.smolyak import SmolyakBasis, check_levels, smolyak_size
from solvers.solution import Solution

logger = logging.getLogger(__name__)

ALGORITHMS = ("fixed_grid", "gssa")
BASES = ("chebyshev", "monomial", "spline")
PRODUCTS = ("complete", "tensor", "smolyak")
REGULARISATIONS = ("svd", "ridge")
UPDATES = ("newton", "ratio")
VARIABLES = ("logs", "levels")
MAX_COMPLETE_DEGREE = 5
MAX_TENSOR_DEGREE = 10
MAX_SMOLYAK_LEVEL = 3

# Size limits that `check_size` enforces before any array is allocated.
MAX_PARAMS = 200_000  # K N coefficients
MAX_BYTES = 2 * 1024 ** 3  # estimated peak bytes of the largest arrays of a solve

DIVERGED_HINT = ("try damping below 1 or a smaller basis, and check that the state box "
                 "(k_box, loga_box_sd) and the weights are of ordinary size")

ROWS_PER_BATCH = 100_000  # rows of a basis matrix formed at once when evaluating a policy
MATRIX_ENTRIES = 4_000_000  # values of a dense basis matrix formed at once (32 MB)

DEFAULTS: dict[str, Any] = {
    "algorithm": "gssa",
    "basis": "chebyshev",
    "product": "complete",
    "degree": 2,
    "level": 2,
    "n_basis": 5,
    "order": 3,
    "update": "newton",
    "variables": "auto",
    "damping": 1.0,
    "anderson": 5,
    "tol": 1e-9,
    "max_iterations": 5_000,
    "oversampling": 2.0,
    "periods": 150,
    "paths": 20,
    "burn_in": 200,
    "regularisation": "svd",
    "penalty": 1e-8,
    "rule": "default",
    "nodes_per_dim": 5,
    "draws": 200,
}


class LinearPolicy:
    """The policy `k'(x) = Phi(x) theta`: a basis with K functions on 2N states and theta (K, N).

    With variables "logs" the basis takes (log k, log a) and the policy is
    `k'(x) = exp(Phi(log k, log a) theta)`; with "levels" it takes (k, log a) and returns
    `Phi theta` itself. Calling the policy on states (n, 2N) ordered [k, log a] returns
    k' (n, N), forming the basis matrix in batches of at most ROWS_PER_BATCH rows and about
    MATRIX_ENTRIES values, so that memory stays bounded.
    """

    def __init__(self, basis: TensorBasis, theta: np.ndarray, variables: str = "levels"):
        self.basis = basis
        self.theta = np.asarray(theta, dtype=float)
        _check_choice("variables", variables, VARIABLES)
        self.logs = variables == "logs"
        self._complete = _CompleteProducts(basis) if _is_complete(basis) else None

    @property
    def variables(self) -> str:
        """"logs" or "levels": the coordinates of capital in the basis and of k' in the fit."""
        return "logs" if self.logs else "levels"

    @property
    def n_params(self) -> int:
        """Number of coefficients, K N."""
        return int(self.theta.size)

    def matrix(self, states: np.ndarray):
        """Return the (n, K) basis matrix at states (n, 2N): dense, or sparse CSR for splines."""
        if self.logs:
            states = to_basis_coordinates(states, "logs")
        if self._complete is not None:
            return self._complete.matrix(states)
        return self.basis.matrix(states)

    def values(self, fitted: np.ndarray) -> np.ndarray:
        """Return k' (n, N) from `Phi theta` (n, N): its exponential with variables "logs"."""
        fitted = np.asarray(fitted)
        return np.exp(fitted) if self.logs else fitted

    def fit_values(self, k_next: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Return what `Phi theta` should equal to move k' (n, N) to targets (n, N).

        With "logs" this is `log k' + (target - k') / k'`, the same step taken in log k',
        which stays finite when a Newton target is negative far from the solution.
        """
        if not self.logs:
            return targets
        return np.log(k_next) + (targets - k_next) / k_next

    def __call__(self, states: np.ndarray) -> np.ndarray:
        states = np.asarray(states, dtype=float)
        # Blocks of about MATRIX_ENTRIES values: a fresh 1 GB matrix per call (200,000
        # rows at K = 841) cost seconds in page faults alone.
        rows = max(1, min(ROWS_PER_BATCH, MATRIX_ENTRIES // max(1, self.basis.n_params)))
        if states.shape[0] <= rows:
            return self.values(self.matrix(states) @ self.theta)
        return np.vstack([self.values(self.matrix(states[start:start + rows]) @ self.theta)
                          for start in range(0, states.shape[0], rows)])

    def to_parameters(self) -> dict[str, Any]:
        """Return JSON-ready data that `build_policy` turns back into this policy."""
        return {"kind": "multi_country_linear", "basis": _basis_record(self.basis),
                "variables": self.variables, "theta": self.theta.tolist()}


def to_basis_coordinates(states: np.ndarray, variables: str) -> np.ndarray:
    """Return states (n, 2N) ordered [k, log a] with the N capital columns in logs for "logs"."""
    return _map_capital(states, variables, np.log)


def from_basis_coordinates(points: np.ndarray, variables: str) -> np.ndarray:
    """Invert `to_basis_coordinates`: points (n, 2N) with capital in logs back to [k, log a]."""
    return _map_capital(points, variables, np.exp)


def _map_capital(states: np.ndarray, variables: str, function) -> np.ndarray:
    """Return a copy of states (n, 2N) with function applied to the first N columns for "logs"."""
    if variables == "levels":
        return states
    states = np.array(states, dtype=float)
    n = states.shape[1] // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        states[:, :n] = function(states[:, :n])
    return states


class _CompleteProducts:
    """Basis matrix of a complete polynomial basis, multiplying only the non-constant factors.

    Column k is `prod_s F[state[s, k], degree[s, k]]` over D slots, where F contains the
    one-dimensional functions of every state and a slot of degree 0 contributes 1.
    """

    def __init__(self, basis: PolynomialBasis):
        self.basis = basis
        self.degree = basis.total_degree
        indices = basis.multi_indices
        # Slot s of column k contains the s-th state of non-zero degree and that degree.
        self.slot_state = np.zeros((max(self.degree, 1), indices.shape[0]), dtype=np.int64)
        self.slot_degree = np.zeros_like(self.slot_state)
        for column, row in enumerate(indices):
            for slot, state in enumerate(np.flatnonzero(row)):
                self.slot_state[slot, column] = state
                self.slot_degree[slot, column] = row[state]
        self.flat_index = self.slot_state * (self.degree + 1) + self.slot_degree
        self.low, self.width = basis.bounds[:, 0], basis.bounds[:, 1] - basis.bounds[:, 0]

    def factor_table(self, states: np.ndarray) -> np.ndarray:
        """Return the one-dimensional functions of every state, shape (n, 2N (D + 1)).

        Entry `[:, state (D + 1) + i]` is the degree-i function of that state.
        """
        if self.basis.kind == "chebyshev":
            xi = 2 * (states - self.low) / self.width - 1
            columns = [np.ones_like(xi), xi]
            for _ in range(1, self.degree):
                columns.append(2 * xi * columns[-1] - columns[-2])
        else:
            u = (states - self.low) / self.width
            columns = [np.ones_like(u), u]
            for _ in range(1, self.degree):
                columns.append(columns[-1] * u)
        table = np.stack(columns[:self.degree + 1], axis=2)
        return table.reshape(states.shape[0], -1)

    def matrix(self, states: np.ndarray) -> np.ndarray:
        """Return the dense (n, K) matrix at states (n, 2N), in the column order of the basis."""
        table = self.factor_table(np.asarray(states, dtype=float))
        result = np.take(table, self.flat_index[0], axis=1)
        for slot in range(1, self.flat_index.shape[0]):
            result *= np.take(table, self.flat_index[slot], axis=1)
        return result


def complete_indices(n_states: int, degree: int) -> np.ndarray:
    """Return the (K, d) multi-indices of total degree <= degree, K = C(d + degree, degree).

    Rows are in lexicographic order, the order of `solvers.bases.total_degree_indices`,
    but built by recursion over the states, so the (degree + 1)^d grid is never formed.
    """
    if n_states == 1:
        return np.arange(degree + 1)[:, None]
    blocks = []
    for first in range(degree + 1):
        rest = complete_indices(n_states - 1, degree - first)
        blocks.append(np.column_stack([np.full(rest.shape[0], first), rest]))
    return np.vstack(blocks)


def make_basis(model: MultiCountryModel, settings: dict[str, Any]) -> TensorBasis:
    """Return the basis the settings name on the model's state box (see `solve_multicountry`).

    With variables "logs" the capital intervals of the box are taken in logs.
    """
    logs = settings.get("variables", "levels") == "logs"
    bounds, d = (model.log_bounds if logs else model.bounds), model.n_states
    kind, product = settings["basis"], settings["product"]
    if kind == "spline":
        return SplineBasis(bounds, [settings["n_basis"]] * d, order=settings["order"])

    if product == "smolyak":
        return SmolyakBasis(bounds, settings["level"])
    cls = ChebyshevBasis if kind == "chebyshev" else MonomialBasis
    degree = int(settings["degree"])
    if product == "tensor":
        return cls(bounds, [degree] * d, product="tensor")
    # Built as a tensor basis and narrowed to total degree <= D, because the constructor's
    # "complete" product enumerates all (D + 1)^d multi-indices (3^20 at N = 10, D = 2).
    basis = cls(bounds, [degree] * d, product="tensor")
    basis.product = "complete"
    basis.total_degree = degree
    basis.multi_indices = complete_indices(d, degree)
    return basis


def build_policy(parameters: dict[str, Any]) -> LinearPolicy:
    """Rebuild the policy stored by `LinearPolicy.to_parameters` (a Solution's parameters)."""
    record = parameters["basis"]
    bounds = np.asarray(record["bounds"], dtype=float)
    d = bounds.shape[0]
    model_stub = _BoundsOnly(bounds, d)
    basis = make_basis(model_stub, record)
    theta = np.asarray(parameters["theta"], dtype=float)
    if theta.shape[0] != basis.n_params:
        raise ValueError(f"stored theta has {theta.shape[0]} rows but the basis has K = "
                         f"{basis.n_params} functions; the parameters are inconsistent")
    return LinearPolicy(basis, theta, parameters.get("variables", "levels"))


class _BoundsOnly:
    """The two attributes of a model that `make_basis` reads, for rebuilding a stored policy.

    The stored basis record has no `variables`, because its bounds are already in the
    basis coordinates, so `make_basis` never asks this stub for log bounds.
    """

    def __init__(self, bounds: np.ndarray, n_states: int):
        self.bounds = bounds
        self.n_states = n_states


def _basis_record(basis: TensorBasis) -> dict[str, Any]:
    """Return the settings that rebuild basis with `make_basis`, plus its bounds."""
    record: dict[str, Any] = {"bounds": basis.bounds.tolist()}
    if isinstance(basis, SplineBasis):
        record.update(basis="spline", product="tensor", n_basis=basis.sizes[0], order=basis.order)
    elif isinstance(basis, SmolyakBasis):
        record.update(basis="chebyshev", product="smolyak", level=basis.level)
    else:
        record.update(basis=basis.kind, product=basis.product,
                      degree=basis.total_degree if basis.product == "complete" else basis.degrees[0])
    return record


def _is_complete(basis: TensorBasis) -> bool:
    """True for a polynomial basis narrowed to total degree."""
    return isinstance(basis, PolynomialBasis) and basis.product == "complete"


# --- settings and sizes ---------------------------------------------------------------


def resolve_settings(model: MultiCountryModel, settings: dict[str, Any] | None) -> dict[str, Any]:
    """Return DEFAULTS updated by settings, validated; raise ValueError naming a bad entry."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown multi-country settings {unknown}; valid keys are {sorted(DEFAULTS)}")
    resolved = {**DEFAULTS, **settings}

    _check_choice("algorithm", resolved["algorithm"], ALGORITHMS)
    _check_choice("basis", resolved["basis"], BASES)
    _check_choice("product", resolved["product"], PRODUCTS)
    _check_choice("update", resolved["update"], UPDATES)
    _check_choice("variables", resolved["variables"], ("auto",) + VARIABLES)
    if resolved["variables"] == "auto":
        resolved["variables"] = "logs" if model.countries == 1 else "levels"
    _check_choice("regularisation", resolved["regularisation"], REGULARISATIONS)
    _check_choice("rule", resolved["rule"], ("default",) + RULES)
    if resolved["basis"] == "spline":
        if resolved["product"] != "tensor":
            raise ValueError("basis 'spline' takes product 'tensor' only; got product "
                             f"{resolved['product']!r}")
        if resolved["algorithm"] != "fixed_grid":
            raise ValueError("basis 'spline' takes algorithm 'fixed_grid' only, because a spline "
                             "regression on a simulated path leaves knot intervals without points; "
                             f"got algorithm {resolved['algorithm']!r}")

    if resolved["product"] == "smolyak":
        if resolved["basis"] != "chebyshev" or resolved["algorithm"] != "fixed_grid":
            raise ValueError("product 'smolyak' takes basis 'chebyshev' with algorithm 'fixed_grid' "
                             f"only; got basis {resolved['basis']!r}, algorithm {resolved['algorithm']!r}")
        _check_level(resolved["level"], model.n_states)
    else:
        _check_degree(resolved)
    _check_number("damping", resolved["damping"], 0 < resolved["damping"] <= 1, "0 < damping <= 1")
    _check_number("anderson", resolved["anderson"],
                  int(resolved["anderson"]) == resolved["anderson"] and 0 <= resolved["anderson"] <= 50,
                  "an integer from 0 to 50")
    _check_number("tol", resolved["tol"], resolved["tol"] > 0, "tol > 0")
    _check_number("max_iterations", resolved["max_iterations"], resolved["max_iterations"] >= 1,
                  "an integer >= 1")
    _check_number("oversampling", resolved["oversampling"], resolved["oversampling"] >= 1,
                  "oversampling >= 1")
    _check_number("periods", resolved["periods"], resolved["periods"] >= 2, "an integer >= 2")
    _check_number("paths", resolved["paths"], resolved["paths"] >= 1, "an integer >= 1")
    _check_number("burn_in", resolved["burn_in"], resolved["burn_in"] >= 0, "an integer >= 0")
    _check_number("penalty", resolved["penalty"], resolved["penalty"] >= 0, "penalty >= 0")
    _check_number("draws", resolved["draws"], resolved["draws"] >= 1, "an integer >= 1")
    _check_gssa_points(resolved, model.n_states)
    return resolved


def _check_gssa_points(settings: dict[str, Any], d: int) -> None:
    """Raise ValueError when gssa would fit K coefficients per country on fewer than K states."""
    if settings["algorithm"] != "gssa":
        return
    k = _basis_size(settings, d)
    points = int(settings["periods"]) * int(settings["paths"])
    if points < k:
        raise ValueError(f"gssa fits K = {k} coefficients per country on periods x paths = "
                         f"{points} simulated states; it needs at least {k}, so raise periods "
                         f"or paths, or lower the degree")


def estimate_size(model: MultiCountryModel, settings: dict[str, Any] | None) -> tuple[int, int]:
    """Return (n_params, bytes): the K N coefficients and an estimate of peak array bytes.

    The bytes count the basis matrix at the fit points, its factorisation or projector,
    and one batch of next-period rows (fit points times integration nodes). Sparse spline
    matrices count 12 bytes per non-zero, and their LU factors are bounded by a dense
    K by K matrix. It is an estimate for admission control, not a measurement.
    """
    resolved = resolve_settings(model, settings)
    d, n_countries = model.n_states, model.countries
    k = _basis_size(resolved, d)
    n_points = _fit_point_count(resolved, k)
    n_nodes = _rule_node_count(model, resolved)
    next_rows = min(n_points * n_nodes, ROWS_PER_BATCH)

    if resolved["basis"] == "spline":
        per_row = (resolved["order"] + 1) ** d
        n_bytes = 12 * per_row * (n_points + next_rows) + 8 * k * k
    else:
        width = _one_dimensional_count(resolved)
        n_bytes = 8 * (2 * n_points * k + next_rows * k + next_rows * d * width)
    n_bytes += 8 * n_points * n_nodes * (d + 3 * n_countries)
    return k * n_countries, int(n_bytes)


def check_size(model: MultiCountryModel, settings: dict[str, Any], max_params: int | None = None,
               max_bytes: int | None = None) -> None:
    """Raise ValueError when a solve would exceed the limits, naming the figures and the limits.

    max_params and max_bytes default to the module's MAX_PARAMS and MAX_BYTES.
    """
    max_params = MAX_PARAMS if max_params is None else max_params
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    n_params, n_bytes = estimate_size(model, settings)
    if n_params > max_params or n_bytes > max_bytes:
        raise ValueError(
            f"{settings.get('basis', DEFAULTS['basis'])} basis with these settings has "
            f"{n_params} parameters and needs about {n_bytes / 1024 ** 2:.0f} MiB (an estimate) at "
            f"d = {model.n_states}; the limits are {max_params} parameters and "
            f"{max_bytes / 1024 ** 2:.0f} MiB. Use a complete polynomial, a Smolyak grid or a "
            f"lower degree")


def _basis_size(settings: dict[str, Any], d: int) -> int:
    """Return K, the number of basis functions, without building the basis."""
    if settings["basis"] == "spline":
        return int(settings["n_basis"]) ** d
    if settings["product"] == "smolyak":
        return smolyak_size(d, settings["level"])
    degree = int(settings["degree"])
    if settings["product"] == "tensor":
        return (degree + 1) ** d
    return math.comb(d + degree, degree)


def _one_dimensional_count(settings: dict[str, Any]) -> int:
    """Return the one-dimensional functions per state that a polynomial basis evaluates."""
    if settings["product"] == "smolyak":
        level = settings["level"]
        top = max(level) if isinstance(level, (list, tuple)) else level
        return 2 ** top + 1
    return int(settings["degree"]) + 1


def _fit_point_count(settings: dict[str, Any], k: int) -> int:
    """Return the number of fit points: simulated periods, or the fixed grid's size."""
    if settings["algorithm"] == "gssa":
        return int(settings["periods"]) * int(settings["paths"])
    if settings["product"] == "complete":
        return 2 ** math.ceil(math.log2(settings["oversampling"] * k))
    return k


def _rule_node_count(model: MultiCountryModel, settings: dict[str, Any]) -> int:
    """Return the number of nodes J of the solver's integration rule."""
    name = solver_rule_name(model, settings)
    n = model.countries
    return {"gauss_hermite": int(settings["nodes_per_dim"]) ** n, "m1": 2 * n,
            "m2": 2 * n * n + 1, "monte_carlo": int(settings["draws"])}[name]


def solver_rule_name(model: MultiCountryModel, settings: dict[str, Any]) -> str:
    """Return the solver's rule: the setting, or by default a Gauss-Hermite product for N <= 2, else M1."""
    if settings["rule"] != "default":
        return settings["rule"]
    return "gauss_hermite" if model.countries <= 2 else "m1"


def _check_choice(name: str, value, choices: tuple) -> None:
    """Raise ValueError unless value is one of choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_number(name: str, value, valid: bool, valid_range: str) -> None:
    """Raise ValueError unless value is a finite number and valid."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not valid:
        raise ValueError(f"{name} must be {valid_range}; got {value!r}")


def _check_level(level, d: int) -> None:
    """Raise ValueError unless level is an isotropic level or d levels, each from 1 to MAX_SMOLYAK_LEVEL."""
    levels = check_levels(d, level)
    if not all(1 <= mu <= MAX_SMOLYAK_LEVEL for mu in levels):
        raise ValueError(f"Smolyak level must be an integer from 1 to {MAX_SMOLYAK_LEVEL}, or a "
                         f"list of d = {d} such integers (one per state); got {level}")


def _check_degree(settings: dict[str, Any]) -> None:
    """Raise ValueError unless degree (polynomials) or n_basis and order (splines) are in range."""
    if settings["basis"] == "spline":
        order = settings["order"]
        if int(order) != order or not 1 <= order <= 3:
            raise ValueError(f"spline order must be 1, 2 or 3; got {order}")
        if int(settings["n_basis"]) != settings["n_basis"] or settings["n_basis"] < order + 1:
            raise ValueError(f"n_basis must be an integer >= order + 1 = {order + 1}; "
                             f"got {settings['n_basis']}")
        return
    limit = MAX_COMPLETE_DEGREE if settings["product"] == "complete" else MAX_TENSOR_DEGREE
    degree = settings["degree"]
    if int(degree) != degree or not 1 <= degree <= limit:
        raise ValueError(f"degree of a {settings['product']} polynomial must be an integer from 1 "
                         f"to {limit}; got {degree}")


# --- regression ----------------------------------------------------------------------


class Regression:
    """Regularised least squares `theta = argmin ||Phi theta - Y||^2` on normalised regressors.

    The columns of Phi (n, K) other than the constant one are centred and scaled to unit
    standard deviation, and so is Y (n, N). The normalised problem is solved through the
    SVD Z = U S V' of the normalised regressors: "svd" drops the singular values below
    `penalty` times the largest (truncated SVD), "ridge" uses `S / (S^2 + penalty n)`
    (Tikhonov). The intercept is recovered from the means. Without a constant column the
    columns are only scaled to unit root mean square.
    """

    def __init__(self, matrix: np.ndarray, regularisation: str, penalty: float):
        matrix = np.asarray(matrix, dtype=float)
        n = matrix.shape[0]
        spread = matrix.std(axis=0)
        scale = np.max(np.abs(matrix), axis=0)
        constant = np.flatnonzero(spread <= 1e-12 * np.maximum(scale, 1e-300))
        self.constant = int(constant[0]) if constant.size else None
        self.free = np.setdiff1d(np.arange(matrix.shape[1]), constant)
        self.n_columns = matrix.shape[1]

        if self.constant is not None:
            self.mean = matrix[:, self.free].mean(axis=0)
            self.scale = spread[self.free]
            self.constant_value = matrix[0, self.constant]
        else:
            self.mean = np.zeros(self.free.size)
            self.scale = np.sqrt(np.mean(matrix[:, self.free] ** 2, axis=0))
        normalised = (matrix[:, self.free] - self.mean) / self.scale

        u, s, vt = scipy.linalg.svd(normalised, full_matrices=False, lapack_driver="gesdd")
        self.condition_number = float(s[0] / s[-1]) if s[-1] > 0 else math.inf
        if regularisation == "svd":
            inverse = np.where(s >= penalty * s[0], 1 / np.where(s > 0, s, 1), 0.0)
        else:
            inverse = s / (s ** 2 + penalty * n)
        self.kept = int(np.count_nonzero(inverse))
        self.u, self.inverse, self.vt = u, inverse, vt

    def fit(self, values: np.ndarray) -> np.ndarray:
        """Return theta (K, N) for the targets values (n, N)."""
        values = np.asarray(values, dtype=float)
        centre = values.mean(axis=0) if self.constant is not None else np.zeros(values.shape[1])
        beta = self.vt.T @ (self.inverse[:, None] * (self.u.T @ (values - centre)))
        # Constant columns after the first (few fit points) duplicate the intercept and keep 0.
        theta = np.zeros((self.n_columns, values.shape[1]))
        theta[self.free] = beta / self.scale[:, None]
        if self.constant is not None:
            theta[self.constant] = (centre - self.mean @ theta[self.free]) / self.constant_value
        return theta


class SparseSquareSolve:
    """LU factors of a square sparse basis matrix (splines collocated at Greville abscissae)."""

    def __init__(self, matrix: sp.spmatrix):
        self.lu = spla.splu(sp.csc_matrix(matrix))
        self.condition_number = None

    def fit(self, values: np.ndarray) -> np.ndarray:
        """Return theta (K, N) with matrix theta = values (K, N)."""
        return self.lu.solve(np.asarray(values, dtype=float))


class SmolyakSolve:
    """Interpolation on a Smolyak grid: theta from the values at its nodes, by `SmolyakBasis.fit`."""

    def __init__(self, basis: SmolyakBasis):
        self.basis = basis
        self.condition_number = None

    def fit(self, values: np.ndarray) -> np.ndarray:
        """Return theta (K, N) that interpolates values (K, N) at the basis's nodes."""
        return self.basis.fit(np.asarray(values, dtype=float))


class Anderson:
    """Anderson acceleration of the damped fixed-point map x -> g(x) (Walker and Ni 2011).

    With the last m residuals f_i = g(x_i) - x_i, the next iterate is
    `g(x_k) - dG gamma`, where gamma minimises `||f_k - dF gamma||` and dF, dG hold the
    differences of consecutive residuals and map values. m = 0 gives the plain damped
    iteration. When a residual norm exceeds RESTART_RATIO times the smallest so far, the
    history is dropped, which guards against the stagnation Anderson steps can cause.
    """

    RESTART_RATIO = 10.0

    def __init__(self, memory: int):
        self.memory = int(memory)
        self.values: list[np.ndarray] = []
        self.residuals: list[np.ndarray] = []
        self.best = math.inf

    def step(self, x: np.ndarray, gx: np.ndarray) -> np.ndarray:
        """Return the next iterate from x and the damped map value gx (any shape)."""
        residual = (gx - x).ravel()
        norm = float(np.linalg.norm(residual))
        if norm > self.RESTART_RATIO * self.best:
            self.values, self.residuals = [], []
        self.best = min(self.best, norm)
        if self.memory == 0:
            return gx

        self.values.append(gx.ravel().copy())
        self.residuals.append(residual)
        if len(self.values) > self.memory + 1:
            self.values.pop(0)
            self.residuals.pop(0)
        if len(self.values) < 2:
            return gx

        delta_f = np.diff(np.array(self.residuals), axis=0).T
        delta_g = np.diff(np.array(self.values), axis=0).T
        gamma = np.linalg.lstsq(delta_f, residual, rcond=1e-12)[0]
        return (gx.ravel() - delta_g @ gamma).reshape(gx.shape)


# --- the two algorithms --------------------------------------------------------------


def first_guess(model: MultiCountryModel, states: np.ndarray) -> np.ndarray:
    """Return a stable first guess of k' (n, N): `0.9 k_j + 0.1 kss exp(log a_j)`.

    It keeps capital at kss in the steady state and lets it rise with productivity.
    """
    k, loga = model.split(states)
    return 0.9 * k + 0.1 * model.kss * np.exp(loga)


def fixed_grid_points(model: MultiCountryModel, policy: LinearPolicy, settings: dict[str, Any],
                      seed: int) -> np.ndarray:
    """Return the fit points (M, 2N), ordered [k, log a], of the fixed-grid algorithm.

    A complete basis gets the first 2^m points of a scrambled Sobol sequence seeded by
    seed, with 2^m >= oversampling K, mapped into the basis box; other bases their nodes.
    With variables "logs" both are spread evenly in log k.
    """
    basis = policy.basis
    if _is_complete(basis):
        count = _fit_point_count(settings, basis.n_params)
        unit = qmc.Sobol(model.n_states, scramble=True, seed=seed).random_base2(int(math.log2(count)))
        low, high = basis.bounds[:, 0], basis.bounds[:, 1]
        nodes = low + unit * (high - low)
    else:
        nodes = basis.nodes()
    return from_basis_coordinates(nodes, policy.variables)


def euler_targets(model: MultiCountryModel, policy, states: np.ndarray, k_next: np.ndarray,
                  eps: np.ndarray, weights: np.ndarray, update: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the targets for k' (n, N) and the Euler errors e (n, N) at states.

    update "ratio" gives `k' (1 + e)`. update "newton" gives one Newton step on
    `g_j = log(1 + e_j) = 0` in k', with next-period consumption and k'' held at their
    current values (the step of time iteration with the next-period policy fixed, but
    without the slope of c' in k'). Its Jacobian is a diagonal plus a rank-one matrix,

        dg_j / dk'_i = delta_ij (s_j - phi / (k_j m_j)) - m_i / H,   H = sum_i c_i / gamma_i,

    with s_j the return slope of `MultiCountryModel.euler_parts` and m the marginal cost
    of investment, and the Sherman-Morrison formula inverts it at every point at once.
    The rank-one term is the response of today's consumption to total investment, the
    stiff direction that forces a small damping on the ratio update.
    """
    next_states = model.next_states(k_next, model.split(states)[1], eps)
    parts = model.euler_parts(states, k_next, policy(next_states), eps, weights)
    errors = parts["errors"][:, :model.countries]
    if update == "ratio":
        return k_next * (1 + errors), errors

    k = model.split(states)[0]
    m = parts["marginal_cost"]
    diagonal = parts["return_slope"] - model.phi / (k * m)
    inverse_h = 1 / (parts["c"] / model.gammas).sum(axis=1, keepdims=True)
    g = np.log1p(errors)
    # J = D + u m' with D = diag(diagonal), u = -1 / H; J^-1 g by Sherman-Morrison.
    d_inv_g = g / diagonal
    d_inv_u = -inverse_h / diagonal
    correction = d_inv_u * (m * d_inv_g).sum(axis=1, keepdims=True) / (
        1 + (m * d_inv_u).sum(axis=1, keepdims=True))
    return k_next - (d_inv_g - correction), errors


def run_fixed_grid(model: MultiCountryModel, basis: TensorBasis, settings: dict[str, Any],
                   rule: tuple[np.ndarray, np.ndarray], control: SolveControl, seed: int) -> dict:
    """Iterate the damped fixed-point update on a fixed grid; return the policy and diagnostics."""
    eps, weights = rule
    policy = LinearPolicy(basis, np.zeros((basis.n_params, model.countries)), settings["variables"])
    points = fixed_grid_points(model, policy, settings, seed)
    matrix = policy.matrix(points)
    if isinstance(basis, SmolyakBasis):
        solver = SmolyakSolve(basis)
    elif sp.issparse(matrix):
        solver = SparseSquareSolve(matrix)
    else:
        solver = Regression(matrix, settings["regularisation"], settings["penalty"])
    guess = first_guess(model, points)
    policy.theta = solver.fit(policy.fit_values(guess, guess))

    damping, tol = settings["damping"], settings["tol"]
    anderson = Anderson(settings["anderson"])
    iteration, change, converged, errors = 0, math.inf, False, None
    while iteration < settings["max_iterations"]:
        iteration += 1
        k_next = policy.values(matrix @ policy.theta)
        targets, errors = euler_targets(model, policy, points, k_next, eps, weights,
                                        settings["update"])
        _check_finite(targets, iteration)
        fitted = solver.fit(policy.fit_values(k_next, targets))
        change = float(np.max(np.abs(policy.values(matrix @ fitted) - k_next) / k_next))
        damped = (1 - damping) * policy.theta + damping * fitted
        policy.theta = anderson.step(policy.theta, damped)
        control.report(iteration, change)
        if change < tol:
            converged = True
            break
    return {"policy": policy, "iterations": iteration, "converged": converged, "change": change,
            "points": points.shape[0], "condition_number": solver.condition_number,
            "fit_max_abs_error": _max_abs(errors)}


def run_gssa(model: MultiCountryModel, basis: TensorBasis, settings: dict[str, Any],
             rule: tuple[np.ndarray, np.ndarray], control: SolveControl, seed: int) -> dict:
    """Iterate the damped fixed-point update on simulated paths; return the policy and diagnostics.

    `paths` paths of `burn_in + periods` periods start at the steady state and run side by
    side with a fixed shock series, so one policy call per period serves all of them.
    The last `periods` states of each path are the fit points.
    """
    eps, weights = rule
    shocks = _path_shocks(model, settings, seed)
    burn_in = int(settings["burn_in"])
    policy = LinearPolicy(basis, np.zeros((basis.n_params, model.countries)), settings["variables"])

    guess = lambda x: first_guess(model, x)  # noqa: E731
    points = _simulate_checked(model, guess, shocks, burn_in, 0)
    regression = Regression(policy.matrix(points), settings["regularisation"], settings["penalty"])
    k_guess = first_guess(model, points)
    policy.theta = regression.fit(policy.fit_values(k_guess, k_guess))

    damping, tol = settings["damping"], settings["tol"]
    anderson = Anderson(settings["anderson"])
    iteration, change, converged, errors, previous = 0, math.inf, False, None, None
    while iteration < settings["max_iterations"]:
        iteration += 1
        points = _simulate_checked(model, policy, shocks, burn_in, iteration)
        capital = points[:, :model.countries]
        if previous is not None:
            change = float(np.mean(np.abs(capital - previous) / previous)) / damping
            if change < tol:
                converged = True
                control.report(iteration, change)
                break
        previous = capital

        matrix = policy.matrix(points)
        regression = Regression(matrix, settings["regularisation"], settings["penalty"])
        k_next = policy.values(matrix @ policy.theta)
        targets, errors = euler_targets(model, policy, points, k_next, eps, weights, settings["update"])
        _check_finite(targets, iteration)
        damped = (1 - damping) * policy.theta + damping * regression.fit(policy.fit_values(k_next, targets))
        policy.theta = anderson.step(policy.theta, damped)
        control.report(iteration, change if math.isfinite(change) else 1.0)
    return {"policy": policy, "iterations": iteration, "converged": converged, "change": change,
            "points": points.shape[0], "condition_number": regression.condition_number,
            "fit_max_abs_error": _max_abs(errors), "singular_values_kept": regression.kept}


def _path_shocks(model: MultiCountryModel, settings: dict[str, Any], seed: int) -> np.ndarray:
    """Return the fixed innovations of the gssa paths, shape (burn_in + periods, paths, N)."""
    length = int(settings["burn_in"]) + int(settings["periods"])
    n_paths = int(settings["paths"])
    return model.shock_series(length * n_paths, seed).reshape(length, n_paths, model.countries)


def _simulate_checked(model: MultiCountryModel, policy, shocks: np.ndarray, burn_in: int,
                      iteration: int) -> np.ndarray:
    """Return the fit points (periods paths, 2N) after burn_in; raise SolveDiverged if a path fails."""
    paths = model.simulate_paths(policy, shocks)
    if not np.all(np.isfinite(paths)):
        stop = int(np.argmax(~np.all(np.isfinite(paths), axis=(1, 2))))
        raise SolveDiverged(f"a simulated path became infeasible at period {stop} of iteration "
                            f"{iteration}; {DIVERGED_HINT}", iteration, None)
    return paths[burn_in:].reshape(-1, model.n_states)


def _check_finite(targets: np.ndarray, iteration: int) -> None:
    """Raise SolveDiverged when a target for k' is not finite (consumption fell to 0 or below)."""
    if not np.all(np.isfinite(targets)):
        raise SolveDiverged(f"the Euler targets for k' became non-finite at iteration {iteration} "
                            f"(consumption <= 0 at some point); {DIVERGED_HINT}",
                            iteration, None)


def _max_abs(errors: np.ndarray | None) -> float | None:
    """Return max |errors|, or None before the first iteration."""
    return None if errors is None else float(np.max(np.abs(errors)))


# --- entry point ---------------------------------------------------------------------


def solve_multicountry(model: MultiCountryModel, settings: dict[str, Any] | None,
                       control: SolveControl, seed: int = 0) -> Solution:
    """Solve the N-country model; return a Solution whose policy maps (n, 2N) states to k' (n, N).

    settings is a plain dict; a missing key takes its value from DEFAULTS:

    - algorithm: "gssa" (simulated ergodic set, the default) or "fixed_grid".
    - basis: "chebyshev" (default), "monomial" or "spline"; product: "complete" (total
      degree, the default), "tensor" or "smolyak" (Chebyshev on fixed grids only); splines
      are tensor products on fixed grids only.
    - level: Smolyak level 1-3, or a list of 2N levels (anisotropic); default 2.
    - degree: total degree 1-5 (complete) or degree per state 1-10 (tensor); default 2.
    - n_basis, order: B-splines per state (default 5) and their degree (1-3, default 3).
    - variables: "levels" (k' on (k, log a)), "logs" (log k' on (log k, log a)) or
      "auto" (the default): logs at N = 1 and levels above. At N = 1 logs gave the smaller
      path errors for most bases and degrees, and the closed form of delta = 1 is linear
      there. From N = 2 each k' depends on world output, a sum of levels, and levels gave
      the smaller errors for complete and Smolyak polynomials.
    - update: "newton" (default) or "ratio", the target of each step (`euler_targets`).
    - damping: share of the way theta moves to the fitted coefficients, (0, 1], default 1.
      The "ratio" update needs about 0.1 at the default calibration, because its largest
      eigenvalues lie far below -1; damping 0.2 diverged at N = 2.
    - anderson: memory m of the Anderson acceleration of the damped update, 0 to switch
      it off, default 5.
    - tol: convergence threshold of the change measure divided by damping, default 1e-9.
    - max_iterations: default 5000.
    - oversampling: fixed-grid points per coefficient of a complete basis (rounded up to a
      power of two), default 2.
    - periods, paths, burn_in: gssa simulates `paths` paths side by side from the steady
      state and fits on the last `periods` of each after `burn_in` (default 150, 20, 200).
    - regularisation: "svd" (truncated SVD, default) or "ridge"; penalty: the relative
      singular-value cut-off of "svd" or the ridge parameter per observation, default 1e-8.
    - rule: "default" (a Gauss-Hermite product for N <= 2, M1 above), "gauss_hermite",
      "m1", "m2" or "monte_carlo"; nodes_per_dim: Gauss-Hermite nodes per shock
      (default 5); draws: Monte Carlo draws (default 200, seeded by seed).

    seed fixes the Sobol scrambling of the fixed grid, the shocks of the gssa path and the
    Monte Carlo draws. Raises ValueError for invalid settings or a solve above the size
    limits (`check_size`), and the SolveControl's exceptions on time-out, cancellation or
    divergence.
    """
    resolved = resolve_settings(model, settings)
    check_size(model, resolved)
    basis = make_basis(model, resolved)
    rule_name = solver_rule_name(model, resolved)
    rule = make_rule(rule_name, model.shock_cov, resolved["nodes_per_dim"], resolved["draws"], seed)

    started = time.perf_counter()
    run = run_gssa if resolved["algorithm"] == "gssa" else run_fixed_grid
    # Small dense problems gain nothing from BLAS threads (see solvers.collocation).
    threads = 1 if basis.n_params <= 2_000 else None
    with np.errstate(all="ignore"), threadpool_limits(limits=threads, user_api="blas"):
        result = run(model, basis, resolved, rule, control, seed)
    logger.info("multi-country N=%d %s %s degree %s: %d iterations, change %.2e, converged %s, %.2f s",
                model.countries, resolved["algorithm"], resolved["basis"], resolved["degree"],
                result["iterations"], result["change"], result["converged"],
                time.perf_counter() - started)

    policy = result["policy"]
    parameters = {**policy.to_parameters(), "settings": resolved}
    extra = {"algorithm": resolved["algorithm"], "variables": resolved["variables"], "rule": rule_name,
             "rule_nodes": int(rule[1].size), "fit_points": result["points"], "final_change": result["change"],
             "fit_max_abs_euler_error": result["fit_max_abs_error"], "basis": basis.describe()}
    if "singular_values_kept" in result:
        extra["singular_values_kept"] = result["singular_values_kept"]
    return Solution(policy=policy, n_params=policy.n_params,
                    n_conditions=result["points"] * model.countries,
                    iterations=result["iterations"], converged=result["converged"],
                    parameters=parameters, condition_number=result["condition_number"], extra=extra)
