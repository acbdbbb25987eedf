"""The linear algebra of a Gauss–Newton-type step: who owns JᵀJ and Jᵀr, and when they change.

:class:`NormalEquations` (m ≥ n residuals) holds A = JᵀJ, g = Jᵀr and diag(JᵀJ) per element
and never the m×n Jacobian, which is released as soon as A and g are built from it (at most
one Jacobian is alive at a time). :class:`GramEquations` (m < n) steps with J itself and
keeps it. Both rebuild only the elements that accepted a step and are still running
(:meth:`relinearized`): a rejected or finished element keeps the numbers a rebuild from its
unchanged J would give, without the O(m n²) product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffnum.solve._common import batch_where

# Evaluates J(y) for the elements to rebuild: (J, rows) with J of the whole batch
# (rows=False) or of the rebuilt elements only (rows=True, compaction).
JacobianFetch = Callable[[], tuple[torch.Tensor, bool]]
# Whether any element still runs (asked only when needed: it synchronizes).
AnyRunning = Callable[[], bool]


def normal_products(J: torch.Tensor, r: torch.Tensor, gram: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """g = Jᵀr, A = JᵀJ (``None`` in the Gram form) and the column sums of squares diag(JᵀJ)."""
    # rᵀJ as a row-vector product: the same numbers as Jᵀr, but one contiguous pass over J in
    # its natural layout (about 4× faster than J.mT @ r for m ≫ n).
    g = (r.unsqueeze(-2) @ J).squeeze(-2)
    if gram:
        return g, None, (J * J).sum(-2)
    A = J.mT @ J
    return g, A, A.diagonal(dim1=-2, dim2=-1)


def _rebuild(J: torch.Tensor, r: torch.Tensor, gram: bool, rebuild: torch.Tensor, count: int,
             g: torch.Tensor, A: torch.Tensor | None, colsq: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """g, A, colsq from J(y), r(y) where ``rebuild`` is set (``count`` elements), else kept."""
    if count == rebuild.numel():
        return normal_products(J, r, gram)
    if 2 * count >= rebuild.numel() and not torch.is_grad_enabled():
        # Most elements moved: the products over the whole batch and a select of their small
        # results cost less than first gathering most of J into a new m×n tensor. (Not when
        # recording a graph: a non-finite J of an unselected element would give NaN·0 = NaN
        # in the backward pass of the product.)
        g_all, A_all, colsq_all = normal_products(J, r, gram)
        g = batch_where(rebuild, g_all, g)
        if gram:
            return g, None, batch_where(rebuild, colsq_all, colsq)
        A = batch_where(rebuild, A_all, A)
        return g, A, A.diagonal(dim1=-2, dim2=-1)
    g_rows, A_rows, colsq_rows = normal_products(J[rebuild], r[rebuild], gram)
    g = g.index_put((rebuild,), g_rows)
    if gram:
        return g, None, colsq.index_put((rebuild,), colsq_rows)
    A = A.index_put((rebuild,), A_rows)
    return g, A, A.diagonal(dim1=-2, dim2=-1)


@dataclass
class NormalEquations:
    """(JᵀJ + λD) δ = −Jᵀr for m ≥ n: ``A`` = JᵀJ, ``g`` = Jᵀr, ``colsq`` = diag(JᵀJ).

    ``jacobian`` is J(y) of every element when the iteration ends with one at hand (the last
    trial of a fused evaluation), for the Gauss–Newton adjoint; otherwise ``None``.
    """

    g: torch.Tensor
    A: torch.Tensor
    colsq: torch.Tensor
    jacobian: torch.Tensor | None = None

    @classmethod
    def build(cls, J: torch.Tensor, r: torch.Tensor) -> NormalEquations:
        g, A, colsq = normal_products(J, r, False)
        return cls(g, A, colsq)

    def masked(self, ok: torch.Tensor, r: torch.Tensor, zero: torch.Tensor
               ) -> tuple[NormalEquations, torch.Tensor]:
        """Elements outside ``ok`` solve the identity with g = 0 (kept out of LAPACK)."""
        n = self.g.shape[-1]
        eye = torch.eye(n, dtype=self.g.dtype, device=self.g.device)
        return NormalEquations(batch_where(ok, self.g, zero), batch_where(ok, self.A, eye),
                               batch_where(ok, self.colsq, zero), self.jacobian), r

    def solve(self, lam: torch.Tensor, scale: torch.Tensor, r: torch.Tensor,
              inv_S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(δ, predicted decrease of ½‖r/S‖², Cholesky info) per element."""
        lam_scale = lam.unsqueeze(-1) * scale
        L, info = torch.linalg.cholesky_ex(self.A + torch.diag_embed(lam_scale))
        delta = torch.cholesky_solve(-self.g.unsqueeze(-1), L).squeeze(-1)
        # ½(δᵀλDδ − gᵀδ)/S²: the decrease of ½‖r/S‖² predicted by the linear model.
        scaled = delta * inv_S
        pred = 0.5 * ((lam_scale * scaled - self.g * inv_S) * scaled).sum(-1)
        return delta, pred, info

    def relinearized(self, J_try: torch.Tensor | None, rejected: bool,
                     refused: torch.Tensor, rebuild: torch.Tensor, count: int,
                     r: torch.Tensor, fetch: JacobianFetch, any_running: AnyRunning
                     ) -> NormalEquations:
        """The equations at the new points of the ``rebuild`` elements (``count`` of them).

        J(y) comes from the trial evaluation ``J_try`` when fused (for every element: those
        that moved, and finished ones whose trial point is y), else from ``fetch``. It is
        used for the products and dropped; only a trial Jacobian that needs no rebuild — the
        last one, every element finished — is kept (see ``jacobian``)."""
        eqs = self
        if count and J_try is not None:
            eqs = self._rebuilt(J_try, r, rebuild, count)
        elif count:
            J, rows = fetch()
            if rows:
                g_rows, A_rows, _ = normal_products(J, r[rebuild], False)
                J = None
                A = self.A.index_put((rebuild,), A_rows)
                eqs = NormalEquations(self.g.index_put((rebuild,), g_rows), A,
                                      A.diagonal(dim1=-2, dim2=-1))
            else:
                eqs = self._rebuilt(J, r, rebuild, count)
        kept = J_try if J_try is not None and not rejected and not count else None
        return NormalEquations(eqs.g, eqs.A, eqs.colsq, kept)

    def _rebuilt(self, J: torch.Tensor, r: torch.Tensor, rebuild: torch.Tensor,
                 count: int) -> NormalEquations:
        g, A, colsq = _rebuild(J, r, False, rebuild, count, self.g, self.A, self.colsq)
        return NormalEquations(g, A, colsq)

    def jacobian_at_y(self) -> torch.Tensor | None:
        return self.jacobian


