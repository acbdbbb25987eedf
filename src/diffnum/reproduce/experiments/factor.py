"""Meta-factorization: every recipe from one engine, error vs k, the Newton–Schulz map."""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable

import torch

import diffnum.factor as df
from diffnum._core.markdown import markdown_table
from diffnum.reproduce._harness import Context, Experiment, Section
from diffnum.reproduce._plot import pyplot

FAMILIES = {
    "exact low rank": dict(kind="low_rank"),
    "geometric decay (0.9^i)": dict(kind="geometric", decay=0.9),
    "algebraic decay (i^-1)": dict(kind="algebraic", decay=1.0),
    "rank deficient (C R)": dict(kind="rank_deficient"),
}
SELECTIONS = ("uniform", "leverage", "pivoted_qr", "deim", "spa")


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return dict(m=300, n=200, k=20, repeats=3, kmax=60)
    return dict(m=1200, n=800, k=50, repeats=5, kmax=200)


def _recipes(gen: Callable[[], torch.Generator]) -> dict[str, Callable]:
    def rsvd_fac(A, k):
        U, S, Vh = df.rsvd(A, k, power_iters=2, generator=gen())
        return (U * S.unsqueeze(-2)) @ Vh

    return {
        "svd": lambda A, k: df.svd(A, k).reconstruct(),
        "rsvd (q=2)": rsvd_fac,
        "cpqr": lambda A, k: df.cpqr(A, k).reconstruct(),
        "utv (svd core)": lambda A, k: df.utv(A, k, core="svd").reconstruct(),
        "nystrom (l=1.5k)": lambda A, k: df.nystrom(A, k, generator=gen()).reconstruct(),
        "cur optimal (pivoted QR)": lambda A, k: df.cur(A, k).reconstruct(),
        "cur cross (DEIM)": lambda A, k: df.cur(A, k, select="deim", core="cross").reconstruct(),
        "cr (k = rank only)": lambda A, k: df.cr(A).reconstruct(),
    }


def _relative_error(A: torch.Tensor, approx: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(A - approx) / torch.linalg.matrix_norm(A))


