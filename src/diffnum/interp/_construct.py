"""DCLS kernel construction: a dense reference, a scatter and a separable construction.

Conventions are those of the official ``dcls`` 0.1.1 package so that parameters copy across:

- ``weight`` has shape ``(..., m)`` (``(C_out, C_in/g, m)`` in a layer), ``P`` and ``SIG`` have
  shape ``(d, ..., m)``; the kernel has shape ``(..., s_0, ..., s_{d-1})``.
- Coordinate ``i`` of ``P`` is shifted by ``⌊s_i/2⌋`` (its own size) and moves along kernel axis
  ``position_axes(version, d)[i]``. For ``v1``/``max``/``gauss`` that order is reversed
  (coordinate 0 moves along the last axis); for ``v0`` it is ``(0,)``, ``(0, 1)``, ``(0, 2, 1)``.
  With non-cubic supports this is the package's (quirky) layout, reproduced on purpose.
- Mass that falls outside the support is lost (no clamping); ``Z`` (normalized versions) is the
  in-support mass plus ``1e-7``.

Every construction below uses the same elementwise operations (``abs``, ``relu``, ``exp``,
``floor``) as the reference, so sub-gradients at kinks (integer positions, ``SIG = 0``) agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffnum._core.validation import (
    check_finite,
    check_int_in_range,
    check_one_of,
    real_floating_dtype,
    tracing,
)

VERSIONS = ("v0", "v1", "max", "gauss")
CONSTRUCT_METHODS = ("auto", "dense", "scatter", "separable")
NORMALIZATION_EPS = 1e-7  # added to Z by the reference package; part of its semantics
GAUSS_SIGMA_OFFSET = 0.27  # σ = |SIG| + 0.27
MAX_WIDTH_OFFSET = 1.0  # τ = |SIG| + 1
# Sanity bounds: a typo (a size of 10**12) is refused by name before anything is allocated.
MAX_SIZE = 2**24  # one kernel/grid axis, a stride, a dilation, a padding
MAX_ELEMENTS = 2**31  # a whole kernel, grid or parameter tensor


def position_axes(version: str, ndim: int) -> tuple[int, ...]:
    """Kernel axis along which coordinate ``i`` of ``P`` moves, for each ``i`` (dcls 0.1.1).

    Example::

        >>> from diffnum.interp import position_axes
        >>> position_axes("gauss", 2)
        (1, 0)
    """
    check_one_of("version", version, VERSIONS)
    check_int_in_range("ndim", ndim, 1, 3)
    if ndim == 1:
        return (0,)
    if version == "v0":
        return (0, 1) if ndim == 2 else (0, 2, 1)
    return tuple(reversed(range(ndim)))


def normalize_size(
    name: str, value: int | Sequence[int], ndim: int, *, low: int = 1, high: int = MAX_SIZE
) -> tuple[int, ...]:
    """Expand an int, or check a sequence of ``ndim`` ints; each must lie in [low, high]."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * ndim
    elif not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(
            f"{name} must be an int or a sequence of {ndim} ints, got {type(value).__name__}"
        )
    values = tuple(value)
    if len(values) != ndim or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}")
    if any(not low <= v <= high for v in values):
        sign = "positive" if low == 1 else "non-negative" if low == 0 else f">= {low}"
        raise ValueError(f"{name} must be {sign} and at most {high}, got {values}")
    return values


def check_weight_positions(
    weight: torch.Tensor, P: torch.Tensor, dilated_kernel_size: int | Sequence[int]
) -> tuple[int, ...]:
    """Check ``weight (..., m)`` and finite positions ``P (d, ..., m)``; return the support."""
    dtype = real_floating_dtype("weight", weight, low_precision=True)
    real_floating_dtype("P", P, low_precision=True)
    if weight.ndim < 1 or weight.shape[-1] < 1:
        raise ValueError(
            f"weight must have shape (..., kernel_count) with kernel_count >= 1, "
            f"got {tuple(weight.shape)}"
        )
    if P.ndim != weight.ndim + 1 or P.shape[1:] != weight.shape or P.shape[0] not in (1, 2, 3):
        raise ValueError(
            f"P must have shape (d, *weight.shape) = (d, {', '.join(map(str, weight.shape))}) "
            f"with d in (1, 2, 3), got {tuple(P.shape)}"
        )
    if P.dtype != dtype or P.device != weight.device:
        raise TypeError(
            f"P must have weight's dtype and device ({dtype}, {weight.device}), "
            f"got {P.dtype}, {P.device}"
        )
    size = normalize_size("dilated_kernel_size", dilated_kernel_size, P.shape[0])
    elements = math.prod(weight.shape[:-1]) * math.prod(size)
    if elements > MAX_ELEMENTS:
        raise ValueError(
            f"dilated_kernel_size {size} with weight {tuple(weight.shape)} gives a kernel of "
            f"{elements} elements, more than {MAX_ELEMENTS}"
        )
    # NaN/inf positions would reach integer indices (floor → long) and weights every tap.
    check_finite("weight", weight)
    check_finite("P", P)
    return size


