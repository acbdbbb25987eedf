"""pde: the reference solvers' cost.

1. Diffusion–sorption at PDEBench size (1024 cells, t ∈ [0, 500], 101 saved times):
   ``solve_diffusion_sorption_1d`` (scipy BDF with the analytic tridiagonal Jacobian as a sparse
   matrix) against a straightforward ``solve_ivp(method="BDF")`` on the same semi-discrete
   system without the Jacobian structure (scipy's dense finite-difference Jacobian, dense LU),
   same tolerances; time ratio and max difference of the solutions.
2. Navier–Stokes 64², ν = 1e-3, dt = 1e-2: steps per second of ``solve_navier_stokes_2d``
   (one field and a batch of 8).

Run from the repository root: ``diffnum bench pde [--quick]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from diffnum._bench import interleaved_times, median_time, write_results
from diffnum.pde import (
    DiffusionSorption1D,
    pdebench_initial_condition,
    solve_diffusion_sorption_1d,
    solve_navier_stokes_2d,
)

RTOL, ATOL = 1e-6, 1e-9  # the reference solver's defaults, used on both sides


def _plain_bdf(u0: np.ndarray, t_end: float, num_times: int) -> np.ndarray:
    system = DiffusionSorption1D().method_of_lines(u0.shape[-1])
    times = np.linspace(0.0, t_end, num_times)
    result = solve_ivp(system.rhs, (0.0, t_end), u0, method="BDF", t_eval=times,
                       rtol=RTOL, atol=ATOL)
    if not result.success:
        raise RuntimeError(result.message)
    return result.y.T


def _smooth_vorticity(n: int, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    X, Y = torch.meshgrid(x, x, indexing="ij")
    out = torch.zeros(batch, n, n, dtype=torch.float64)
    for kx in range(-4, 5):
        for ky in range(0, 5):
            if (kx, ky) == (0, 0):
                continue
            a, b = torch.randn(2, batch, 1, 1, dtype=torch.float64, generator=g)
            scale = 1.0 / (kx * kx + ky * ky)
            out = out + scale * (a * torch.cos(kx * X + ky * Y) + b * torch.sin(kx * X + ky * Y))
    # Peak |ω₀| = 2: with peaks up to 6.5 some fields of the batch exceed AB2's CFL limit at
    # dt = 1e-2 and blow up (the solver now stops with an error; it used to time NaN fields).
    return 2 * out / out.abs().amax((-2, -1), keepdim=True)


def main(quick: bool = False) -> None:
    torch.set_num_threads(2)
    nx, samples = (256, 2) if quick else (1024, 4)
    t_end, num_times = 500.0, 101
    repeats = 3 if quick else 5
    u0 = pdebench_initial_condition(samples, nx, generator=torch.Generator().manual_seed(0))
    outputs: dict[str, np.ndarray] = {}

    def reference():
        outputs["reference"] = solve_diffusion_sorption_1d(
            u0, t_end=t_end, num_times=num_times, rtol=RTOL, atol=ATOL).solution.numpy()

    def plain():
        outputs["plain"] = np.stack([_plain_bdf(u.numpy(), t_end, num_times) for u in u0])

    # The plain solver takes seconds per call: 3 interleaved repeats (1 when quick).
    times = interleaved_times({"reference": reference, "plain": plain},
                              repeats=1 if quick else 3, warmup=0)
    diff = float(np.abs(outputs["reference"] - outputs["plain"]).max())
    stats = solve_diffusion_sorption_1d(u0[:1], t_end=t_end, num_times=num_times).stats[0]
    records = [{
        "benchmark": "diffusion-sorption", "nx": nx, "samples": samples, "t_end": t_end,
        "num_times": num_times, "rtol": RTOL, "atol": ATOL,
        "seconds_reference_sparse_jacobian": times["reference"],
        "seconds_plain_bdf_dense_fd_jacobian": times["plain"],
        "plain_over_reference": times["plain"] / times["reference"],
        "max_abs_difference": diff, "reference_stats_first_sample": stats,
    }]
    rows = [["diffusion–sorption, reference (sparse analytic J)", f"{nx} cells × {samples}",
             times["reference"], 1.0, diff],
            ["diffusion–sorption, plain solve_ivp BDF (dense FD J)", f"{nx} cells × {samples}",
             times["plain"], times["plain"] / times["reference"], diff]]

    n, dt, steps = (32, 1e-2, 50) if quick else (64, 1e-2, 200)
    for batch in (1, 8):
        omega0 = _smooth_vorticity(n, batch)
        traj = {}

        def run(omega0=omega0, traj=traj):
            traj["t"] = solve_navier_stokes_2d(omega0, viscosity=1e-3, dt=dt, steps=steps,
                                               save_every=steps)

        seconds = median_time(run, repeats=repeats)
        rate = steps / seconds
        records.append({"benchmark": "navier-stokes", "n": n, "batch": batch, "dt": dt,
                        "steps": steps, "seconds": seconds, "steps_per_second": rate,
                        "field_steps_per_second": rate * batch, "cfl": traj["t"].cfl})
        rows.append([f"Navier–Stokes {n}², batch {batch}", f"{steps} steps", seconds,
                     rate, float("nan")])
    notes = (
        "Diffusion–sorption: PDEBench setting (constant random u₀ ~ U(0, 0.2), t ∈ [0, 500], 101 "
        f"saved times), rtol {RTOL:g}, atol {ATOL:g} on both sides, the same semi-discrete "
        "system (cell-centred finite volumes); `ratio` = plain / reference time (higher: the "
        "reference is faster), `max |diff|` = largest difference of the two solutions over all "
        "samples, times and cells. Median of interleaved runs (3 for this pair). "
        "Navier–Stokes: ν = 1e-3, dt = 1e-2, smooth random vorticity; the `ratio` column holds "
        "steps per second (batch 8: each step advances 8 fields). torch threads = 2."
    )
    write_results("pde", "diffnum bench pde" + (" --quick" if quick else ""), records,
                  ["case", "size", "seconds", "ratio / steps per s", "max |diff|"], rows,
                  notes=notes)


if __name__ == "__main__":
    main()
