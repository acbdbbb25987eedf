"""Muon-family optimizers on a checked polar factor.

Map of the pillar:

- :class:`Muon` — momentum orthogonalized by Newton–Schulz (:func:`diffnum.factor.msign`)
  for every parameter with two or more dimensions (conv and DCLS weights as (out, in·k…)
  matrices), AdamW for the rest, in one optimizer with one ``step()``. Matrices of equal
  shape are orthogonalized in one batched call. The coefficient schedule is a preset or
  designed by :func:`diffnum.factor.polar_schedule`, and checked by
  :func:`diffnum.factor.polar_band` before the first step.
- Variants as defaults of the same machinery: :class:`TurboMuon` (AOL start, 4 steps),
  :class:`Root` (outlier clipping, per-shape coefficients), :class:`AuON` (a cosh-RMS
  rescaling with a spectral-norm bound instead of an orthogonalization).
- The linear-minimization-oracle view (Pethick et al. 2025): Muon's direction is the
  steepest one under the spectral norm; ``norm="sign"`` and ``norm="column"`` give the
  steepest directions under max |W_ij| and the largest column ℓ₂ norm with the same
  optimizer.
"""

from diffnum.optim._muon import AuON, Muon, Root, TurboMuon, root_shape_schedules

__all__ = ["AuON", "Muon", "Root", "TurboMuon", "root_shape_schedules"]
