"""Meta-factorization and its neighbours.

Map of the pillar:

- :func:`meta_factorize` — solve the projector equation (Yᵀ, X from the test
  matrices B, D) and the reconstruction equation (core G) for given factors F, H;
  returns a :class:`MetaFactorization` (with :meth:`~MetaFactorization.residuals`).
- Recipes built on that engine: :func:`svd`, :func:`cpqr`, :func:`utv`,
  :func:`nystrom`, :func:`cur`, and :func:`cr` (full-rank CR factorization).
- Pseudoinverses: :func:`pinv` (SVD, CR or randomized route) and
  :func:`strang_pinv` (Strang's three formulas for A = CR).
- Test matrices with a known spectrum: :func:`synthetic_matrix`.
- Sketching and selection: :func:`range_finder`, :func:`rsvd`, :func:`select_columns`.
- Matrix functions: :func:`msign` (polar factor by Newton–Schulz) and
  :func:`sqrtm` (differentiable square root and inverse square root of SPD matrices), each
  with an ``_ex`` twin (:func:`msign_ex`, :func:`sqrtm_ex`, as ``torch.linalg.cholesky_ex``)
  that returns its diagnostics — :class:`MsignResult`, :class:`SqrtmResult` — with a
  status per batch element instead of warnings.
- Newton–Schulz schedules: :func:`polar_schedule` (minimax design, the Polar Express
  method), ``POLAR_PRESETS`` (published sets: Muon's, Polar Express's, Turbo-Muon's),
  ``ROOT_SHAPE_TRIPLES`` (ROOT's per-shape triples) and :func:`polar_band` (the exact image
  of [lower, 1] under a schedule — a :class:`PolarBand`: how close to 1 it lands, and
  whether any sign flips).
"""

from diffnum.factor._engine import (
    FactorizationResiduals,
    MetaFactorization,
    RankDeficiencyWarning,
    meta_factorize,
)
from diffnum.factor._gallery import synthetic_matrix
from diffnum.factor._pinv import pinv, strang_pinv
from diffnum.factor._polar import MsignResult, msign, msign_ex
from diffnum.factor._recipes import cpqr, cr, cur, numerical_rank, nystrom, svd, utv
from diffnum.factor._schedule import (
    POLAR_PRESETS,
    ROOT_SHAPE_TRIPLES,
    PolarBand,
    polar_band,
    polar_schedule,
)
from diffnum.factor._select import select_columns
from diffnum.factor._sketch import range_finder, rsvd, sketch_matrix
from diffnum.factor._sqrtm import SqrtmResult, sqrtm, sqrtm_ex

__all__ = [
    "POLAR_PRESETS",
    "ROOT_SHAPE_TRIPLES",
    "FactorizationResiduals",
    "MetaFactorization",
    "MsignResult",
    "PolarBand",
    "RankDeficiencyWarning",
    "SqrtmResult",
    "cpqr",
    "cr",
    "cur",
    "meta_factorize",
    "msign",
    "msign_ex",
    "numerical_rank",
    "nystrom",
    "pinv",
    "polar_band",
    "polar_schedule",
    "range_finder",
    "rsvd",
    "select_columns",
    "sketch_matrix",
    "sqrtm",
    "sqrtm_ex",
    "strang_pinv",
    "svd",
    "synthetic_matrix",
    "utv",
]
