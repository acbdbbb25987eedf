"""One result protocol for every call that can fail: :class:`Status`, :class:`StatusResult`.

Every result that can fail (a solve's ``Solution``, a constrained layer's output, the
diagnostics of ``sqrtm_ex`` / ``msign_ex``, a ``MetaFactorization``) has a ``status`` tensor
of :class:`Status` codes, one per batch element, and answers "did it fail?" the same way:
``converged`` / ``all_converged``, ``failures()`` — a list of ``(batch index, Status)``
pairs —, ``describe()`` — one line per failed element — and ``raise_if_failed(name)``, which
raises a :class:`ResultError` (the ``throw=True`` of the calls that offer it).
"""

from __future__ import annotations

import enum

import torch


class Status(enum.IntEnum):
    """Outcome of one batch element of a computation that can fail; ``message`` says why.

    - ``CONVERGED``: every test of the computation held (an iteration met its tolerance, an
      identity holds to its precision) — not merely that it stopped.
    - ``MAX_STEPS``: the step budget (``max_steps``, or a fixed ``steps``) ran out before
      the tolerance was met.
    - ``DIVERGED``: the solver can make no further progress (Levenberg–Marquardt damping
      exceeded its bound or its steps keep failing without measurable progress — a kink or
      cusp of the residual, or the rounding floor —, a line search failed, a singular linear
      system, or the iterate grew without bound).
    - ``NONFINITE``: a residual, Jacobian, iterate or result became NaN or ±inf.
    - ``ILL_CONDITIONED``: the input is too ill-conditioned (or rank deficient) for the
      result to be determined to working precision: κ(A)·eps ≥ 1 for an inverse square root,
      singular values below the band a Newton–Schulz schedule lifts, a projector identity
      that fails by more than √eps, a least-squares iterate that keeps moving along a null
      space of J the working precision cannot resolve (the residual settled, the solution
      not). A deliberate fallback that is exact on a subspace (a
      truncated pseudoinverse) is not a failure: it is a flag on the result instead.

    Example::

        >>> from diffnum.solve import Status
        >>> [s.name for s in Status]
        ['CONVERGED', 'MAX_STEPS', 'DIVERGED', 'NONFINITE', 'ILL_CONDITIONED']
        >>> Status.NONFINITE.message
        'produced non-finite values'
    """

    CONVERGED = 0
    MAX_STEPS = 1
    DIVERGED = 2
    NONFINITE = 3
    ILL_CONDITIONED = 4

    @property
    def message(self) -> str:
        """Why an element has this status, in a few words."""
        return _MESSAGES[self]


_MESSAGES = {
    Status.CONVERGED: "met every test",
    Status.MAX_STEPS: "used up its steps (max_steps or steps) without meeting the tolerance",
    Status.DIVERGED: ("diverged (no step reduced the residual measurably — a kink, a cusp or "
                      "the rounding floor — or a singular system)"),
    Status.NONFINITE: "produced non-finite values",
    Status.ILL_CONDITIONED: ("the input is too ill-conditioned or rank deficient for the "
                             "result to hold to working precision"),
}


class ResultError(RuntimeError):
    """Raised by ``raise_if_failed`` (and by ``throw=True``) when a batch element failed.

    The message names the call, how many elements failed, and one line per failed element
    (the result's ``describe()``, at most 10 lines). ``diffnum.solve.SolveError`` is the
    subclass the solves raise, so ``except ResultError`` catches every failure.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> from diffnum import ResultError
        >>> A = torch.diag(torch.logspace(0, -12, 4, dtype=torch.float64))
        >>> try:
        ...     df.sqrtm_ex(A, "taylor", steps=1, throw=True)
        ... except ResultError as error:
        ...     print(str(error).splitlines()[0])
        sqrtm_ex: 1 of 1 batch element(s) failed:
    """


class StatusResult:
    """Mixin of the result dataclasses: ``converged``, ``all_converged``, ``failures()``,
    ``describe()`` and ``raise_if_failed()`` from a ``status`` tensor of :class:`Status`
    codes (shape ``batch``).

    A class names its per-element diagnostics in ``_DETAILS`` (attributes holding tensors
    of shape ``batch``, shown by ``describe()`` after the status) and the exception
    ``raise_if_failed`` raises in ``_ERROR``.

    Example::

        >>> import torch
        >>> from diffnum.solve import least_squares
        >>> sol = least_squares(lambda y: y - 1, torch.zeros(2, 1, dtype=torch.float64))
        >>> sol.failures(), sol.describe(), sol.all_converged
        ([], '', True)
    """

    __slots__ = ()
    _DETAILS: tuple[str, ...] = ()
    _ERROR: type[ResultError] = ResultError

    status: torch.Tensor

    @property
    def converged(self) -> torch.Tensor:
        """Boolean tensor of shape ``batch``: ``status == Status.CONVERGED``."""
        return self.status == int(Status.CONVERGED)

    @property
    def all_converged(self) -> bool:
        """True when every batch element converged."""
        return bool(self.converged.all())

    def failures(self) -> list[tuple[tuple[int, ...], Status]]:
        """The batch index and :class:`Status` of every element that did not converge, in
        row-major order (``[]`` when all converged)."""
        bad = (~self.converged).nonzero().tolist()
        return [(tuple(i), Status(int(self.status[tuple(i)]))) for i in bad]

    def _detail(self, index: tuple[int, ...]) -> str:
        parts = []
        for name in self._DETAILS:
            value = getattr(self, name)
            if value is None:
                continue
            x = value[index]
            shown = f"{float(x):.3e}" if x.is_floating_point() else str(int(x))
            parts.append(f"{name}={shown}")
        return ", ".join(parts)

    def describe(self) -> str:
        """One line per failed element saying which one and why, then its diagnostics
        (empty if all converged)."""
        lines = []
        for index, status in self.failures():
            where = index if index else "(unbatched)"
            detail = self._detail(index)
            lines.append(f"batch element {where}: {status.name} — {status.message}"
                         + (f"; {detail}" if detail else ""))
        return "\n".join(lines)

    def raise_if_failed(self, name: str | None = None) -> None:
        """Raise ``_ERROR`` (a :class:`ResultError`) naming each failed element; ``name``
        (default: the class name) heads the message. Does nothing if all converged."""
        if self.all_converged:
            return
        failed = self.failures()
        shown = self.describe().splitlines()
        more = f"\n... and {len(shown) - 10} more" if len(shown) > 10 else ""
        raise self._ERROR(
            f"{name or type(self).__name__}: {len(failed)} of {self.status.numel()} batch "
            f"element(s) failed:\n" + "\n".join(shown[:10]) + more
        )


def worst_status(*conditions: tuple[torch.Tensor, Status]) -> torch.Tensor:
    """int64 status tensor from ``(mask, status)`` pairs, the first matching pair winning;
    CONVERGED where no mask holds. Masks broadcast to one batch shape."""
    shape = torch.broadcast_shapes(*(mask.shape for mask, _ in conditions))
    device = conditions[0][0].device
    out = torch.full(shape, int(Status.CONVERGED), dtype=torch.int64, device=device)
    for mask, status in reversed(conditions):
        out = torch.where(mask, int(status), out)
    return out
