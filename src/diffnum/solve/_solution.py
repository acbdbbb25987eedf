"""Result of every solve: :class:`Solution`, per-element :class:`Status`, :class:`SolveError`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch

from diffnum._core.summary import one_line


class Status(enum.IntEnum):
    """Outcome of one batch element of a solve, stored as an integer tensor in ``Solution.status``.

    - ``CONVERGED``: the termination test of the solver held.
    - ``MAX_STEPS``: ``max_steps`` iterations ran without the test holding.
    - ``DIVERGED``: the solver can make no further progress (Levenberg–Marquardt damping
      exceeded its bound, a line search failed, a singular linear system, or the iterate grew
      without bound).
    - ``NONFINITE``: a residual, Jacobian or iterate became NaN or ±inf.

    Example::

        >>> from diffnum.solve import Status
        >>> [s.name for s in Status]
        ['CONVERGED', 'MAX_STEPS', 'DIVERGED', 'NONFINITE']
    """

    CONVERGED = 0
    MAX_STEPS = 1
    DIVERGED = 2
    NONFINITE = 3


# Status value of an element that is still iterating (never returned to the user).
RUNNING = -1

_WHY = {
    Status.MAX_STEPS: "reached max_steps without meeting the tolerances",
    Status.DIVERGED: "diverged (no step reduced the residual, or a singular system)",
    Status.NONFINITE: "produced non-finite values",
}


class SolveError(RuntimeError):
    """Raised by a solve with ``throw=True`` when any batch element did not converge.

    Example::

        >>> import torch
        >>> from diffnum.solve import SolveError, least_squares
        >>> try:
        ...     least_squares(lambda y: y - 1, torch.zeros(1, dtype=torch.float64), max_steps=1,
        ...                   throw=True)
        ... except SolveError as error:
        ...     print(str(error).splitlines()[0])
        least_squares: 1 of 1 batch element(s) failed:
    """


@dataclass(frozen=True)
class Solution:
    """Result of :func:`least_squares`, :func:`root`, :func:`fixed_point` or :func:`linear_solve`.

    Attributes:
        value: the solution y*, shape ``(*batch, n)`` (differentiable through the chosen adjoint).
        status: int64 tensor of shape ``batch`` with :class:`Status` codes, one per element.
        steps: int64 tensor of shape ``batch``: iterations each element took.
        residual_norm: tensor of shape ``batch``: ‖r(y*)‖₂ (least squares: residual vector;
            root: fn(y*); fixed point: fn(y*) − y*; linear: b − A y*).
        stats: solver-specific counters (function and Jacobian evaluations, ...).

    Example::

        >>> import torch
        >>> from diffnum.solve import least_squares
        >>> target = torch.tensor([[1.0], [float("nan")]], dtype=torch.float64)
        >>> sol = least_squares(lambda y: y - target, torch.zeros(2, 1, dtype=torch.float64))
        >>> sol.converged.tolist(), sol.failures()  # one failed element, the other unharmed
        ([True, False], [((1,), <Status.NONFINITE: 3>)])
    """

    value: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    residual_norm: torch.Tensor
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.value, torch.Tensor) or self.value.ndim == 0:
            raise TypeError(f"value must be a tensor (*batch, n), got {_describe(self.value)}")
        batch = tuple(self.value.shape[:-1])
        for name in ("status", "steps", "residual_norm"):
            x = getattr(self, name)
            integer = name != "residual_norm"
            if not isinstance(x, torch.Tensor) or x.is_complex() or x.dtype == torch.bool or (
                    integer == x.is_floating_point()):
                need = "an integer tensor" if integer else "a real floating tensor"
                raise TypeError(f"{name} must be {need} of shape batch = {batch}, "
                                f"got {_describe(x)}")
            if tuple(x.shape) != batch:
                raise ValueError(f"{name} must have the batch shape {batch} of value "
                                 f"{tuple(self.value.shape)}, got {tuple(x.shape)}")
        if not isinstance(self.stats, dict):
            raise TypeError(f"stats must be a dict, got {type(self.stats).__name__}")

    def __repr__(self) -> str:
        ok = int(self.converged.sum())
        worst = (f"{float(self.residual_norm.max()):.3g}" if self.residual_norm.numel()
                 else "—")
        most = int(self.steps.max()) if self.steps.numel() else 0
        return one_line(self, f"converged {ok}/{self.status.numel()}",
                        f"max steps {most}", f"max residual_norm {worst}")

    @property
    def converged(self) -> torch.Tensor:
        """Boolean tensor of shape ``batch``: ``status == Status.CONVERGED``."""
        return self.status == int(Status.CONVERGED)

    @property
    def all_converged(self) -> bool:
        """True when every batch element converged."""
        return bool(self.converged.all())

    def failures(self) -> list[tuple[tuple[int, ...], Status]]:
        """The batch index and :class:`Status` of every element that did not converge."""
        bad = (~self.converged).nonzero().tolist()
        return [(tuple(i), Status(int(self.status[tuple(i)]))) for i in bad]

    def describe(self) -> str:
        """One line per failed element saying which one and why (empty if all converged)."""
        lines = []
        for index, status in self.failures():
            where = index if index else "(unbatched)"
            lines.append(
                f"batch element {where}: {status.name} — {_WHY[status]}; "
                f"steps={int(self.steps[index])}, "
                f"residual_norm={float(self.residual_norm[index]):.3e}"
            )
        return "\n".join(lines)


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def raise_if_failed(name: str, solution: Solution) -> None:
    """Raise :class:`SolveError` naming each failed element of ``solution`` (``throw=True``)."""
    if solution.all_converged:
        return
    failed = solution.failures()
    shown = solution.describe().splitlines()
    more = f"\n... and {len(shown) - 10} more" if len(shown) > 10 else ""
    raise SolveError(
        f"{name}: {len(failed)} of {solution.status.numel()} batch element(s) failed:\n"
        + "\n".join(shown[:10]) + more
    )