def check_construct_inputs(
    weight: torch.Tensor,
    P: torch.Tensor,
    SIG: torch.Tensor | None,
    dilated_kernel_size: int | Sequence[int],
    version: str,
) -> tuple[int, ...]:
    """Validate the arguments of :func:`construct_kernel`; return the support size tuple."""
    check_one_of("version", version, VERSIONS)
    size = check_weight_positions(weight, P, dilated_kernel_size)
    if version in ("max", "gauss"):
        if SIG is None:
            raise ValueError(f"SIG is required by version {version!r}, got None")
        real_floating_dtype("SIG", SIG, low_precision=True)
        if SIG.shape != P.shape:
            raise ValueError(
                f"SIG must have the shape of P {tuple(P.shape)}, got {tuple(SIG.shape)}"
            )
        if SIG.dtype != weight.dtype or SIG.device != weight.device:
            raise TypeError(
                f"SIG must have weight's dtype and device ({weight.dtype}, {weight.device}), "
                f"got {SIG.dtype}, {SIG.device}"
            )
        # |SIG| ≤ MAX_SIZE: wider is uniform over any support, and the `max` mass Π_a Σ_j τ
        # would overflow float32 (silently zeroing the kernel) from τ ≈ 1e13 in 3-D.
        widest = (float(SIG.detach().abs().amax()) if SIG.numel() and not tracing()
                  else 0.0)
        if not widest <= MAX_SIZE:
            check_finite("SIG", SIG)
            raise ValueError(f"SIG must be at most {MAX_SIZE} in magnitude, got {widest}")
    elif SIG is not None:
        raise ValueError(f"SIG is not used by version {version!r}; pass None, got a tensor")
    return size


