"""Result type of every solver: a fitted policy and the facts of the solve."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from solvers.growth import Policy


@dataclass
class Solution:
    """A fitted consumption policy and the facts of the solve that produced it.

    policy: callable c(k, log z) on numpy float64 arrays of one shape.
    n_params: K, the number of coefficients or network weights.
    n_conditions: M, the number of residual conditions per step (nodes, or batch size).
    parameters: JSON-ready data from which the policy can be rebuilt (coefficients or
    network weights, with the basis settings and domain).
    """

    policy: Policy
    n_params: int
    n_conditions: int
    iterations: int
    converged: bool
    parameters: dict[str, Any]
    condition_number: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
