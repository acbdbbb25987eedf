"""The one driver of the nonlinear solves, and the front end they share.

A solver object owns its iteration through three methods (as optimistix's solvers do):

- ``init(problem, y0) -> state``: the state at the starting point, whose per-element
  ``status`` is ``RUNNING`` (-1) for elements still to iterate;
- ``step(state) -> state``: one iteration of every element still running (finished elements
  do not change);
- ``terminate(state) -> (done, status)``: per element, whether it has finished and its
  :class:`Status` (``RUNNING`` while not done);

and ``postprocess(state) -> Outcome`` reads the result (value, iterations per element,
‖residual‖ and counters) off the final state. :func:`iterate` runs any such object for at
most ``max_steps`` steps and marks the elements still running ``MAX_STEPS``; the front end
(:func:`check_call`, :func:`start_point`, :func:`run`) does what every solve shares:
argument checks, the start-point evaluation, the choice of adjoint (the iteration unrolled
under autograd, or run without gradients and the implicit derivative attached afterwards),
the :class:`Solution` and ``throw``.

A :class:`Problem` is what a solver iterates on: ``fn`` and ``jacobian`` with ``args``
bound, and ``fn`` already evaluated at the starting point. :func:`solve_square` is the whole
front end of the square solves (``root`` and ``fixed_point``), whose ``fn`` maps y to a
tensor of its own shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch

from diffnum._core.validation import check_flag
from diffnum.solve._adjoint import (
    ImplicitAdjoint,
    UnrollAdjoint,
    attach_implicit,
    check_adjoint,
    reevaluate,
)
from diffnum.solve._common import (
    as_args,
    as_initial_value,
    check_max_steps,
    evaluate_checked,
    make_jacobian_fn,
    resolve_jacobian,
)
from diffnum.solve._solution import RUNNING, Solution, Status, raise_if_failed

logger = logging.getLogger("diffnum.solve")


@dataclass
class Problem:
    """A problem with its arguments bound: ``fn(y)`` is the user's ``fn(y, *args)`` and
    ``jacobian(y)`` its Jacobian ``(*batch, m, n)``; ``start`` is ``fn(y0)``, evaluated once
    by the front end (and recorded by autograd when the iteration is unrolled)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    jacobian: Callable[[torch.Tensor], torch.Tensor] | None
    start: torch.Tensor | None


class Outcome(NamedTuple):
    """What a solver reports from its final state (see :meth:`IterativeSolver.postprocess`)."""

    value: torch.Tensor
    steps: torch.Tensor
    residual_norm: torch.Tensor
    stats: dict[str, Any]


class IterativeSolver(Protocol):
    """The interface :func:`iterate` drives (the built-in solvers and custom ones)."""

    def init(self, problem: Problem, y0: torch.Tensor) -> Any: ...

    def step(self, state: Any) -> Any: ...

    def terminate(self, state: Any) -> tuple[torch.Tensor, torch.Tensor]: ...

    def postprocess(self, state: Any) -> Outcome: ...


def is_solver(obj: object) -> bool:
    """Whether ``obj`` has the methods :func:`iterate` calls."""
    return all(callable(getattr(obj, name, None))
               for name in ("init", "step", "terminate", "postprocess"))


def iterate(solver: IterativeSolver, problem: Problem, y0: torch.Tensor,
            max_steps: int) -> tuple[Any, torch.Tensor]:
    """Run ``solver`` from ``y0`` until every element is done or ``max_steps`` steps have
    run; returns the final state and the status per element (``MAX_STEPS`` for elements
    still running)."""
    state = solver.init(problem, y0)
    for _ in range(max_steps):
        done, _ = solver.terminate(state)
        if bool(done.all()):
            break
        state = solver.step(state)
    done, status = solver.terminate(state)
    return state, torch.where(done, status, int(Status.MAX_STEPS))


def check_call(name: str, fn: Any, y0: Any, args: Any, solver: Any, default: Callable[[], Any],
               kinds: tuple[type, ...], adjoint: Any, max_steps: int, throw: bool
               ) -> tuple[Any, ImplicitAdjoint | UnrollAdjoint, torch.Tensor, tuple]:
    """The checks every nonlinear solve makes; returns (solver, adjoint, y0, args) with the
    defaults filled in, ``y0`` as a fresh floating tensor and ``args`` as a tuple."""
    solver = default() if solver is None else solver
    # A built-in solver of another problem (Newton for fixed_point) is refused; any other
    # object with the driver's methods is a custom solver for this problem.
    custom = (not isinstance(solver, type) and is_solver(solver)
              and getattr(solver, "problem_kind", name) == name)
    if not (isinstance(solver, kinds) or custom):
        names = ", ".join(f"{kind.__name__}(...)" for kind in kinds)
        raise TypeError(f"solver must be one of {names} or an object with init, step, "
                        f"terminate and postprocess methods, got {type(solver).__name__}")
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    check_adjoint(adjoint)
    check_max_steps(max_steps)
    check_flag("throw", throw)
    if not callable(fn):
        raise TypeError(f"fn must be callable fn(y, *args), got {type(fn).__name__}")
    return solver, adjoint, as_initial_value(y0), as_args(args)


