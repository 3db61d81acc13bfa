"""Integration rules for expectations over correlated normal shocks eps ~ N(0, Sigma).

Every rule returns nodes `eps` of shape (J, N) and weights of shape (J,) that sum to 1,
so that `E[f(eps)] ~ sum_j weights[j] f(eps[j])`. The rules integrate over a standard
normal z ~ N(0, I_N) and map the nodes through the lower Cholesky factor L of the
covariance, `eps = L z` (Sigma = L L'), so each rule's exactness in z carries over to
eps for polynomials of the same degree.

- `gauss_hermite_product(cov, n)`: the tensor product of n-point Gauss-Hermite rules,
  J = n^N, exact for polynomials of degree up to 2n - 1 in each variable.
- `monomial_m1(cov)`: J = 2N nodes `z = +-sqrt(N) e_h`, weights 1 / (2N), exact for
  polynomials of total degree up to 3.
- `monomial_m2(cov)`: J = 2N^2 + 1 nodes, exact for polynomials of total degree up to 5.
  The weights of the nodes `+-sqrt(N + 2) e_h` are negative when N > 4.
- `monte_carlo(cov, n, seed)`: n pseudo-random draws with equal weights.

The monomial rules are the ones of Judd, Maliar and Maliar (2011), "Numerically stable
and accurate stochastic simulation approaches for solving dynamic economic models",
Quantitative Economics 2(2), built from Stroud's degree-3 and degree-5 formulas.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

MAX_PRODUCT_NODES = 1_000_000
RULES = ("gauss_hermite", "m1", "m2", "monte_carlo")


def cholesky_factor(cov) -> np.ndarray:
    """Return the lower Cholesky factor L (N, N) of a symmetric positive definite covariance."""
    cov = np.atleast_2d(np.asarray(cov, dtype=float))
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise ValueError(f"covariance must be a square (N, N) matrix with N >= 1; got shape {cov.shape}")
    if not np.allclose(cov, cov.T, rtol=1e-12, atol=0.0):
        raise ValueError("covariance must be symmetric; got a matrix whose largest "
                         f"asymmetry is {np.max(np.abs(cov - cov.T)):.3e}")
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as error:
        raise ValueError(f"covariance must be positive definite; its smallest eigenvalue is "
                         f"{np.linalg.eigvalsh(cov).min():.3e}") from error


def gauss_hermite_product(cov, nodes_per_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the tensor-product Gauss-Hermite rule: eps (n^N, N) and weights (n^N,).

    Raises when n^N exceeds MAX_PRODUCT_NODES, because the rule grows exponentially in N.
    """
    factor = cholesky_factor(cov)
    n_shocks = factor.shape[0]
    if int(nodes_per_dim) != nodes_per_dim or not 1 <= nodes_per_dim <= 50:
        raise ValueError(f"nodes_per_dim must be an integer from 1 to 50; got {nodes_per_dim}")
    nodes_per_dim = int(nodes_per_dim)
    if nodes_per_dim ** n_shocks > MAX_PRODUCT_NODES:
        raise ValueError(f"a Gauss-Hermite product rule with {nodes_per_dim} nodes per shock in "
                         f"N = {n_shocks} shocks has {nodes_per_dim ** n_shocks:.3e} nodes, above the "
                         f"limit {MAX_PRODUCT_NODES}; use monomial_m1 or monomial_m2")

    z_1d, w_1d = hermegauss(nodes_per_dim)
    w_1d = w_1d / w_1d.sum()
    grids = np.meshgrid(*[z_1d] * n_shocks, indexing="ij")
    z = np.stack([g.ravel() for g in grids], axis=1)
    weight_grids = np.meshgrid(*[w_1d] * n_shocks, indexing="ij")
    weights = np.prod(np.stack([g.ravel() for g in weight_grids], axis=1), axis=1)
    return z @ factor.T, weights


def monomial_m1(cov) -> tuple[np.ndarray, np.ndarray]:
    """Return the 2N-node monomial rule M1: eps (2N, N) and weights (2N,), degree 3."""
    factor = cholesky_factor(cov)
    n_shocks = factor.shape[0]
    unit = np.eye(n_shocks)
    z = np.sqrt(n_shocks) * np.vstack([unit, -unit])
    weights = np.full(2 * n_shocks, 1.0 / (2 * n_shocks))
    return z @ factor.T, weights


def monomial_m2(cov) -> tuple[np.ndarray, np.ndarray]:
    """Return the (2N^2 + 1)-node monomial rule M2: eps (2N^2 + 1, N) and weights, degree 5.

    Nodes in z and their weights:

    - the origin, weight 2 / (N + 2);
    - `+-sqrt(N + 2) e_h`, h = 1..N, weight (4 - N) / (2 (N + 2)^2) each;
    - `sqrt((N + 2) / 2) (+-e_h +- e_s)`, h < s, weight 1 / (N + 2)^2 each.
    """
    factor = cholesky_factor(cov)
    n = factor.shape[0]
    unit = np.eye(n)

    axis_nodes = np.sqrt(n + 2.0) * np.vstack([unit, -unit])
    pairs = list(itertools.combinations(range(n), 2))
    pair_nodes = np.zeros((4 * len(pairs), n))
    for row, (h, s) in enumerate(pairs):
        for sign_index, (sign_h, sign_s) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
            pair_nodes[4 * row + sign_index, h] = sign_h
            pair_nodes[4 * row + sign_index, s] = sign_s
    pair_nodes *= np.sqrt((n + 2.0) / 2.0)

    z = np.vstack([np.zeros((1, n)), axis_nodes, pair_nodes])
    weights = np.concatenate([
        [2.0 / (n + 2)],
        np.full(2 * n, (4.0 - n) / (2.0 * (n + 2) ** 2)),
        np.full(pair_nodes.shape[0], 1.0 / (n + 2) ** 2),
    ])
    return z @ factor.T, weights


def monte_carlo(cov, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return n draws eps (n, N) from N(0, cov) with a numpy Generator seeded by seed, weights 1/n."""
    factor = cholesky_factor(cov)
    if int(n) != n or n < 1:
        raise ValueError(f"a Monte Carlo rule needs n >= 1 draws; got n = {n}")
    z = np.random.default_rng(seed).standard_normal((int(n), factor.shape[0]))
    return z @ factor.T, np.full(int(n), 1.0 / int(n))


def make_rule(name: str, cov, nodes_per_dim: int = 5, draws: int = 1_000,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return the rule called name ("gauss_hermite", "m1", "m2" or "monte_carlo") for cov.

    nodes_per_dim applies to "gauss_hermite" only, draws and seed to "monte_carlo" only.
    """
    if name == "gauss_hermite":
        return gauss_hermite_product(cov, nodes_per_dim)
    if name == "m1":
        return monomial_m1(cov)
    if name == "m2":
        return monomial_m2(cov)
    if name == "monte_carlo":
        return monte_carlo(cov, draws, seed)
    raise ValueError(f"integration rule must be one of {', '.join(map(repr, RULES))}; got {name!r}")


def rule_degree(name: str, n_shocks: int, nodes_per_dim: int = 5) -> int | None:
    """Return the total polynomial degree up to which a rule is exact, or None for Monte Carlo."""
    if name == "gauss_hermite":
        return 2 * int(nodes_per_dim) - 1
    if name == "m1":
        return 3
    if name == "m2":
        return 5
    if name == "monte_carlo":
        return None
    raise ValueError(f"integration rule must be one of {', '.join(map(repr, RULES))}; got {name!r}")
