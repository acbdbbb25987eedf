"""Result of every solve: :class:`Solution`, per-element :class:`Status`, :class:`SolveError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from diffnum._core.status import ResultError, Status, StatusResult
from diffnum._core.summary import one_line

__all__ = ["RUNNING", "Solution", "SolveError", "Status", "raise_if_failed"]


# Status value of an element that is still iterating (never returned to the user).
RUNNING = -1


class SolveError(ResultError):
    """Raised by a solve with ``throw=True`` when any batch element did not converge (a
    :class:`~diffnum.ResultError`, like every failure the result protocol raises).

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
class Solution(StatusResult):
    """Result of :func:`least_squares`, :func:`root`, :func:`fixed_point` or :func:`linear_solve`.

    Attributes:
        value: the solution y*, shape ``(*batch, n)`` (differentiable through the chosen adjoint).
        status: int64 tensor of shape ``batch`` with :class:`Status` codes, one per element.
        steps: int64 tensor of shape ``batch``: iterations each element took.
        residual_norm: tensor of shape ``batch``: ‖r(y*)‖₂ (least squares: residual vector;
            root: fn(y*); fixed point: fn(y*) − y*; linear: b − A y*).
        stats: solver-specific counters (function and Jacobian evaluations, ...).

    Did it fail? As every result of the library (:class:`~diffnum.Status` protocol):
    ``converged``, ``all_converged``, ``failures()`` (``(batch index, Status)`` pairs),
    ``describe()`` and ``raise_if_failed()``.

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

    _DETAILS = ("steps", "residual_norm")  # shown by describe()
    _ERROR = SolveError  # raised by raise_if_failed()

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


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def raise_if_failed(name: str, solution: Solution) -> None:
    """Raise :class:`SolveError` naming each failed element of ``solution`` (``throw=True``)."""
    solution.raise_if_failed(name)
