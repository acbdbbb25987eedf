"""Where the CPU-scale ``hard-constraints`` reproduction departs from the authors' released
code, as a markdown section for its report.

The authors' side is read from their JAX repository (``ASK-Berkeley/physics-NNs-hard-
constraints`` at HEAD ``0330e64``, package ``neptune/``; paths in the table are relative to
``neptune/``) and from PDEBench's diffusion–sorption generator; diffnum's side from
:mod:`diffnum.reproduce.experiments.hard_constraints` and the modules it uses. This module is
not an experiment (it defines no ``EXPERIMENT``).
"""

from __future__ import annotations

import math
from typing import Any

from diffnum._core.markdown import markdown_table

# Time step of the Navier–Stokes reference solver in ``hard_constraints._navier_stokes``.
_NS_DT = 1e-2


def _sci(value: float) -> str:
    """1e-4 rather than 0.0001 or 1e-04."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _fmt_modes(modes: Any) -> str:
    return "×".join(str(m) for m in modes) if isinstance(modes, (tuple, list)) else str(modes)


def _network_rows(ds: dict, ns: dict) -> list[list[str]]:
    """Rows: the basis networks."""
    return [
        ["basis network, DS",
         "FNO2D: 5 Fourier layers, width 32→64, modes 8×8, GELU on output; "
         "input (t/T, x/x_max, u₀); N = 16 (`models/fno2d.py`)",
         f"FNO: width {ds['width']}, modes {_fmt_modes(ds['modes'])}, depth {ds['depth']}, "
         f"zero-padding {ds['padding']}; input u₀ + grid indices/n; linear output; "
         f"N = {ds['n_basis']}",
         "CPU scale; padding because x and t are not periodic; output bias frozen "
         "(elimination cancels it)"],
        ["basis network, NS",
         "FNO3D: 8 layers, width 64, modes 8×8×8, GELU on output; input raw (t, x, y, ω₀); "
         "N = 64 (`models/fno3d.py`)",
         f"FNO: width {ns['width']}, modes {_fmt_modes(ns['modes'])}, depth {ns['depth']}, "
         f"padding {ns['padding']}; input ω₀, its rate ∂ₜω(t₀) = −(v₀·∇ω₀ − νΔω₀) + grid "
         f"indices/n; linear output; N = {ns['n_basis']}",
         "CPU scale (grid and step budget far smaller); at this size the FNO does not form "
         "the advection product from ω₀ alone (the report's \"u₀ input only\" rows)"],
    ]


def _condition_rows(ds: dict, ns: dict) -> list[list[str]]:
    """Rows: initial and boundary conditions, collocation."""
    return [
        ["IC/BC, DS",
         "Rows in the LM problem: relative IC (Φw − u₀)/u₀ (repeated nt× in PI-HC), "
         "left/right BC rows from t₁ (`pdes/diffusion_sorption.py`)",
         "Eliminated: u = u_p + B̃w, B̃ = B − B(·, t₀) with ends imposed; exact for every w "
         "(`constraints=\"rows\"` keeps the paper's form)",
         "With N ≪ number of rows, rows hold only in least squares; elimination makes them "
         "exact"],
        ["corner (t₀, x = 0), DS",
         "IC rows own the corner (BC rows skip t₀); training loss's left-BC term includes t₀",
         "Boundary conditions hold from t₀ on; u₀ imposed on the open interval; u_p carries "
         "the erfc layers the two corners drive in (κ = D/R(1))",
         "As the boundary faces of our finite-volume reference; no contradictory conditions "
         "at one point"],
        ["IC, NS",
         "Ansatz ω₀ + Σ cᵢ·(0.005·t/T·bᵢ − spatial mean); total's spatial mean removed "
         "(`models/sequential.py`)",
         "Eliminated: ω = ω₀ + (B − B(·, t₀))w; no mollifier, no mean subtraction",
         "Same exact IC through the lift shared by all PDEs"],
        ["collocation",
         "M = 20000 per expert, redrawn every call, anywhere on the (sub)grid incl. t = 0 "
         "and boundary columns (`geometry/mask.py`)",
         f"M = {ds['n_sampled']} (DS) / {ns['n_sampled']} (NS) in total, M/K per expert, "
         "redrawn every call; NS every point, t₀ included; DS not t₀ and not the ends",
         "CPU scale; DS's corners are incompatible (u_t unbounded at t₀) and its ends carry "
         "the BCs; left out on NS, t₀ let PI-HC jump from ω₀ to 0.68 of its norm at t₁"],
    ]


def _solver_rows(hard: Any, pde_weight: float, t_end: float) -> list[list[str]]:
    """Rows: the constrained solve and its gradient."""
    return [
        ["LM solver",
         "DS: optimistix rtol = atol = 1e-4; NS: jaxopt tol 1e-4; 100 iterations "
         "(paper: 50; NS 1e-7) (`models/constraints/`)",
         f"Own LM (Marquardt scaling, λ₀ = 1e-3), rtol = atol = 1e-8 (float64), "
         f"≤ {hard.max_solver_steps} iterations",
         "A tight optimum so the implicit gradient is accurate; iteration cap as the "
         "paper's text"],
        ["initial guess, ridge",
         "w₀ = ones (DS), zeros (NS); ridge rows 1e-4·w",
         f"w₀ = 0 for both; ridge rows {_sci(hard.ridge)}·w",
         "Ridge the same; one initial guess for both PDEs"],
        ["gradient through the solve",
         "Implicit: optimistix ImplicitAdjoint (DS), jaxopt implicit_diff (NS)",
         "Implicit adjoint with the exact Hessian of ½‖r‖² (second-order term kept)",
         "Residual at w* is not zero, so the Gauss–Newton Hessian alone would be inexact"],
        ["NS residual in LM",
         "Rows are r² (squared before LM squares them): LM minimises Σr⁴ "
         "(`pdes/navier_stokes_2d.py`)",
         "Rows are r: LM minimises Σr² + λ²‖w‖²",
         "Least squares of the residual itself, as the loss; Σr⁴ has a vanishing Jacobian "
         "near r = 0"],
        ["DS residual scale",
         "Raw seconds (dt = 5 s), weight 1; right-BC u_x on normalised x",
         f"PDE rows ×T and loss ×T² (τ = t/T, T = {t_end:g}; pde_weight "
         f"{pde_weight:g})",
         "PDE rows of order one next to the ridge and the condition terms"],
    ]


def _discretization_rows(ds: dict, ns: dict, t_end: float) -> list[list[str]]:
    """Rows: derivatives, PDE constants and grids."""
    ns_t_end = _NS_DT * (ns["steps_ref"] // (ns["nt"] - 1)) * (ns["nt"] - 1)
    return [
        ["derivatives, DS",
         "FD: central first derivative; u_xx = that operator twice (2Δx stencil); first-order "
         "ends (`pdes/finite_differences.py`)",
         "Second-order FD: 3-point u_xx, second-order one-sided ends and u_t",
         "Compact stencil, same order at the ends as inside"],
        ["derivatives, NS",
         "Spectral velocity; ω_x, ω_y, Δω by jnp.gradient (non-periodic, wide Laplacian); "
         "no de-aliasing",
         "Spectral x, y derivatives and velocity; 2/3-rule de-aliasing of advection inputs; "
         "4th-order FD ω_t",
         "Periodic box; matches our pseudo-spectral reference, whose own residual then stays "
         "small"],
        ["PDE and grid, DS",
         "D = 5e-4, φ = 0.29, ρ_s = 2880, k_f = 3.5e-4, n_f = 0.874; 1024 cell centres × "
         "101 t, T = 500 s",
         f"Same constants; {ds['nx']} nodes x = j/(nx−1), ends included, × {ds['nt']} t, "
         f"T = {t_end:g}; reference on {ds['cells']} cells",
         "CPU scale; nodes at x = 0 and 1 so the BCs act on the boundary"],
        ["PDE and grid, NS",
         "Re = 1e4 (ν = 1e-4), no forcing, [0, 1)², 64 × 64 × 64, T = 5; test at 256²",
         f"ν = 1e-3, no forcing, [0, 2π)², {ns['n']}² × {ns['nt']} t, T = {ns_t_end:g}",
         "CPU scale: a coarse grid resolves only stronger viscosity and a short horizon"],
        ["right-boundary sign, DS",
         "u − D·u_x = 0 (+D, as both papers); PDEBench's generator uses −D",
         "u(1) = −D·u_x(1) (cauchy_sign = −1) in solve, elimination and loss",
         "+D is ill posed (boundary mode e^{(x−1)/D}); −D matches the generator and our "
         "solver"],
    ]


def _training_rows(ds: dict, ns: dict, cfgs: tuple[list, list],
                   grf: tuple[float, float]) -> list[list[str]]:
    """Rows: loss, optimiser, mixture split, evaluation and data."""
    ds_cfg, ns_cfg = cfgs
    hard = ds_cfg[1]
    ds_experts = math.prod(ds_cfg[2].experts)
    ns_experts = math.prod(ns_cfg[2].experts)
    batch_text = "/".join(str(b) for b in sorted({c.batch_size for c in ds_cfg + ns_cfg}))
    clip = "none" if hard.clip is None else f"{hard.clip:g}"
    return [
        ["training loss",
         "Sum of L2 norms (not squared): PDE on full grid; DS adds relative IC, left BC, right "
         "BC vs data; NS PDE only (`trainers/train_utils.py`)",
         "Weighted mean squares: PDE where collocated, IC and BC residuals (right: Cauchy "
         "row); no data term",
         "Physics-only throughout; the authors' right-BC term uses the ground truth"],
        ["optimiser, schedule",
         "Adam, clip 1; DS lr 1e-3 halved/800 steps (≥ 1e-4), 4050 steps, batch 6; NS "
         "exponential decay, ~20000 steps, batch 4",
         f"Adam lr {_sci(hard.lr)} (DS) / {_sci(ns_cfg[0].lr)} (NS) constant, clip {clip}, "
         f"{ds['steps']} (DS) / {ns['steps']} (NS) "
         f"steps, batch {batch_text}",
         "CPU budget; runs this short are under-trained, so a decay costs accuracy "
         "(NS quick, cosine from 1e-3: PI-SC 0.32 → 0.42); NS's rate from a sweep (see code)"],
        ["MoE split",
         "DS 1 × 4 (x), NS 1 × 2 × 2; M = 20000 each; DS experts all get global IC/BC rows",
         f"DS {ds_experts} blocks in x, NS {ns_experts} quadrants; conditions eliminated on "
         "every block",
         "Same splits; elimination makes routing condition rows unnecessary"],
        ["evaluation",
         "‖pred − true‖/‖true‖ pooled per batch, mean ± std over batches; full grid incl. "
         "t = 0 (`trainers/trainer.py`)",
         f"Per-sample relative L2, mean ± std over {ds['n_test']} (DS) / {ns['n_test']} (NS) "
         "held-out u₀; incl. t₀",
         "Independent of batch size; the spread is over samples"],
        ["data",
         "PDEBench DS (8000 train / 1000 test); NS 4000 GRF trajectories, 100 test at 256² "
         "(no generator in repo)",
         f"Generated: DS FV + BDF, u₀ ~ U(0, 0.2); NS pseudo-spectral, GRF α = {grf[0]:g}, "
         f"τ = {grf[1]:g}; {ds['n_train']} (DS) / {ns['n_train']} (NS) training u₀",
         "Offline CPU scale; references consistent with our discretisations"],
    ]


def authors_mapping(sizes: dict) -> str:
    """A markdown section: an intro sentence, a table ``aspect | authors' code (file) |
    diffnum here | why it differs`` for diffusion–sorption (DS) and Navier–Stokes (NS), and
    the paper's reported errors in one closing sentence.

    ``sizes`` is the dict of ``hard_constraints._sizes(quick)``; diffnum's grids, step counts,
    N and M are read from it, and the training settings (batch, learning rate, clipping,
    ridge, LM iteration limit) from ``hard_constraints._configs``, so the table describes the
    run it accompanies.
    """
    # Imported here: hard_constraints may import this module to build its report.
    from diffnum.reproduce.experiments.hard_constraints import (
        GRF_ALPHA,
        GRF_TAU,
        T_END,
        _configs,
    )

    ds, ns = sizes["ds"], sizes["ns"]
    ds_cfg, ns_cfg = _configs("ds", ds, 0), _configs("ns", ns, 0)
    rows = (_network_rows(ds, ns) + _condition_rows(ds, ns)
            + _solver_rows(ds_cfg[1], ds_cfg[0].pde_weight, T_END)
            + _discretization_rows(ds, ns, T_END)
            + _training_rows(ds, ns, (ds_cfg, ns_cfg), (GRF_ALPHA, GRF_TAU)))
    intro = ("How this CPU-scale run differs from the authors' released JAX code "
             "(ASK-Berkeley/physics-NNs-hard-constraints at 0330e64, files under `neptune/`) "
             "and from PDEBench's diffusion–sorption generator:")
    closing = ("For reference, the paper reports relative L2 errors of 85.93 %, 7.55 % and "
               "3.60 % on diffusion–sorption and 18.08 %, 11.75 % and 8.30 % on "
               "Navier–Stokes for PI-SC, PI-HC and PI-HC-MoE, at the full scale above.")
    table = markdown_table(["aspect", "authors' code (file)", "diffnum here", "why it differs"],
                           rows)
    return "\n".join([intro, "", table, "", closing])
