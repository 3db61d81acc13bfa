"""Integration rules for expectations over normal innovations."""

from __future__ import annotations

import numpy as np
from numpy.polynomial.hermite_e import hermegauss


def gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return nodes and weights of the n-point Gauss-Hermite rule for eps ~ N(0, 1).

    `E[f(eps)] ~ sum_j w_j f(x_j)`, exact for polynomials of degree up to 2n - 1.
    Nodes and weights have shape (n,); the weights sum to 1.
    """
    if not 1 <= n <= 200:
        raise ValueError(f"Gauss-Hermite rule needs 1 <= n <= 200 nodes; got n = {n}")
    nodes, weights = hermegauss(n)
    return nodes, weights / weights.sum()
