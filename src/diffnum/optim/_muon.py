"""Muon: momentum orthogonalized by a checked Newton–Schulz polar factor, with an AdamW group
for the parameters that are not matrices — one optimizer object, one ``step()``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from diffnum._core import check_one_of
from diffnum._core.validation import check_flag, check_real
from diffnum.factor import POLAR_PRESETS, ROOT_SHAPE_TRIPLES, polar_band
from diffnum.optim._directions import NORMS, directions, matrix_shape, rms

ALGORITHMS = ("muon", "adamw")
ADJUST_LR = ("original", "match_rms_adamw", None)
PRECONDITIONS = ("frobenius", "aol")
COMPUTE_DTYPES = (torch.bfloat16, torch.float32, torch.float64, None)
# The RMS an update is scaled to by adjust_lr="match_rms_adamw" (Liu et al. 2025, "Muon is
# scalable for LLM training": AdamW's typical update RMS, so AdamW's lr and decay carry over).
MATCHED_RMS = 0.2


# A schedule whose band under rounding reaches beyond this is refused: it can blow up.
_MAX_BAND = 1.5


def resolve_schedule(schedule: object, compute_dtype: torch.dtype = torch.float64
                     ) -> tuple[tuple[float, float, float], ...]:
    """A preset name or per-step triples, checked on σ₀ ∈ [0, 1] with every σ perturbed by
    the iteration dtype's rounding before every step: none may come out negative, and none
    may grow beyond 1.5 (a steep polynomial designed for [ℓ, 1] explodes just above 1)."""
    rounding = torch.finfo(compute_dtype).eps / 2  # unit roundoff: 2⁻⁸ in bfloat16
    band = polar_band(schedule, lower=0.0, rounding=rounding)  # also validates the triples
    if not band.positive:
        raise ValueError(f"schedule maps some singular values in (0, 1] to negative values "
                         f"(image {band.min:.3g} .. {band.max:.3g}): the update would reverse "
                         f"those directions of the momentum")
    if band.max > _MAX_BAND:
        raise ValueError(f"schedule is unstable in {compute_dtype}: with its rounding "
                         f"({rounding:.1e} per step) singular values reach {band.max:.3g}. "
                         f"Design it with a safety factor (polar_schedule(..., safety=0.01)) "
                         f"or iterate in a wider compute_dtype")
    if isinstance(schedule, str):
        return POLAR_PRESETS[schedule]
    return tuple(tuple(float(x) for x in t) for t in schedule)  # type: ignore[misc]


def lr_scale(adjust_lr: str | None, norm: str, shape: torch.Size) -> float:
    """The factor on the learning rate of one parameter (its matrix shape A × B)."""
    A, B = matrix_shape(shape)
    if adjust_lr == "original":
        return max(1.0, A / B) ** 0.5
    if adjust_lr == "match_rms_adamw":
        return MATCHED_RMS / rms(norm, A, B)
    return 1.0


class Muon(torch.optim.Optimizer):
    r"""Muon on every matrix-shaped parameter, AdamW on the rest, in one optimizer.

    For a matrix parameter W with gradient G (Jordan et al. 2024; the form of
    ``torch.optim.Muon``):

        B ← μ B + (1 − μ) G,   U = (1 − μ) G + μ B (Nesterov) or B,
        W ← (1 − lr·λ) W − lr·s · O(U),

    with O the steepest direction of the chosen ``norm`` — for ``"spectral"`` the polar
    factor msign(U) = P Qᵀ of U = P Σ Qᵀ by Newton–Schulz (see :func:`diffnum.factor.msign`;
    its coefficient ``schedule`` is checked once, here: one that reverses a singular direction
    is refused) — and s the shape factor of ``adjust_lr``: ``"original"`` √max(1, A/B)
    (Keller Jordan's, torch's default), ``"match_rms_adamw"`` 0.2/RMS(O) so the update has
    AdamW's RMS and AdamW's lr and weight decay carry over (Liu et al. 2025), or ``None``.

    Parameters of any rank are handled: a weight (out, in, k₁, …) is orthogonalized as the
    matrix (out, in·k₁⋯), the map a convolution applies to each input patch. Matrices of equal
    shape are orthogonalized together in one batched call. Parameters with fewer than two
    dimensions, and every parameter of a group with ``algorithm="adamw"``, get AdamW
    (decoupled weight decay, Loshchilov & Hutter): plain ``Muon(model.parameters())`` splits a
    model by itself; mark embeddings and output heads with an explicit AdamW group. DCLS
    positions and widths are tensors of two or more dimensions that are no matrices: pass
    ``diffnum.interp.parameter_groups(model, lr)``, which marks them for AdamW.

    Args:
        params: parameters or groups (dicts); a group may set ``algorithm`` ("muon" or
            "adamw") and override any argument below.
        lr: learning rate of both algorithms (see ``adjust_lr``).
        momentum: μ of Muon's momentum, 0 <= μ < 1.
        nesterov: Nesterov momentum.
        weight_decay: λ, decoupled (W ← (1 − lr·λ) W), for both algorithms.
        schedule: Newton–Schulz coefficients — a preset name of
            :data:`diffnum.factor.POLAR_PRESETS` (default ``"muon"``: 5 steps of
            (3.4445, −4.7750, 2.0315)) or per-step triples, e.g. from
            :func:`diffnum.factor.polar_schedule`. One step per triple. Checked with
            :func:`diffnum.factor.polar_band` under the rounding of ``compute_dtype``: a
            schedule that reverses a direction or can blow up (a raw minimax schedule in
            bfloat16, without ``safety``) raises ``ValueError``.
        precondition: ``"frobenius"`` (U/‖U‖_F) or ``"aol"`` (Turbo-Muon's start).
        compute_dtype: dtype of the Newton–Schulz products; ``torch.bfloat16`` (default, as
            Muon), ``torch.float32``, ``torch.float64`` or ``None`` (the parameter's dtype).
        norm: ``"spectral"`` (Muon), ``"sign"`` or ``"column"`` — the norm whose linear
            minimization oracle gives the direction (see :mod:`diffnum.optim`).
        adjust_lr: ``"match_rms_adamw"`` (default), ``"original"`` (spectral norm and AuON)
            or ``None``.
        clip_quantile: ROOT's outlier clipping (Gao et al. 2025): before orthogonalizing,
            clamp the update's entries to ±(this quantile of |U|) + 1e-9, so that a few huge
            entries do not dominate the polar factor; ``None`` (default) does not clip.
        shape_schedules: ``{(smaller dim, larger dim): schedule}`` — per-shape schedules
            that replace ``schedule`` for matrices of that shape (ROOT's per-shape
            coefficients, ``diffnum.factor.ROOT_SHAPE_TRIPLES``); each is checked like
            ``schedule``.
        betas: AdamW's moment decay rates (β₁, β₂).
        eps: AdamW's denominator floor.

    Example::

        >>> import torch
        >>> from diffnum.optim import Muon
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),
        ...                             torch.nn.Linear(4 * 6 * 6, 10))
        >>> opt = Muon(model.parameters(), lr=1e-3)
        >>> [g["algorithm"] for g in opt.param_groups]  # weights, then biases
        ['muon', 'adamw']
        >>> model(torch.randn(2, 1, 8, 8)).square().mean().backward()
        >>> opt.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, *, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.1,
                 schedule: str | Iterable[tuple[float, float, float]] = "muon",
                 precondition: str = "frobenius",
                 compute_dtype: torch.dtype | None = torch.bfloat16, norm: str = "spectral",
                 adjust_lr: str | None = "match_rms_adamw", clip_quantile: float | None = None,
                 shape_schedules: dict[tuple[int, int], Any] | None = None,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        schedule=schedule, precondition=precondition,
                        compute_dtype=compute_dtype, norm=norm, adjust_lr=adjust_lr,
                        clip_quantile=clip_quantile, shape_schedules=shape_schedules,
                        betas=betas, eps=eps)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; without ``algorithm`` it is split into a Muon group (parameters with
        two or more dimensions) and an AdamW group (the rest)."""
        if "algorithm" in param_group:
            group = dict(param_group)
            check_one_of("algorithm", group["algorithm"], ALGORITHMS)
            super().add_param_group(group)
            self._check_group(self.param_groups[-1])
            return
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for algorithm in ALGORITHMS:
            chosen = [p for p in params if (p.ndim >= 2) == (algorithm == "muon")]
            if chosen:
                self.add_param_group({**param_group, "params": chosen, "algorithm": algorithm})

    def _check_group(self, group: dict[str, Any]) -> None:
        check_real("lr", group["lr"], low=0.0)
        check_real("weight_decay", group["weight_decay"], low=0.0)
        if group["algorithm"] == "adamw":
            b1, b2 = group["betas"]
            check_real("betas[0]", b1, low=0.0, high=1.0, high_open=True)
            check_real("betas[1]", b2, low=0.0, high=1.0, high_open=True)
            check_real("eps", group["eps"], low=0.0, low_open=True)
            return
        for p in group["params"]:
            if p.ndim < 2:
                raise ValueError(f"a Muon group needs parameters with at least 2 dimensions, "
                                 f"got one of shape {tuple(p.shape)}; put it in a group with "
                                 f"algorithm='adamw'")
        check_real("momentum", group["momentum"], low=0.0, high=1.0, high_open=True)
        check_flag("nesterov", group["nesterov"])
        check_one_of("norm", group["norm"], NORMS)
        check_one_of("precondition", group["precondition"], PRECONDITIONS)
        check_one_of("compute_dtype", group["compute_dtype"], COMPUTE_DTYPES)
        check_one_of("adjust_lr", group["adjust_lr"], ADJUST_LR)
        if group["adjust_lr"] == "original" and group["norm"] not in ("spectral", "auon"):
            raise ValueError(f"adjust_lr='original' is Muon's factor for the spectral norm; "
                             f"with norm={group['norm']!r} use 'match_rms_adamw' or None")
        if group["clip_quantile"] is not None:
            check_real("clip_quantile", group["clip_quantile"], low=0.0, high=1.0,
                       low_open=True)
        # The widest rounding the iterations can see (None: the parameters' own dtype, with
        # bfloat16/float16 parameters iterated in float32).
        dtype = group["compute_dtype"] or (
            torch.float64 if all(p.dtype == torch.float64 for p in group["params"])
            else torch.float32)
        group["schedule"] = resolve_schedule(group["schedule"], dtype)
        shapes = group["shape_schedules"] or {}
        if not isinstance(shapes, dict):
            raise TypeError(f"shape_schedules must be a dict {{(smaller, larger): schedule}}, "
                            f"got {type(shapes).__name__}")
        group["shape_schedules"] = {tuple(int(d) for d in k): resolve_schedule(v, dtype)
                                    for k, v in shapes.items()} or None

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step of every group; ``closure`` re-evaluates the loss (as torch.optim)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse or p.is_complex():
                    raise RuntimeError(f"{type(self).__name__} supports dense real gradients "
                                       f"only, got a {'sparse' if p.grad.is_sparse else 'complex'}"
                                       " one")
            if group["algorithm"] == "muon":
                self._muon_step(group, params)
            else:
                self._adamw_step(group, params)
        return loss

    def _momentum(self, group: dict[str, Any], params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Update every momentum buffer and return what is orthogonalized."""
        mu = group["momentum"]
        out = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - mu)
            out.append(p.grad.lerp(buf, mu) if group["nesterov"] else buf)
        return out

    def _muon_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        updates = self._momentum(group, params)
        if group["clip_quantile"] is not None:
            updates = [_clip_outliers(u, group["clip_quantile"]) for u in updates]
        shapes = group["shape_schedules"] or {}

        def schedule(shape: tuple[int, int]) -> tuple[tuple[float, float, float], ...]:
            return shapes.get((min(shape), max(shape)), group["schedule"])

        found = directions(updates, group["norm"], schedule, group["precondition"],
                           group["compute_dtype"])
        lr, decay = group["lr"], group["weight_decay"]
        for p, O in zip(params, found, strict=True):
            if decay:
                p.mul_(1 - lr * decay)
            p.add_(O, alpha=-lr * lr_scale(group["adjust_lr"], group["norm"], p.shape))

    def _adamw_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, decay, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            # Bias corrections as tensor arithmetic on the step count: no host sync, so the
            # whole step traces into one graph under torch.compile.
            t = state["step"].to(torch.float64 if p.dtype == torch.float64 else torch.float32)
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            if decay:
                p.mul_(1 - lr * decay)
            if lr:
                denom = (v.sqrt() / (1 - b2**t).sqrt()).add_(eps)
                p.addcdiv_(m, denom.mul_((1 - b1**t) / lr), value=-1)