def start_point(evaluate: Callable[[torch.Tensor], Any], y0: torch.Tensor,
                adjoint: ImplicitAdjoint | UnrollAdjoint, probe: bool = True
                ) -> tuple[Any, bool]:
    """``evaluate(y0)`` once, and whether the implicit derivative is to be attached.

    With gradients on and the implicit adjoint (attaching possible), and ``probe``, the
    start point is evaluated with autograd recording — the same values — and tells whether
    anything ``fn`` depends on requires grad: if its output does not, there is nothing to
    differentiate and the re-evaluation at the solution that the implicit adjoint needs is
    skipped. Without ``probe`` it is evaluated without gradients and attaching is left to
    the re-evaluation at the solution. The output is returned detached.
    """
    possible = torch.is_grad_enabled() and not isinstance(adjoint, UnrollAdjoint)
    with torch.set_grad_enabled(possible and probe):
        out = evaluate(y0.detach())
    first = out[0] if isinstance(out, tuple) else out
    attach = possible and (first.requires_grad or not probe)
    if isinstance(out, tuple):
        return tuple(t.detach() for t in out), attach
    return out.detach(), attach


def run(name: str, solver: IterativeSolver, problem: Problem, y0: torch.Tensor,
        max_steps: int, adjoint: ImplicitAdjoint | UnrollAdjoint, throw: bool,
        attach: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None
        ) -> Solution:
    """Iterate (unrolled under autograd, or without gradients followed by ``attach(y, status,
    state)``, which returns y* with the implicit derivative), then build the
    :class:`Solution` and raise on failure with ``throw``."""
    if isinstance(adjoint, UnrollAdjoint):
        state, status = iterate(solver, problem, y0, max_steps)
        outcome = solver.postprocess(state)
        value = outcome.value
    else:
        with torch.no_grad():
            state, status = iterate(solver, problem, y0, max_steps)
            outcome = solver.postprocess(state)
        value = outcome.value if attach is None else attach(outcome.value, status, state)
    state = None
    solution = Solution(value=value, status=status, steps=outcome.steps,
                        residual_norm=outcome.residual_norm.detach(), stats=outcome.stats)
    if not solution.all_converged:
        logger.info("%s: %d of %d elements did not converge", name,
                    int((~solution.converged).sum()), status.numel())
    if throw:
        raise_if_failed(name, solution)
    return solution


def checked_square(name: str, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` wrapped to check every evaluation returns a tensor of the shape and dtype of y.

    The first evaluation is checked in full by ``evaluate_checked``; this catches an ``fn``
    whose output changes later (a shape that would silently broadcast against y, one more
    entry, another dtype) at the cost of a shape comparison per call.
    """
    def checked(y: torch.Tensor, *args: Any) -> torch.Tensor:
        out = fn(y, *args)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{name}: fn must return a tensor, got {type(out).__name__}")
        if out.shape != y.shape:
            raise ValueError(
                f"{name}: fn(y, *args) must return the shape of y, {tuple(y.shape)} = "
                f"(*batch, n), got {tuple(out.shape)} during the solve"
            )
        if out.dtype != y.dtype:
            raise TypeError(
                f"{name}: fn(y, *args) must return dtype {y.dtype} like y, got {out.dtype} "
                f"during the solve"
            )
        return out
    return checked


def solve_square(name: str, fn: Any, y0: Any, args: Any, solver: Any,
                 default: Callable[[], Any], kinds: tuple[type, ...], adjoint: Any,
                 max_steps: int, throw: bool, *, jacobian: Any = "forward",
                 fixed_point: bool = False) -> Solution:
    """The front end of a square solve, ``fn(y, *args)`` of the shape of y ``(*batch, n)``:
    :func:`check_call`, the start point, ``fn`` wrapped by :func:`checked_square`, the
    :class:`Problem` (``jacobian`` a mode or a callable, see ``resolve_jacobian``) and
    :func:`run` with the implicit derivative attached at the solution.

    The implicit derivative is that of g(y) = 0 with H = ∂_y g: g = ``fn`` for a root; with
    ``fixed_point``, g = T(y) − y and H = ∂_y T − I for T = ``fn``.
    """
    solver, adjoint, y0, args = check_call(name, fn, y0, args, solver, default, kinds,
                                           adjoint, max_steps, throw)
    start, attach = start_point(lambda y: evaluate_checked(name, fn, y, args, square=True), y0,
                                adjoint, probe=False)
    fn = checked_square(name, fn)
    n = y0.shape[-1]
    jac = make_jacobian_fn(fn, args, resolve_jacobian(jacobian, n, n), n)
    problem = Problem(lambda y: fn(y, *args), jac, start)
    if isinstance(adjoint, UnrollAdjoint) and torch.is_grad_enabled():
        problem.start = problem.fn(y0)

    def attach_gradient(y: torch.Tensor, status: torch.Tensor, state: Any) -> torch.Tensor:
        g = reevaluate(fn, y, args)
        if g is None:
            return y
        with torch.no_grad():
            H = jac(y.detach())
        if fixed_point:  # g = T(y) − y, ∂_y g = ∂_y T − I
            g, H = g - y.detach(), H - torch.eye(n, dtype=y.dtype, device=y.device)
        return attach_implicit(y, g, H, status != int(Status.NONFINITE), symmetric=False,
                               solver=adjoint.linear_solver)

    return run(name, solver, problem, y0, max_steps, adjoint, throw,
               attach_gradient if attach else None)


def running(status: torch.Tensor) -> torch.Tensor:
    """The elements still iterating."""
    return status == RUNNING