def _centred(P: torch.Tensor, size: tuple[int, ...]) -> list[torch.Tensor]:
    """q_i = P_i + ⌊s_i/2⌋, coordinate by coordinate (as the reference rounds it)."""
    # unbind, not P[i]: one stacked gradient instead of a zero-filled buffer per coordinate
    return [p + (s // 2) for p, s in zip(P.unbind(0), size)]


def _widths(version: str, SIG: torch.Tensor | None) -> list[torch.Tensor | None]:
    """σ_i = |SIG_i| + 0.27 (gauss) or τ_i = |SIG_i| + 1 (max); None for v0/v1."""
    if SIG is None:
        return [None] * 3
    offset = GAUSS_SIGMA_OFFSET if version == "gauss" else MAX_WIDTH_OFFSET
    return [sig.abs() + offset for sig in SIG.unbind(0)]


def _profile(version: str, u: torch.Tensor, width: torch.Tensor | None) -> torch.Tensor:
    """One-dimensional factor of Φ at offsets ``u = j - q`` (v1, max, gauss)."""
    if version == "v1":
        return (1 - u.abs()).relu()
    if version == "max":
        return (width - u.abs()).relu()
    return (-0.5 * (u / width) ** 2).exp()


def _v0_profile(j: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Bilinear factor written through ``r = q - ⌊q⌋`` (gradient ±1 even at integer q)."""
    f = q.floor()
    r = q - f
    return torch.where(j == f, 1 - r, torch.zeros_like(r)) + torch.where(
        j == f + 1, r, torch.zeros_like(r)
    )


def _axis_profiles(
    weight: torch.Tensor,
    P: torch.Tensor,
    SIG: torch.Tensor | None,
    size: tuple[int, ...],
    version: str,
) -> list[torch.Tensor]:
    """Per-axis factor tables F_a of shape ``(..., m, s_a)``, ordered by kernel axis."""
    ndim = len(size)
    axes = position_axes(version, ndim)
    q = _centred(P, size)
    widths = _widths(version, SIG)
    tables: list[torch.Tensor | None] = [None] * ndim
    for i, axis in enumerate(axes):
        j = torch.arange(size[axis], device=P.device, dtype=P.dtype)
        qi = q[i].unsqueeze(-1)
        if version == "v0":
            tables[axis] = _v0_profile(j, qi)
        else:
            width = widths[i].unsqueeze(-1) if widths[i] is not None else None
            tables[axis] = _profile(version, j - qi, width)
    return tables  # type: ignore[return-value]


def construct_dense(
    weight: torch.Tensor,
    P: torch.Tensor,
    SIG: torch.Tensor | None,
    size: tuple[int, ...],
    version: str,
) -> torch.Tensor:
    """Reference: evaluate Φ(j − q_k) on the whole grid for every tap, O(m·Πs) memory."""
    ndim = len(size)
    lead = weight.ndim - 1
    phi = None
    if version == "gauss":
        # Reference form exp(-½ Σ_a u_a²/σ_a²): recover u/σ from each factor's argument.
        axes = position_axes(version, ndim)
        q = _centred(P, size)
        widths = _widths(version, SIG)
        total = None
        for i, axis in enumerate(axes):
            j = torch.arange(size[axis], device=P.device, dtype=P.dtype)
            z = ((j - q[i].unsqueeze(-1)) / widths[i].unsqueeze(-1)) ** 2
            shape = list(z.shape[:-1]) + [1] * ndim
            shape[lead + 1 + axis] = size[axis]
            z = z.reshape(shape)
            total = z if total is None else total + z
        phi = (-0.5 * total).exp()
    else:
        for axis, table in enumerate(_axis_profiles(weight, P, SIG, size, version)):
            shape = list(table.shape[:-1]) + [1] * ndim
            shape[lead + 1 + axis] = size[axis]
            factor = table.reshape(shape)
            phi = factor if phi is None else phi * factor
    grid_dims = tuple(range(lead + 1, lead + 1 + ndim))
    phi = phi.expand(*weight.shape, *size)
    if version != "v0":
        phi = phi / (phi.sum(grid_dims, keepdim=True) + NORMALIZATION_EPS)
    coef = weight.reshape(*weight.shape, *([1] * ndim))
    return (phi * coef).sum(lead)


def construct_separable(
    weight: torch.Tensor,
    P: torch.Tensor,
    SIG: torch.Tensor | None,
    size: tuple[int, ...],
    version: str,
) -> torch.Tensor:
    """Φ factorizes over axes, and so does Z = Π_a Σ_j F_a(j) + ε on a box.

    K = Σ_k (w_k / Z_k) ⊗_a F_a[k] is then a batched matrix product: O(m·Σ_a s_a) memory
    for d ≤ 2 and O(m·s_0·s_1) for d = 3, exact (no truncation).
    """
    tables = _axis_profiles(weight, P, SIG, size, version)
    coef = weight
    if version != "v0":
        mass = tables[0].sum(-1)
        for table in tables[1:]:
            mass = mass * table.sum(-1)
        coef = weight / (mass + NORMALIZATION_EPS)
    first = tables[0] * coef.unsqueeze(-1)  # (..., m, s_0)
    if len(size) == 1:
        return first.sum(-2)
    if len(size) == 3:
        first = (first.unsqueeze(-1) * tables[1].unsqueeze(-2)).flatten(-2)  # (..., m, s0*s1)
        out = first.transpose(-1, -2) @ tables[2]
    else:
        out = first.transpose(-1, -2) @ tables[1]
    return out.reshape(*weight.shape[:-1], *size)


def construct_scatter(
    weight: torch.Tensor,
    P: torch.Tensor,
    SIG: torch.Tensor | None,
    size: tuple[int, ...],
    version: str,
) -> torch.Tensor:
    """Bilinear taps touch at most 2^d grid points: scatter-add them, O(m·2^d) work and memory."""
    if version not in ("v0", "v1"):
        raise ValueError(f"the scatter construction is for versions v0/v1, got {version!r}")
    ndim = len(size)
    axes = position_axes(version, ndim)
    q = _centred(P, size)
    strides = [1] * ndim
    for a in range(ndim - 2, -1, -1):
        strides[a] = strides[a + 1] * size[a + 1]
    value = None
    index = None
    valid = None
    for i, axis in enumerate(axes):
        f = q[i].detach().floor().unsqueeze(-1)
        j = f + torch.tensor([0.0, 1.0], dtype=f.dtype, device=f.device)  # (..., m, 2)
        if version == "v0":
            r = (q[i] - q[i].floor()).unsqueeze(-1)
            factor = torch.cat([1 - r, r], dim=-1)
        else:
            factor = _profile("v1", j - q[i].unsqueeze(-1), None)
        inside = (j >= 0) & (j <= size[axis] - 1)
        j_index = j.clamp(0, size[axis] - 1).long() * strides[axis]
        shape = list(factor.shape[:-1]) + [1] * ndim
        shape[factor.ndim - 1 + i] = 2
        factor, j_index, inside = (t.reshape(shape) for t in (factor, j_index, inside))
        value = factor if value is None else value * factor
        index = j_index if index is None else index + j_index
        valid = inside if valid is None else valid & inside
    value = (value * valid).flatten(-ndim)  # (..., m, 2^d), zero outside the support
    index = index.expand(*valid.shape[:-ndim], *([2] * ndim)).flatten(-ndim)
    coef = weight
    if version == "v1":
        coef = weight / (value.sum(-1) + NORMALIZATION_EPS)
    contrib = (value * coef.unsqueeze(-1)).flatten(-2)
    index = index.flatten(-2)
    total = 1
    for s in size:
        total *= s
    out = contrib.new_zeros(*weight.shape[:-1], total)
    out = out.scatter_add(-1, index, contrib)
    return out.reshape(*weight.shape[:-1], *size)


def bilinear_support(P: torch.Tensor, size: tuple[int, ...], version: str) -> torch.Tensor:
    """Boolean mask over the support of every offset where a ``v0``/``v1`` kernel built from
    ``P`` can be non-zero or have a non-zero derivative: the 2^d corners ⌊q⌋ + {0, 1}^d."""
    ndim = len(size)
    axes = position_axes(version, ndim)
    mask = torch.zeros(size, dtype=torch.bool, device=P.device)
    corners = None
    for i, axis in enumerate(axes):
        f = (P[i].detach() + size[i] // 2).floor().reshape(-1, 1).long()
        j = torch.cat([f, f + 1], dim=1)  # (taps, 2)
        shape = [j.shape[0]] + [1] * ndim
        shape[1 + i] = 2
        j = j.reshape(shape)
        corners = corners or [None] * ndim
        corners[axis] = j
    full = torch.broadcast_tensors(*corners)
    inside = torch.ones_like(full[0], dtype=torch.bool)
    for axis in range(ndim):
        inside &= (full[axis] >= 0) & (full[axis] < size[axis])
    mask[tuple(c[inside] for c in full)] = True
    return mask


def choose_construct_method(version: str) -> str:
    """Scatter for the 2^d-tap bilinear versions, separable for the full-support ones."""
    return "scatter" if version in ("v0", "v1") else "separable"


def construct_kernel(
    weight: torch.Tensor,
    P: torch.Tensor,
    SIG: torch.Tensor | None,
    dilated_kernel_size: int | Sequence[int],
    version: str,
    *,
    method: str = "auto",
) -> torch.Tensor:
    r"""Dense DCLS kernel from weights, real positions and widths.

    .. math:: K[j] = \sum_k w_k\,\Phi(j - q_k) / Z_k,\qquad q_k = p_k + \lfloor s/2 \rfloor,

    with Φ the n-linear hat (``v0``, un-normalized, Z = 1; ``v1``), the triangle
    Π_a max(0, τ_a − |u_a|) with τ = |SIG| + 1 (``max``) or the Gaussian
    exp(−½ Σ_a u_a²/σ_a²) with σ = |SIG| + 0.27 (``gauss``), and Z = Σ_j Φ(j − q_k) + 1e-7
    over the support. Semantics and layout are those of ``dcls`` 0.1.1
    (``DCLS.construct.modules``); see :func:`position_axes` for which kernel axis each
    coordinate of ``P`` moves along.

    Args:
        weight: ``(..., m)`` tap weights (``(C_out, C_in/groups, m)`` in a layer).
        P: ``(d, ..., m)`` centred positions, ``d`` ∈ {1, 2, 3}.
        SIG: ``(d, ..., m)`` widths for ``max``/``gauss``; ``None`` for ``v0``/``v1``.
        dilated_kernel_size: support size ``s`` (int or ``d`` ints).
        version: ``"v0"``, ``"v1"``, ``"max"`` or ``"gauss"``.
        method: ``"dense"`` (reference, O(m·Πs) memory), ``"scatter"`` (``v0``/``v1`` only,
            O(m·2^d)), ``"separable"`` (exact, O(m·Σs) memory for d ≤ 2) or ``"auto"``.

    Returns:
        The kernel, shape ``(..., s_0, ..., s_{d-1})``.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls1d(2, 4, kernel_count=3, dilated_kernel_size=7, padding=3)
        >>> x = torch.randn(1, 2, 16)
        >>> kernel = di.construct_kernel(layer.weight, layer.P, layer.SIG, 7, "gauss")
        >>> kernel.shape  # a dense (out, in, 7) kernel for an ordinary convolution
        torch.Size([4, 2, 7])
    """
    size = check_construct_inputs(weight, P, SIG, dilated_kernel_size, version)
    check_one_of("method", method, CONSTRUCT_METHODS)
    if weight.dtype in (torch.bfloat16, torch.float16):
        # Positions, widths and normalizations in float32 (a bfloat16 position has 8 bits:
        # 1/64 of a cell at |P| = 4); the kernel comes back in the weights' dtype.
        wide = (weight.float(), P.float(), None if SIG is None else SIG.float())
        return construct_kernel(*wide, size, version, method=method).to(weight.dtype)
    if method == "auto":
        method = choose_construct_method(version)
    if method == "dense":
        return construct_dense(weight, P, SIG, size, version)
    if method == "separable":
        return construct_separable(weight, P, SIG, size, version)
    return construct_scatter(weight, P, SIG, size, version)
