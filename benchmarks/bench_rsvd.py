"""rsvd vs torch.svd_lowrank: same k, oversampling and power iterations, 2048×2048 float32.

Run from the repository root:  diffnum bench rsvd
Matrix: U diag(0.9^i) Vᵀ with Haar U, V; k = 64, oversample = 10, power_iters = 2.
Reported: median time of each (interleaved repeats), their ratio, and the Frobenius error
divided by the Eckart–Young optimum ‖A − A_k‖_F = (Σ_{i>k} σ_i²)^½.
"""

from __future__ import annotations

import torch

import diffnum.factor as df
from diffnum._bench import interleaved_times, median_time, write_results

COMMAND = "diffnum bench rsvd"


def _error_ratio(A, U, S, Vh, k, optimum):
    U, S, Vh = U[..., :k], S[..., :k], Vh[..., :k, :]
    return float(torch.linalg.matrix_norm(A - (U * S) @ Vh) / optimum)


def main(quick: bool = False) -> None:
    torch.set_num_threads(2)
    n, k, p, q = (512, 32, 10, 2) if quick else (2048, 64, 10, 2)
    repeats = 3 if quick else 11
    A, sigma = df.synthetic_matrix(n, n, "geometric", decay=0.9, dtype=torch.float32,
                                   generator=torch.Generator().manual_seed(0))
    optimum = sigma[k:].double().norm()
    seeds = iter(range(10**6))

    def ours():
        return df.rsvd(A, k, oversample=p, power_iters=q,
                       generator=torch.Generator().manual_seed(next(seeds)))

    def theirs():
        torch.manual_seed(next(seeds))
        U, S, V = torch.svd_lowrank(A, q=k + p, niter=q)
        return U, S, V.mT

    times = interleaved_times({"diffnum.rsvd": ours, "torch.svd_lowrank": theirs},
                              repeats=repeats)
    errors = {"diffnum.rsvd": [], "torch.svd_lowrank": []}
    for _ in range(5):
        errors["diffnum.rsvd"].append(_error_ratio(A, *ours(), k, optimum))
        errors["torch.svd_lowrank"].append(_error_ratio(A, *theirs(), k, optimum))
    full_svd = median_time(lambda: torch.linalg.svd(A, full_matrices=False),
                           repeats=1, warmup=0)  # ~1 s a call: once is enough
    ratio = times["diffnum.rsvd"] / times["torch.svd_lowrank"]
    records = [{"method": name, "median_seconds": times[name],
                "error_over_eckart_young_max": max(errors[name]),
                "error_over_eckart_young_all": errors[name]} for name in times]
    records.append({"method": "torch.linalg.svd (full, once)", "median_seconds": full_svd})
    records.append({"ratio_time_diffnum_over_torch": ratio, "n": n, "k": k,
                    "oversample": p, "power_iters": q, "repeats": repeats})
    rows = [[name, f"{1e3 * times[name]:.1f}", f"{max(errors[name]):.4f}"] for name in times]
    rows.append(["torch.linalg.svd (full)", f"{1e3 * full_svd:.0f}", "1.0000"])
    notes = (f"{n}×{n} float32, σ_i = 0.9^i, k = {k}, oversample = {p}, power iterations = {q}, "
             f"2 threads, median of {repeats} interleaved repeats.\n\n"
             f"**Time ratio diffnum / torch.svd_lowrank = {ratio:.3f}** "
             "(goal ≤ 1.0 with error ≤ 1.01 × Eckart–Young).")
    write_results("rsvd", COMMAND + (" --quick" if quick else ""), records,
                  ["method", "median ms", "max error / Eckart–Young (5 draws)"], rows, notes)
    print(notes)


if __name__ == "__main__":
    main()
