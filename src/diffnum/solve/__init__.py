"""Differentiable solvers with implicit gradients.

Map of the pillar (one public function per problem, solver objects hold the *how*, an
adjoint object decides how gradients are taken, every result is a :class:`Solution`):

- :func:`least_squares` — min_y ½‖r(y; θ)‖², batched; solvers :class:`LevenbergMarquardt`
  (default) and :class:`GaussNewton`.
- :func:`root` — r(y; θ) = 0 for square systems; solvers :class:`Newton` (backtracking line
  search, default) and :class:`Broyden`.
- :func:`fixed_point` — y = T(y; θ); solvers :class:`AndersonAcceleration` (default) and
  :class:`FixedPointIteration`.
- :func:`linear_solve` — A y = b with solver objects :class:`LU` (default),
  :class:`Cholesky`, :class:`Pinv` (minimum-norm least squares), :class:`CG` and
  :class:`GMRES` (these two hold tolerances and a preconditioner), A a tensor or a matvec.
- Adjoints: :class:`ImplicitAdjoint` (implicit function theorem at the solution: one linear
  solve + one VJP, memory independent of the iteration count; its ``linear_solver`` is one of
  the direct solver objects) and :class:`UnrollAdjoint`
  (backpropagate through the iterations).
- Results: :class:`Solution` (``value``, per-element ``status``, ``steps``,
  ``residual_norm``, ``stats``), :class:`Status`, and :class:`SolveError` raised by
  ``throw=True``.

Solver objects run by one driver: the nonlinear solvers own ``init(problem, y0) -> state``,
``step(state) -> state``, ``terminate(state) -> (done, status)`` (per element) and
``postprocess(state)``; one private driver (``diffnum.solve._driver``) runs any of them with
the front end the solves share (checks, batching, per-element status, ``max_steps``,
``throw``, adjoint). An object with these four methods is accepted as a custom ``solver``;
its ``init`` receives a problem with ``fn(y)`` and ``jacobian(y)`` (``args`` bound) and
``start`` = ``fn(y0)``.

Conventions: ``fn(y, *args)``; y has shape ``(*batch, n)`` and batch elements are independent
problems (batch × experts); gradients reach tensors in ``args`` and everything ``fn`` closes
over.
"""

from diffnum.solve._adjoint import ImplicitAdjoint, UnrollAdjoint
from diffnum.solve._fixed_point import AndersonAcceleration, FixedPointIteration, fixed_point
from diffnum.solve._least_squares import least_squares
from diffnum.solve._levenberg_marquardt import GaussNewton, LevenbergMarquardt
from diffnum.solve._linear import CG, GMRES, LU, Cholesky, Pinv, linear_solve
from diffnum.solve._root import Broyden, Newton, root
from diffnum.solve._solution import Solution, SolveError, Status

__all__ = [
    "CG",
    "GMRES",
    "LU",
    "AndersonAcceleration",
    "Broyden",
    "Cholesky",
    "FixedPointIteration",
    "GaussNewton",
    "ImplicitAdjoint",
    "LevenbergMarquardt",
    "Newton",
    "Pinv",
    "Solution",
    "SolveError",
    "Status",
    "UnrollAdjoint",
    "fixed_point",
    "least_squares",
    "linear_solve",
    "root",
]