def _recipe_table(ctx: Context, sizes: dict[str, int]) -> tuple[str, dict]:
    m, n, k = sizes["m"], sizes["n"], sizes["k"]
    counter = iter(range(10**6))
    recipes = _recipes(lambda: ctx.generator(100 + next(counter)))
    results: dict[str, dict[str, dict[str, float]]] = {}
    jobs = [(f, r) for f in FAMILIES for r in recipes]
    for family, recipe in ctx.progress(jobs, desc="factor: recipes x families"):
        spec = FAMILIES[family]
        A, sigma = df.synthetic_matrix(m, n, rank=k if "rank" in spec["kind"] else None,
                                       generator=ctx.generator(7), **spec)
        exact = spec["kind"] in ("low_rank", "rank_deficient")
        if recipe.startswith("cr") and not exact:
            results.setdefault(recipe, {})[family] = {"error": float("nan"),
                                                      "seconds": float("nan")}
            continue
        fn = recipes[recipe]
        times, err = [], float("nan")
        for _ in range(sizes["repeats"]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", df.RankDeficiencyWarning)
                start = time.perf_counter()
                approx = fn(A, k)
                times.append(time.perf_counter() - start)
            err = _relative_error(A, approx)
        optimal = float(sigma[k:].norm() / sigma.norm())
        results.setdefault(recipe, {})[family] = {
            "error": err, "eckart_young": optimal, "seconds": statistics.median(times)}
    return _format_table(results), results


def _missing(value: float | None) -> bool:
    """NaN in memory, null once stored in results.json."""
    return value is None or value != value


def _format_table(results: dict) -> str:
    """Recipe × family cells "error (time)", and the Eckart–Young row."""
    rows = []
    for recipe, per_family in results.items():
        row = [recipe]
        for family in FAMILIES:
            cell = per_family[family]
            if _missing(cell["error"]):
                row.append("—")
            else:
                row.append(f"{cell['error']:.2e} ({1e3 * cell['seconds']:.1f} ms)")
        rows.append(row)
    rows.append(["*Eckart–Young bound*",
                 *[f"{results['svd'][family]['eckart_young']:.2e}" for family in FAMILIES]])
    return markdown_table(["recipe", *FAMILIES], rows)


def _error_vs_k(ctx: Context, sizes: dict[str, int]) -> tuple[dict, str | None]:
    m, n, kmax = sizes["m"], sizes["n"], sizes["kmax"]
    A, sigma = df.synthetic_matrix(m, n, "algebraic", decay=1.0, generator=ctx.generator(11))
    ks = sorted({max(1, round(kmax * f)) for f in (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)})
    norm_a = float(torch.linalg.matrix_norm(A))
    curves: dict[str, list[float]] = {"Eckart–Young": [float(sigma[k:].norm()) / norm_a
                                                      for k in ks]}
    seeds = range(sizes["repeats"])

    def median_over_seeds(fn: Callable[[int, int], torch.Tensor], k: int) -> float:
        return statistics.median(_relative_error(A, fn(k, s)) for s in seeds)

    methods: dict[str, Callable[[int, int], torch.Tensor]] = {
        "truncated SVD": lambda k, s: df.svd(A, k).reconstruct(),
    }
    for q in (0, 1, 2):
        def rsvd_q(k, s, q=q):
            U, S, Vh = df.rsvd(A, k, power_iters=q, generator=ctx.generator(1000 + s))
            return (U * S.unsqueeze(-2)) @ Vh
        methods[f"rsvd q={q}"] = rsvd_q
    methods["Nyström ℓ=1.5k"] = lambda k, s: df.nystrom(
        A, k, generator=ctx.generator(2000 + s)).reconstruct()
    for rule in SELECTIONS:
        methods[f"CUR ({rule})"] = lambda k, s, rule=rule: df.cur(
            A, k, select=rule, generator=ctx.generator(3000 + s)).reconstruct()
    jobs = [(name, k) for name in methods for k in ks]
    for name, k in ctx.progress(jobs, desc="factor: error vs k"):
        deterministic = name == "truncated SVD" or name in ("CUR (pivoted_qr)", "CUR (deim)",
                                                            "CUR (spa)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", df.RankDeficiencyWarning)
            err = (_relative_error(A, methods[name](k, 0)) if deterministic
                   else median_over_seeds(methods[name], k))
        curves.setdefault(name, []).append(err)
    plt = pyplot()
    figure = None
    if plt is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        # Several recipes sit on the Eckart–Young curve or on each other: every curve gets
        # its own marker and dash pattern, so each legend entry stays visible where they meet.
        markers = "osv^D<>ph*xP+"
        dashes = ("-", "--", "-.", ":")
        for i, (name, values) in enumerate(curves.items()):
            style = (dict(color="black", linewidth=3, alpha=0.35, zorder=0)
                     if name == "Eckart–Young" else
                     dict(marker=markers[i % len(markers)], markersize=4,
                          linestyle=dashes[i % len(dashes)], linewidth=1.2))
            ax.semilogy(ks, values, label=name, **style)
        ax.set_xlabel("$k$")
        ax.set_ylabel(r"$\|A - A_k\|_F \,/\, \|A\|_F$")
        ax.set_title(f"Error vs $k$, {m}×{n}, $\\sigma_i = 1/i$ (median of {len(seeds)} seeds)")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = ctx.figure_path("factor_error_vs_k.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        figure = str(path.relative_to(ctx.out))
    return {"k": ks, "curves": curves}, figure


def _newton_schulz_map(ctx: Context) -> tuple[dict, str | None]:
    n = 256
    sigma_in = torch.logspace(-3, 0, n, dtype=torch.float64)
    g = ctx.generator(21)
    U = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g)).Q
    V = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g)).Q
    M = (U * sigma_in) @ V.mT
    data: dict[str, dict[int, list[float]]] = {}
    for precondition in ("frobenius", "aol"):
        data[precondition] = {}
        for steps in range(1, 6):
            # The map deliberately probes σ below the accuracy band, where msign warns.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", df.RankDeficiencyWarning)
                out = df.msign(M, steps=steps, precondition=precondition)
            # The gain uᵢᵀ X vᵢ along M's own singular directions: exactly p^{∘K}(σᵢ/‖M‖_F)
            # for the Frobenius start, and what an update built from M does to them for AOL.
            data[precondition][steps] = (U.mT @ out @ V).diagonal().tolist()
    useful = sigma_in >= 1e-2
    band = {p: {"min": min(x for x, u in zip(v[5], useful) if u),
                "max": max(x for x, u in zip(v[5], useful) if u)} for p, v in data.items()}
    plt = pyplot()
    figure = None
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
        for ax, precondition in zip(axes, ("frobenius", "aol")):
            for steps, values in data[precondition].items():
                ax.semilogx(sigma_in.tolist(), values, label=f"{steps} step(s)")
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_title(f"X₀ by {precondition}")
            ax.set_xlabel(r"$\sigma_i$ of $M$")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel(r"$u_i^\top \, \mathrm{msign}(M) \, v_i$")
        axes[1].legend(fontsize=8)
        fig.suptitle("Newton–Schulz (Muon quintic) singular-value map, 256×256")
        fig.tight_layout()
        path = ctx.figure_path("factor_newton_schulz_map.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        figure = str(path.relative_to(ctx.out))
    # The smallest σ whose gain reaches 1/2 (from there on up it stays above), per start and
    # step count: how far down each start lifts singular values.
    reach = {p: {k: next((float(x) for i, x in enumerate(sigma_in.tolist())
                          if min(v[k][i:]) >= 0.5), None) for k in v} for p, v in data.items()}
    return {"sigma_in": sigma_in.tolist(), "sigma_out": data, "band_after_5": band,
            "reach_half": reach}, figure


def _summarize(table: dict) -> str:
    """Sentences computed from the table: worst exact-rank error, ratios to Eckart–Young."""
    exact = [cell["error"] for per in table.values() for fam, cell in per.items()
             if ("low rank" in fam or "deficient" in fam) and not _missing(cell["error"])]
    rows = []
    for recipe, per in table.items():
        ratios = [per[f]["error"] / per[f]["eckart_young"] for f in FAMILIES
                  if "decay" in f and not _missing(per[f]["error"])]
        if ratios:
            rows.append([recipe, *ratios])
    decays = [f for f in FAMILIES if "decay" in f]
    return (f"At k = rank the largest relative error of any recipe is {max(exact):.1e}. "
            "Below the rank, error divided by the Eckart–Young bound:\n\n"
            + markdown_table(["recipe", *decays], rows))


def _reach_sentence(reach: dict[str, dict[int, float | None]]) -> str:
    """How far down each start lifts σ to a gain of 1/2, and whether the AOL start with one
    step fewer reaches as far as the Frobenius start (Turbo-Muon's premise)."""
    def at(p: str, k: int) -> str:
        x = reach[p][k]
        return "no σ in range" if x is None else f"σ ≥ {x:.2g}"

    f5, a4 = reach["frobenius"][5], reach["aol"][4]
    verdict = ("the AOL start with one step fewer lifts at least as small a σ — Turbo-Muon's "
               "premise holds here" if f5 is not None and a4 is not None and a4 <= f5
               else "the AOL start with one step fewer does not reach as far here")
    return (f"A gain of 1/2 is reached from {at('frobenius', 5)} after 5 steps from "
            f"X₀ = M/‖M‖_F, and from the AOL start from {at('aol', 4)} after 4 steps "
            f"({at('aol', 5)} after 5): {verdict}.")


def run(ctx: Context) -> Section:
    """Recipe × family table, error-vs-k curves and the Newton–Schulz singular-value map."""
    sizes = _sizes(ctx.quick)
    table, table_results = _recipe_table(ctx, sizes)
    curves, curve_fig = _error_vs_k(ctx, sizes)
    ns, ns_fig = _newton_schulz_map(ctx)
    m, n, k = sizes["m"], sizes["n"], sizes["k"]
    band = ns["band_after_5"]
    summary = _summarize(table_results)
    text = f"""
Every recipe below except `rsvd` (a sketch plus a small SVD, shown for comparison) is one
call of the same engine (`meta_factorize`): the projector equation gives Yᵀ and X from the
test matrices, the reconstruction equation the core G.
Matrices are {m}×{n} float64 with Haar-random singular vectors; k = {k} (the exact rank
for the low-rank families). Cells: relative Frobenius error ‖A − F G Hᵀ‖/‖A‖ and the
median time of {sizes['repeats']} runs. CR applies only where the rank is exact.

{table}

{summary}

**Error vs k** (σ_i = 1/i, {m}×{n}): truncated SVD, randomized SVD with q = 0, 1, 2
power iterations, generalized Nyström (ℓ = 1.5k) and CUR with each selection rule, against
the Eckart–Young bound.

**Newton–Schulz map**: for M = U diag(σ) Vᵀ (256×256, σ log-spaced in [1e-3, 1]) the
gain uᵢᵀ msign(M, K) vᵢ along each singular direction after K = 1…5 Muon quintic steps.
For σ ≥ 1e-2 the gain after 5 steps lies in
[{band['frobenius']['min']:.3f}, {band['frobenius']['max']:.3f}] from X₀ = M/‖M‖_F and in
[{band['aol']['min']:.3f}, {band['aol']['max']:.3f}] from the AOL-scaled X₀ = diag(s)M.
{_reach_sentence(ns["reach_half"])} Note msign(diag(s)M) ≠ msign(M).
"""
    results = {"sizes": sizes, "table": table_results, "error_vs_k": curves,
               "newton_schulz": {"band_after_5": band}}
    figures = tuple(f for f in (curve_fig, ns_fig) if f)
    return Section(title="Meta-factorization (factor)", markdown=text, results=results,
                   figures=figures, summary_table=table)


def readme(results: dict, mode: str) -> str:
    """The README block: the recipe × family table and the ratios to Eckart–Young, from the
    stored results."""
    sizes = results["sizes"]
    command = "diffnum reproduce factor" + (" --quick" if mode == "quick" else "")
    return "\n".join([
        f"**Meta-factorization** (`{command}`, seed 0) — relative error ‖A − FGHᵀ‖/‖A‖ (and "
        f"median time), {sizes['m']}×{sizes['n']} float64, k = {sizes['k']} (= the rank for "
        "the exact families):", "",
        _format_table(results["table"]), "",
        _summarize(results["table"])])


EXPERIMENT = Experiment(name="factor", title="Meta-factorization", run=run, order=10,
                        readme=readme)
