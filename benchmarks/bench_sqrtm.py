"""sqrtm: each method's forward+backward against the eigh reference, forward against scipy.

Run from the repository root: ``diffnum bench sqrtm [--quick]``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg
import torch

from diffnum._bench import interleaved_times, write_results
from diffnum.factor import sqrtm

METHODS = ("newton_schulz", "taylor", "pade", "eigh")


def _spd(n: int, kappa: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    lam = torch.logspace(0, math.log10(kappa), n, dtype=torch.float64)
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


def _forward_backward(A: torch.Tensor, W: torch.Tensor, method: str):
    def run():
        x = A.detach().requires_grad_(True)
        (sqrtm(x, method) * W).sum().backward()
        return x.grad
    return run


def main(quick: bool = False) -> None:
    torch.set_num_threads(2)
    n, kappa = (128, 100.0) if quick else (512, 100.0)
    repeats = 5
    A = _spd(n, kappa, seed=0)
    W = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reference = sqrtm(A, "eigh")
    reference_grad = _forward_backward(A, W, "eigh")()

    records, rows = [], []
    with warnings.catch_warnings():
        # Non-convergence warnings are recorded once below, not repeated for every timing run.
        warnings.simplefilter("ignore", RuntimeWarning)
        backward_times = interleaved_times(
            {m: _forward_backward(A, W, m) for m in METHODS}, repeats=repeats)
        forward = {m: (lambda m=m: sqrtm(A, m)) for m in METHODS}
        forward["scipy"] = lambda: scipy.linalg.sqrtm(A.numpy())
        forward_times = interleaved_times(forward, repeats=repeats)

    scipy_error = float(np.linalg.norm(np.real(scipy.linalg.sqrtm(A.numpy())) - reference.numpy())
                        / float(reference.norm()))
    for method in METHODS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            S = sqrtm(A, method)
        error = float((S - reference).norm() / reference.norm())
        grad_error = float((_forward_backward(A, W, method)() - reference_grad).norm()
                           / reference_grad.norm())
        record = {
            "method": method, "n": n, "condition_number": kappa, "dtype": "float64",
            "forward_backward_seconds": backward_times[method],
            "forward_backward_over_eigh": backward_times[method] / backward_times["eigh"],
            "forward_seconds": forward_times[method],
            "forward_over_scipy": forward_times[method] / forward_times["scipy"],
            "relative_error_vs_eigh": error, "gradient_relative_error_vs_eigh": grad_error,
            "warned": bool(caught),
        }
        records.append(record)
        rows.append([method, backward_times[method], record["forward_backward_over_eigh"],
                     forward_times[method], record["forward_over_scipy"], error, grad_error,
                     "yes" if caught else "no"])
    records.append({"method": "scipy.linalg.sqrtm", "n": n, "forward_seconds":
                    forward_times["scipy"], "relative_error_vs_eigh": scipy_error})
    rows.append(["scipy.linalg.sqrtm (forward only)", float("nan"), float("nan"),
                 forward_times["scipy"], 1.0, scipy_error, float("nan"), "-"])
    notes = (
        f"A: {n}×{n} float64 SPD, eigenvalues geometric in [1, {kappa:g}]; loss ⟨W, A^(1/2)⟩ "
        "with Gaussian W. Ratios are time(method)/time(reference): below 1 is faster. "
        "Default steps per method (Newton–Schulz adaptive, Taylor adaptive up to 200 terms, "
        "Padé m = 32); 'warned' means the method's own residual check reported "
        "non-convergence (Taylor and Padé converge like (1 − λ_min/‖A‖_F)^k, see the sqrtm "
        "docstring). Every method's backward is the same eigenbasis Lyapunov solve, so the "
        "gradient error mirrors the forward error. Median of interleaved runs, 2 threads."
    )
    write_results(
        "sqrtm", "diffnum bench sqrtm" + (" --quick" if quick else ""), records,
        ["method", "fwd+bwd s", "/eigh", "fwd s", "/scipy", "rel. err", "grad rel. err",
         "warned"], rows, notes=notes,
    )


if __name__ == "__main__":
    main()
