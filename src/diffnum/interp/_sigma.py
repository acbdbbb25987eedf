"""Width (σ) schedules for the ``gauss`` and ``max`` versions: constant, learned, annealed."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from diffnum._core.validation import (
    check_count,
    check_int_in_range,
    check_one_of,
    check_positive,
    check_real,
)
from diffnum.interp._construct import GAUSS_SIGMA_OFFSET, MAX_WIDTH_OFFSET
from diffnum.interp._layers import check_bool, dcls_layers

ROUNDING_SIGMA = 0.28  # the Gaussian's floor 0.27 + 0.01 (SIG = 0.01)


def set_sigma(module: nn.Module, sigma: float, *, learnable: bool = False) -> int:
    """Set the effective width of every ``gauss``/``max`` DCLS layer in ``module``.

    σ = |SIG| + 0.27 (``gauss``) or τ = |SIG| + 1 (``max``), so SIG is filled with
    σ − 0.27 (resp. τ − 1); ``learnable`` sets ``SIG.requires_grad``. Returns how many layers
    were changed. Raises if σ is below the version's floor.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls1d(2, 4, kernel_count=3, dilated_kernel_size=7, padding=3)
        >>> x = torch.randn(1, 2, 16)
        >>> di.set_sigma(layer, 0.5)  # returns how many layers were set
        1
    """
    sigma = check_real("sigma", sigma)
    check_bool("learnable", learnable)
    changed = 0
    for layer in dcls_layers(module):
        if layer.SIG is None:
            continue
        floor = GAUSS_SIGMA_OFFSET if layer.version == "gauss" else MAX_WIDTH_OFFSET
        if sigma < floor:
            raise ValueError(
                f"sigma must be >= {floor} for version {layer.version!r} (its width floor), "
                f"got {sigma}"
            )
        layer.SIG.data.fill_(sigma - floor)
        layer.SIG.requires_grad_(learnable)
        changed += 1
    return changed


@dataclass(frozen=True)
class SigmaSchedule:
    """σ(step) going from ``start`` to ``end`` over ``steps`` steps, then held at ``end``.

    ``kind``: ``"constant"`` (σ = start), ``"linear"``, ``"cosine"`` or ``"exponential"``
    (geometric interpolation). A learned σ is ``set_sigma(model, σ0, learnable=True)`` and no
    schedule; :meth:`for_rounding` is the schedule for positions that will be rounded.

    What to use, as measured by ``PYTHONPATH=src OMP_NUM_THREADS=1 python
    benchmarks/sweep_dcls_defaults.py`` (``benchmarks/results/dcls_defaults.md``) on the two
    real-data tasks of ``diffnum reproduce dcls``:

    - Spiking delays (part (c), T_d = 25, 640 Adam steps, 5 seeds; every schedule reaches
      1.000 before rounding): ``for_rounding(T_d/2, steps)`` — linear to 0.28 over the first
      quarter — keeps 1.000 once the delays are rounded in 5 of 5 seeds. The same schedule
      ending at 0.5 (part (c)'s before this measurement) keeps 0.721 ± 0.326 (3 seeds of 5
      lose accuracy, one stays at 0.236 after an epoch of retraining the weights), and
      sharpening from 0.5 to 0.28 over the last quarter only gives the very same numbers
      (the cosine learning rate is below 15 % of its peak there; the delays hardly move).
      The thesis's spiking code (Thvnvtos/SNN-delays) multiplies SIG, from T_d//3, by a
      constant factor once per epoch down to 0.23 (σ = 0.5 with the 0.27 offset) at half the
      epochs, positions at 150 × the weight learning rate; here (exponential from 8.27 to
      0.5 over the first half, positions ×150) it keeps 0.291 ± 0.198 once rounded, and
      0.891 ± 0.151 when taken down to 0.28 instead.
    - Convolution (part (d)'s digits canvas, 630 AdamW steps, positions ×5, 3 seeds): σ
      learned from 0.5 (0.904 ± 0.019) and σ frozen at 0.5 (0.904 ± 0.025) tie; annealing
      from 2 does worse (to 0.5 over the first half: 0.844 ± 0.071; to 0.28: 0.816 ± 0.078).
      Frozen at 0.5 also rounds best (0.852, against 0.644 for the learned σ); annealed to
      0.28 loses least to rounding (0.816 → 0.802) but starts lower.

    Example::

        >>> from diffnum.interp import SigmaSchedule
        >>> schedule = SigmaSchedule(5.0, 0.5, steps=10)  # σ annealed, then held
        >>> schedule(0), schedule(5), schedule(20)
        (5.0, 2.75, 0.5)
    """

    start: float
    end: float
    steps: int
    kind: str = "linear"

    def __post_init__(self) -> None:
        check_positive("start", self.start)  # a width σ (or τ) is positive for every version
        check_positive("end", self.end)
        check_count("steps", self.steps)
        check_one_of("kind", self.kind, ("constant", "linear", "cosine", "exponential"))

    @classmethod
    def for_rounding(cls, start: float, total_steps: int, *,
                     fraction: float = 0.25) -> SigmaSchedule:
        """The σ schedule for a ``gauss`` model whose positions will be rounded: linear from
        ``start`` down to 0.28 (the floor 0.27 + 0.01) over the first ``fraction`` of
        ``total_steps``, then held there with SIG frozen.

        At σ = 0.28 a tap at an integer position gives each neighbour e^(−1/(2σ²)) ≈ 0.2 %
        of the centre's weight (13.5 % at σ = 0.5), close to the single tap that rounding
        leaves, and the annealing ends early, while the learning rate is still high, so the
        network trains most of the run on such narrow taps. On the spiking-delay task
        (``diffnum reproduce dcls`` part (c), whose schedule this is: ``start`` = T_d/2;
        5 seeds) every seed keeps its accuracy, 1.000, when the delays are rounded; ending at
        0.5 instead, the rounded delays keep 0.721 ± 0.326 (see the class docstring and
        ``benchmarks/results/dcls_defaults.md``). On the digits canvas (``start`` 2,
        ``fraction`` 0.5) rounding costs little (0.816 → 0.802), but σ frozen at 0.5 trains
        and rounds better there (0.904 → 0.852).

        Example::

            >>> from diffnum.interp import SigmaSchedule
            >>> schedule = SigmaSchedule.for_rounding(12.5, total_steps=640)
            >>> schedule.steps, schedule(0), schedule(80), schedule(160)
            (160, 12.5, 6.39, 0.28)
        """
        start = check_real("start", start, low=ROUNDING_SIGMA)
        check_count("total_steps", total_steps)
        fraction = check_real("fraction", fraction, low=0.0, high=1.0, low_open=True)
        return cls(start, ROUNDING_SIGMA, max(1, round(total_steps * fraction)))

    def __call__(self, step: int) -> float:
        """σ at ``step`` (0-based; a negative step reads as 0)."""
        check_int_in_range("step", step, -(2**63), 2**63)
        if self.kind == "constant":
            return self.start
        t = min(max(step, 0), self.steps) / self.steps
        if t >= 1:
            return self.end
        if self.kind == "linear":
            return self.start + (self.end - self.start) * t
        if self.kind == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * t))
        return self.start * (self.end / self.start) ** t

    def apply(self, module: nn.Module, step: int) -> float:
        """Set every DCLS layer of ``module`` to σ(step), frozen; return σ(step)."""
        sigma = self(step)
        set_sigma(module, sigma, learnable=False)
        return sigma
