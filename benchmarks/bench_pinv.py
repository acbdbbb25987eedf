"""pinv(method="cr") vs torch.linalg.pinv on a rank-deficient 1000×800 float64 matrix.

Run from the repository root:  diffnum bench pinv
Matrix: A = C R with C (1000 × 2r) whose last r columns repeat its first r, R Gaussian,
r = 100 (rank 100, built from rank-deficient factors). Reported: median times
(interleaved repeats), their ratio, the four relative Penrose residuals of each result, and
the distance between the two pseudoinverses.
"""

from __future__ import annotations

import torch

import diffnum.factor as df
from diffnum._bench import interleaved_times, write_results

COMMAND = "diffnum bench pinv"


def penrose(A: torch.Tensor, X: torch.Tensor) -> list[float]:
    """‖AXA − A‖/‖A‖, ‖XAX − X‖/‖X‖, ‖(AX)ᵀ − AX‖/‖AX‖, ‖(XA)ᵀ − XA‖/‖XA‖."""
    n = torch.linalg.matrix_norm
    AX, XA = A @ X, X @ A
    return [float(n(AX @ A - A) / n(A)), float(n(XA @ X - X) / n(X)),
            float(n(AX - AX.mT) / n(AX)), float(n(XA - XA.mT) / n(XA))]


def main(quick: bool = False) -> None:
    torch.set_num_threads(2)
    m, n, r = (300, 240, 30) if quick else (1000, 800, 100)
    repeats = 3 if quick else 7
    A, _ = df.synthetic_matrix(m, n, "rank_deficient", rank=r,
                               generator=torch.Generator().manual_seed(0))
    fns = {
        "diffnum.pinv(cr)": lambda: df.pinv(A, "cr"),
        "diffnum.pinv(svd)": lambda: df.pinv(A, "svd"),
        "diffnum.pinv(randomized)": lambda: df.pinv(
            A, "randomized", generator=torch.Generator().manual_seed(1)),
        "torch.linalg.pinv": lambda: torch.linalg.pinv(A),
    }
    times = interleaved_times(fns, repeats=repeats)
    reference = fns["torch.linalg.pinv"]()
    records, rows = [], []
    base = times["torch.linalg.pinv"]
    for name, fn in fns.items():
        X = fn()
        residuals = penrose(A, X)
        diff = float(torch.linalg.matrix_norm(X - reference) / torch.linalg.matrix_norm(reference))
        records.append({"method": name, "median_seconds": times[name],
                        "ratio_to_torch": times[name] / base, "penrose": residuals,
                        "relative_difference_to_torch": diff})
        rows.append([name, f"{1e3 * times[name]:.1f}", f"{times[name] / base:.3f}",
                     *(f"{x:.1e}" for x in residuals), f"{diff:.1e}"])
    notes = (f"{m}×{n} float64 of rank {r} from rank-deficient factors, 2 threads, median of "
             f"{repeats} interleaved repeats. Penrose residuals: ‖AXA−A‖/‖A‖, ‖XAX−X‖/‖X‖, "
             "‖(AX)ᵀ−AX‖/‖AX‖, ‖(XA)ᵀ−XA‖/‖XA‖.")
    write_results("pinv", COMMAND + (" --quick" if quick else ""), records,
                  ["method", "median ms", "time / torch", "AXA=A", "XAX=X", "AX sym",
                   "XA sym", "rel. diff to torch"], rows, notes)
    print("\n".join(" | ".join(map(str, row)) for row in rows))


if __name__ == "__main__":
    main()