def _clip_outliers(U: torch.Tensor, quantile: float) -> torch.Tensor:
    """U clamped to ±(the ``quantile`` of |U|) + 1e-9 (ROOT's soft-threshold split
    U = clamp(U) + outliers, keeping the first part)."""
    flat = U.detach().abs().flatten().float()
    if flat.numel() > _QUANTILE_MAX:  # torch.quantile's input limit: the k-th value instead
        k = max(1, min(flat.numel(), round(quantile * (flat.numel() - 1)) + 1))
        bound = flat.kthvalue(k).values
    else:
        bound = torch.quantile(flat, quantile)
    bound = (bound + 1e-9).to(U.dtype)
    return U.clamp(-bound, bound)


_QUANTILE_MAX = 1 << 24


class TurboMuon(Muon):
    """Turbo-Muon (Boissin et al. 2025, arXiv:2512.04632): :class:`Muon` started from the AOL
    rescaling X₀ = diag(s) U, s_i = (Σ_j |(U Uᵀ)_ij|)^(-1/2) — which bounds ‖X₀‖₂ <= 1 with
    larger small singular values than U/‖U‖_F — and their 4-step schedule
    (``POLAR_PRESETS["turbo_muon"]``): one Newton–Schulz step fewer than Muon's 5.

    Same arguments as :class:`Muon` with ``precondition="aol"`` and
    ``schedule="turbo_muon"`` as defaults. Note the target is the polar factor of the
    rescaled matrix, not of U itself (see :func:`diffnum.factor.msign`).

    Example::

        >>> import torch
        >>> from diffnum.optim import TurboMuon
        >>> opt = TurboMuon([torch.nn.Parameter(torch.randn(8, 16))], lr=1e-2)
        >>> opt.param_groups[0]["precondition"], len(opt.param_groups[0]["schedule"])
        ('aol', 4)
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, **kwargs: Any) -> None:
        kwargs.setdefault("precondition", "aol")
        kwargs.setdefault("schedule", "turbo_muon")
        super().__init__(params, lr, **kwargs)


class Root(Muon):
    """ROOT (Gao et al. 2025, "ROOT: robust orthogonalized optimizer", arXiv:2511.20626):
    :class:`Muon` with outlier clipping (the update clamped at its 0.9-quantile of |U| before
    orthogonalizing) and per-shape Newton–Schulz triples fitted by its authors
    (``diffnum.factor.ROOT_SHAPE_TRIPLES``, 5 steps; other shapes use Muon's), iterated in
    float32, with the AdamW-matched learning-rate scale. Only the triples that pass the
    schedule check are used (:func:`root_shape_schedules`): the (2048, 2048) one, applied 5
    times, maps σ₀ ≈ 0.56 to 3.31 and is left out (that shape falls back to Muon's).

    Same arguments as :class:`Muon`; the defaults differ as above.

    Example::

        >>> import torch
        >>> from diffnum.optim import Root
        >>> W = torch.nn.Parameter(torch.zeros(8, 16))
        >>> W.grad = torch.ones(8, 16)
        >>> W.grad[0, 0] = 1e6  # one outlier: clipped to the 0.9-quantile, it does not steer
        >>> Root([W], lr=1.0, weight_decay=0.0, adjust_lr=None).step()
        >>> round(float(W.detach()[0, 0] / W.detach()[1, 1]), 3)  # clipped: a rank-one step
        1.0
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, **kwargs: Any) -> None:
        kwargs.setdefault("clip_quantile", 0.9)
        kwargs.setdefault("shape_schedules", root_shape_schedules())
        kwargs.setdefault("compute_dtype", torch.float32)
        super().__init__(params, lr, **kwargs)


def root_shape_schedules(compute_dtype: torch.dtype = torch.float32
                         ) -> dict[tuple[int, int], tuple[tuple[float, float, float], ...]]:
    """ROOT's per-shape triples as 5-step schedules, those that pass :func:`resolve_schedule`
    in ``compute_dtype`` (see :class:`Root`).

    Example::

        >>> from diffnum.optim import root_shape_schedules
        >>> sorted(root_shape_schedules())  # (2048, 2048) is refused: it reaches 3.31
        [(2048, 3072), (2048, 8192), (2048, 16384)]
    """
    kept = {}
    for shape, triple in ROOT_SHAPE_TRIPLES.items():
        try:
            kept[shape] = resolve_schedule((triple,) * 5, compute_dtype)
        except ValueError:
            continue
    return kept


class AuON(Muon):
    """AuON (Maity 2025, arXiv:2509.24320): the momentum rescaled instead of orthogonalized,
    U = Ĝ / √mean(cosh²(Ĝ)), Ĝ = G/‖G‖_F. As cosh ≥ 1, ‖U‖₂ <= ‖Ĝ‖_F = 1: the step's
    spectral norm is bounded by lr·scale at linear cost, while its singular values keep their
    ratios (Muon maps them all near 1).

    Same arguments as :class:`Muon` with ``norm="auon"`` and the paper's
    ``adjust_lr="original"`` (√max(1, A/B)) as defaults.

    Example::

        >>> import torch
        >>> from diffnum.optim import AuON
        >>> W = torch.nn.Parameter(torch.zeros(8, 16))
        >>> W.grad = torch.randn(8, 16)
        >>> AuON([W], lr=1.0, weight_decay=0.0, adjust_lr=None).step()
        >>> bool(torch.linalg.matrix_norm(W.detach(), ord=2) <= 1)  # the step's bound
        True
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, **kwargs: Any) -> None:
        kwargs.setdefault("norm", "auon")
        kwargs.setdefault("adjust_lr", "original")
        super().__init__(params, lr, **kwargs)