@dataclass
class GramEquations:
    """δ = −D^{-½} J̃ᵀ(J̃J̃ᵀ + λI)⁻¹ r, J̃ = J D^{-½}, for m < n: ``g`` = Jᵀr, ``colsq`` =
    diag(JᵀJ) and ``J`` itself, kept for every element; ``at_y`` says whether J is J(y) for
    every element (it is stale for elements that finished while others still run)."""

    g: torch.Tensor
    colsq: torch.Tensor
    J: torch.Tensor | None
    at_y: bool = True

    @classmethod
    def build(cls, J: torch.Tensor, r: torch.Tensor) -> GramEquations:
        g, _, colsq = normal_products(J, r, True)
        return cls(g, colsq, J)

    def masked(self, ok: torch.Tensor, r: torch.Tensor, zero: torch.Tensor
               ) -> tuple[GramEquations, torch.Tensor]:
        """Elements outside ``ok`` get J = 0, r = 0 and g = 0 (kept out of LAPACK)."""
        return GramEquations(batch_where(ok, self.g, zero), batch_where(ok, self.colsq, zero),
                             batch_where(ok, self.J, zero), self.at_y), batch_where(ok, r, zero)

    def solve(self, lam: torch.Tensor, scale: torch.Tensor, r: torch.Tensor,
              inv_S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(δ, predicted decrease of ½‖r/S‖², Cholesky info) per element (an m×m Cholesky)."""
        J = self.J
        inv_sqrt = scale.rsqrt()
        Js = J * inv_sqrt.unsqueeze(-2)
        m = J.shape[-2]
        K = Js @ Js.mT + torch.diag_embed(lam.unsqueeze(-1).expand(*lam.shape, m))
        L, info = torch.linalg.cholesky_ex(K)
        z = -(Js.mT @ torch.cholesky_solve(r.unsqueeze(-1), L)).squeeze(-1)
        delta = z * inv_sqrt
        Jd = (J @ delta.unsqueeze(-1)).squeeze(-1) * inv_S
        pred = -(r * inv_S * Jd).sum(-1) - 0.5 * (Jd * Jd).sum(-1)
        return delta, pred, info

    def relinearized(self, J_try: torch.Tensor | None, rejected: bool,
                     refused: torch.Tensor, rebuild: torch.Tensor, count: int,
                     r: torch.Tensor, fetch: JacobianFetch, any_running: AnyRunning
                     ) -> GramEquations:
        """J at the new points (rejected elements keep theirs) and g, colsq rebuilt for the
        ``rebuild`` elements; when only finished elements moved, J is left stale for them."""
        J, at_y = self.J, self.at_y
        if J_try is not None:
            J = J_try if not rejected else batch_where(refused, J, J_try)
            at_y = True
        elif count:
            J = self.J = None  # release the old Jacobian before evaluating the new one
            J = fetch()[0]
            at_y = True
        elif any_running():
            at_y = False
        else:  # nothing left to step from
            J = None
        g, colsq = self.g, self.colsq
        if count:
            g, _, colsq = _rebuild(J if J_try is None else J_try, r, True, rebuild, count,
                                   g, None, colsq)
        return GramEquations(g, colsq, J, at_y)

    def jacobian_at_y(self) -> torch.Tensor | None:
        return self.J if self.at_y else None
