"""msign: Newton–Schulz (Frobenius and AOL starts) against the SVD polar factor U Vᵀ.

Run from the repository root: ``diffnum bench msign [--quick]``.
"""

from __future__ import annotations

import torch

from diffnum._bench import interleaved_times, write_results
from diffnum.factor import msign

GOAL = 3.0  # Newton–Schulz should be at least this many times faster than the SVD polar


def _svd_polar(M: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(M, full_matrices=False)
    return U @ Vh


def main(quick: bool = False) -> None:
    torch.set_num_threads(2)
    shapes = [(512, 512), (256, 1024)] if quick else [(2048, 2048), (1024, 4096)]
    repeats = 5 if quick else 7
    generator = torch.Generator().manual_seed(0)
    records, rows = [], []
    for m, n in shapes:
        M = torch.randn(m, n, generator=generator)  # float32, as Muon sees a gradient
        fns = {
            "svd": lambda M=M: _svd_polar(M),
            "newton_schulz/frobenius": lambda M=M: msign(M),
            "newton_schulz/aol": lambda M=M: msign(M, precondition="aol"),
            "newton_schulz/frobenius, bf16": lambda M=M: msign(M, compute_dtype=torch.bfloat16),
            "newton_schulz/aol 4 steps, bf16": lambda M=M: msign(
                M, steps=4, precondition="aol", compute_dtype=torch.bfloat16),
        }
        # One Gram product X Xᵀ on the smaller side: the unit the iteration's cost is made of
        # (3 per step when n/m <= 1.5), recorded so the ratio can be read against flop counts.
        X = M if m <= n else M.T
        times = interleaved_times({**fns, "gram": lambda X=X: X @ X.T}, repeats=repeats)
        records.append({"shape": [m, n], "dtype": "float32", "method": "gram X Xᵀ (unit)",
                        "seconds": times["gram"],
                        "svd_in_gram_units": times["svd"] / times["gram"]})
        rows.append([f"{m}×{n}", "one Gram product X Xᵀ (unit)", times["gram"],
                     times["svd"] / times["gram"], float("nan"), float("nan")])
        for name, fn in fns.items():
            # Singular values in float64 so the band is the output's, not the measurement's.
            sigma = torch.linalg.svdvals(fn().double())
            ratio = times["svd"] / times[name]
            record = {"shape": [m, n], "dtype": "float32", "method": name,
                      "seconds": times[name], "svd_over_method": ratio,
                      "sigma_min": float(sigma.min()), "sigma_max": float(sigma.max())}
            records.append(record)
            rows.append([f"{m}×{n}", name, times[name], ratio, record["sigma_min"],
                         record["sigma_max"]])
    notes = (
        f"Goal: Newton–Schulz (5 steps, Muon coefficients) >= {GOAL:g}× faster than the SVD "
        "polar. svd/method is the time ratio (higher is faster). The σ columns are the min/max "
        "singular value of the output: 1 for the exact polar factor, Muon's band otherwise "
        "(Gaussian inputs have σ₀ down to ~0 in the square case, below the band's range). "
        "For the 'one Gram product' row, svd/method is the SVD's time in Gram-product units. "
        "Five quintic steps on a square matrix cost 15 such products (X Xᵀ, A², B X per step), "
        "so the 3× goal needs an SVD slower than ~45 of them; for n/m > 1.5 msign iterates on "
        "the m×m Gram matrix (2m²n + 17m³ flops instead of 10m²n + 5m³). "
        "The bf16 rows run the iterations in bfloat16 (as Muon does; X₀ and the result stay "
        "float32); the last row is Turbo-Muon's setting, AOL start with one step fewer. "
        "Median of interleaved runs, torch threads = 2."
    )
    write_results(
        "msign", "diffnum bench msign" + (" --quick" if quick else ""), records,
        ["shape", "method", "seconds", "svd/method", "σ_min(out)", "σ_max(out)"], rows,
        notes=notes,
    )


if __name__ == "__main__":
    main()
