"""least_squares: batched Levenberg–Marquardt against a scipy.optimize.least_squares loop.

32 problems, M = 4096 residuals, N = 16 unknowns, float64:
r(w) = tanh(Bw)·(1 + 0.1·(Bw)²) − y, B ~ N(0, 1/N), y from a random w plus 1 % noise.
scipy runs ``method="lm"`` (MINPACK) once per problem, with the analytic Jacobian and with
finite differences; diffnum solves all 32 at once, with the same analytic Jacobian and with
its forward-mode autodiff Jacobian.

Run from the repository root: ``diffnum bench least_squares [--quick]``.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.optimize
import torch

from diffnum._bench import interleaved_times, write_results
from diffnum.solve import LevenbergMarquardt, least_squares

GOAL = 5.0  # batched LM (analytic Jacobian) vs the scipy loop (analytic Jacobian)
TOL = 1e-8  # scipy's default ftol = xtol = gtol; diffnum's rtol = atol


def _problem(batch: int, m: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(batch, m, n, dtype=torch.float64, generator=g) / n**0.5
    w_true = torch.randn(batch, n, dtype=torch.float64, generator=g)
    z = (B @ w_true.unsqueeze(-1)).squeeze(-1)
    y = torch.tanh(z) * (1 + 0.1 * z * z) + 0.01 * torch.randn(batch, m, dtype=torch.float64,
                                                                generator=g)
    return B, y


def _residual(w: torch.Tensor, B: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = (B @ w.unsqueeze(-1)).squeeze(-1)
    return torch.tanh(z) * (1 + 0.1 * z * z) - y


def _jacobian(w: torch.Tensor, B: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = (B @ w.unsqueeze(-1)).squeeze(-1)
    t = torch.tanh(z)
    return ((1 - t * t) * (1 + 0.1 * z * z) + 0.2 * t * z).unsqueeze(-1) * B


def _scipy_loop(B: np.ndarray, y: np.ndarray, analytic: bool) -> np.ndarray:
    """Solve each problem with MINPACK LM; returns the final residual norms."""
    norms = []
    for b, target in zip(B, y):
        def fun(w, b=b, target=target):
            z = b @ w
            return np.tanh(z) * (1 + 0.1 * z * z) - target

        def jac(w, b=b):
            z = b @ w
            t = np.tanh(z)
            return ((1 - t * t) * (1 + 0.1 * z * z) + 0.2 * t * z)[:, None] * b

        result = scipy.optimize.least_squares(fun, np.zeros(b.shape[1]),
                                              jac=jac if analytic else "2-point", method="lm",
                                              ftol=TOL, xtol=TOL, gtol=TOL)
        norms.append(np.linalg.norm(result.fun))
    return np.asarray(norms)


def main(quick: bool = False) -> None:
    torch.set_num_threads(2)
    batch, m, n = (8, 4096, 16) if quick else (32, 4096, 16)
    repeats = 3 if quick else 7
    B, y = _problem(batch, m, n)
    B_np, y_np = B.numpy(), y.numpy()
    w0 = torch.zeros(batch, n, dtype=torch.float64)
    solver = LevenbergMarquardt(rtol=TOL, atol=TOL)
    outputs: dict[str, np.ndarray] = {}
    solutions = {}

    def run_diffnum(jacobian, threads: int = 2):
        def run():
            torch.set_num_threads(threads)
            try:
                sol = least_squares(_residual, w0, (B, y), solver=solver, jacobian=jacobian)
            finally:
                torch.set_num_threads(2)
            solutions[jacobian if isinstance(jacobian, str) else "analytic"] = sol
            return sol
        return run

    fns = {
        "scipy lm (analytic J), loop": lambda: outputs.__setitem__(
            "scipy_analytic", _scipy_loop(B_np, y_np, True)),
        "scipy lm (2-point FD J), loop": lambda: outputs.__setitem__(
            "scipy_fd", _scipy_loop(B_np, y_np, False)),
        "diffnum LM (analytic J), batched": run_diffnum(_jacobian),
        "diffnum LM (analytic J), batched, 1 thread": run_diffnum(_jacobian, threads=1),
        "diffnum LM (forward-mode autodiff J), batched": run_diffnum("forward"),
    }
    times = interleaved_times(fns, repeats=repeats)
    # Process CPU time of one more run each: robust to other processes' load for the
    # single-threaded contenders (scipy, the 1-thread row); with 2 threads it also counts
    # time spent waiting in the thread pool.
    cpu_seconds = {}
    for name, fn in fns.items():
        start = time.process_time()
        fn()
        cpu_seconds[name] = time.process_time() - start
    reference = outputs["scipy_analytic"]
    final = {
        "scipy lm (analytic J), loop": reference,
        "scipy lm (2-point FD J), loop": outputs["scipy_fd"],
        "diffnum LM (analytic J), batched": solutions["analytic"].residual_norm.numpy(),
        "diffnum LM (analytic J), batched, 1 thread":
            solutions["analytic"].residual_norm.numpy(),
        "diffnum LM (forward-mode autodiff J), batched":
            solutions["forward"].residual_norm.numpy(),
    }
    baseline = times["scipy lm (analytic J), loop"]
    records, rows = [], []
    for name, seconds in times.items():
        norms = final[name]
        # Equal final residuals: relative gap of ‖r‖ to scipy-analytic, worst problem.
        gap = float(np.max(np.abs(norms - reference) / reference))
        record = {"method": name, "problems": batch, "m": m, "n": n, "seconds": seconds,
                  "scipy_analytic_over_method": baseline / seconds,
                  "residual_norm_mean": float(norms.mean()),
                  "max_relative_residual_gap_vs_scipy": gap}
        if name.startswith("diffnum"):
            sol = solutions["analytic" if "analytic" in name else "forward"]
            record["all_converged"] = sol.all_converged
            record["mean_steps"] = float(sol.steps.double().mean())
        records.append(record)
        record["cpu_seconds"] = cpu_seconds[name]
        rows.append([name, seconds, baseline / seconds, cpu_seconds[name],
                     record["residual_norm_mean"], gap])
    notes = (
        f"Goal: batched LM with the analytic Jacobian >= {GOAL:g}× faster than the scipy loop "
        "with the analytic Jacobian, at equal final residuals. `scipy/method` is the time "
        "ratio (higher is faster). `max rel. gap` is max over problems of "
        "|‖r‖ − ‖r‖_scipy| / ‖r‖_scipy against scipy with the analytic Jacobian. Tolerances "
        f"{TOL:g} on both sides. Median of interleaved runs, torch threads = 2 (scipy is "
        "single-threaded MINPACK) except the `1 thread` row, which shows how much of the "
        "batched time is thread synchronisation (large when other processes load the cores)."
    )
    write_results(
        "least_squares", "diffnum bench least_squares" + (" --quick" if quick else ""),
        records, ["method", "seconds", "scipy/method", "CPU s", "mean ‖r‖", "max rel. gap"], rows,
        notes=notes,
    )


if __name__ == "__main__":
    main()
