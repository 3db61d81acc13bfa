"""Progress reporting, deadlines and cancellation shared by every solver.

A solver calls `SolveControl.report` once per iteration. The control records the
convergence history and forwards progress to the caller that runs the job (the CLI, or
a worker writing to Redis). It raises when the job's time is up or it has been
cancelled, so every solver stops the same way without knowing who runs it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

MAX_HISTORY = 2_000  # history rows kept; later rows thin out so long runs stay small


class SolveStopped(Exception):
    """Base of the ways a solve ends early; carries how far it got."""

    def __init__(self, message: str, iteration: int, residual: float | None):
        super().__init__(message)
        self.iteration = iteration
        self.residual = residual


class SolveTimedOut(SolveStopped):
    """The job's time limit passed during the solve."""


class SolveCancelled(SolveStopped):
    """The job was cancelled while it ran."""


class SolveDiverged(SolveStopped):
    """The iterate became non-finite or infeasible."""


@dataclass
class SolveControl:
    """Per-job hooks: a progress callback, a deadline and a cancellation check.

    on_progress(iteration, residual, elapsed_s) may be called often; the caller throttles.
    on_phase(name) is called when the job moves to a new phase, such as evaluation.
    deadline is a `time.monotonic()` value; should_cancel() returns True to stop.
    """

    on_progress: Callable[[int, float, float], None] | None = None
    on_phase: Callable[[str], None] | None = None
    deadline: float | None = None
    should_cancel: Callable[[], bool] | None = None
    started: float = field(default_factory=time.monotonic)
    history: list[tuple[int, float, float]] = field(default_factory=list)
    _stride: int = 1

    last_iteration: int = 0
    last_residual: float | None = None
    current_phase: str = "solving"

    def report(self, iteration: int, residual: float) -> None:
        """Record one iteration, then stop the solve if it diverged, timed out or was cancelled."""
        elapsed = time.monotonic() - self.started
        self._record(iteration, residual, elapsed)
        self.last_iteration, self.last_residual = iteration, float(residual)
        if self.on_progress is not None:
            self.on_progress(iteration, residual, elapsed)
        if not math.isfinite(residual):
            raise SolveDiverged(
                f"residual became {residual} at iteration {iteration}", iteration, residual)
        self.check()

    def check(self) -> None:
        """Stop the solve if its time is up or it was cancelled; for long steps between reports."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SolveTimedOut(f"time limit reached at iteration {self.last_iteration}",
                                self.last_iteration, self.last_residual)
        if self.should_cancel is not None and self.should_cancel():
            raise SolveCancelled(f"cancelled at iteration {self.last_iteration}",
                                 self.last_iteration, self.last_residual)

    def phase(self, name: str) -> None:
        """Announce a new phase of the job to the caller's phase callback."""
        self.current_phase = name
        if self.on_phase is not None:
            self.on_phase(name)

    def _record(self, iteration: int, residual: float, elapsed: float) -> None:
        """Append to the history, halving its density whenever it fills up."""
        if iteration % self._stride:
            return
        self.history.append((iteration, float(residual), round(elapsed, 6)))
        if len(self.history) >= MAX_HISTORY:
            self.history = self.history[::2]
            self._stride *= 2
