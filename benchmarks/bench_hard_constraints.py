"""hard_constraints: PI-HC vs PI-HC-MoE (K = 4) training step and inference, the MoE step on
2 processes vs 1, and layer time vs the number of sampled points M.

Problem: diffusion–sorption on a 256 × 128 (x, t) grid (P = 32 768 points), an FNO basis
(width 16, depth 2) of N = 16 functions, batch 2, float64, M = 16 384 sampled points in all
(PI-HC: one solve of 16 384 PDE rows; MoE: 4 experts along x with 4 096 each, initial and
boundary rows replicated). A training step is FNO forward → basis terms → solves → physics
loss → implicit backward → Adam; inference is the forward alone without gradients. The
2-process run is launched by ``torchrun`` (gloo, 1 thread per process, DDP, experts sharded
2 + 2) and compared with one process using both cores (2 threads). Layer time vs M is the
layer alone (solve + implicit backward) on a fixed basis.

Run from the repository root: ``diffnum bench hard_constraints [--quick]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffnum._bench import interleaved_times, write_results
from diffnum._core.markdown import markdown_table
from diffnum.constrain import (
    ConstrainedModel,
    HardConstraint,
    MixtureOfExperts,
    TrainConfig,
    physics_loss,
)
from diffnum.pde import DiffusionSorption1D, pdebench_initial_condition, uniform_grid

GOAL_MOE = 0.7  # MoE (K = 4) / PI-HC step time
GOAL_TWO_PROCESSES = 0.65  # MoE step, 2 processes / 1 process


def _setting(quick: bool) -> dict:
    if quick:
        return dict(nx=128, nt=64, m=4096, ms=(1024, 4096), repeats=3, batch=2)
    return dict(nx=256, nt=128, m=16384, ms=(1024, 2048, 4096, 8192, 16384, 32768), repeats=7,
                batch=2)


def _config(method: str, m: int, parallel: str = "experts") -> TrainConfig:
    return TrainConfig(method=method, experts=(4, 1) if method == "moe" else None,
                       n_basis=16, n_sampled=m, width=16, modes=(12, 8), depth=2, padding=8,
                       pde_weight=500.0**2, seed=0, parallel=parallel)


def _model(method: str, s: dict, parallel: str = "experts"):
    pde = DiffusionSorption1D()
    grid = uniform_grid({"x": (0.0, 1.0, s["nx"]), "t": (0.0, 500.0, s["nt"])})
    torch.manual_seed(0)
    model = ConstrainedModel(_config(method, s["m"], parallel), pde, grid)
    initial = pdebench_initial_condition(s["batch"], s["nx"],
                                         generator=torch.Generator().manual_seed(1))
    if parallel == "batch" and torch.distributed.is_initialized():
        share = s["batch"] // torch.distributed.get_world_size()
        rank = torch.distributed.get_rank()
        initial = initial[rank * share:(rank + 1) * share]
    return model, initial


def _step_fn(model, initial):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(2)
    record = {}

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = model(initial, generator)
        loss, _ = physics_loss(model, initial, out.u)
        loss.backward()
        optimizer.step()
        solution = out.solution
        record["steps"] = float(solution.solution.steps.double().mean())
        record["max_steps"] = int(solution.solution.steps.max())
        record["converged"] = solution.converged_fraction
        record["loss"] = float(loss.detach())
    return step, record


def _inference_fn(model, initial):
    generator = torch.Generator().manual_seed(3)

    def infer():
        with torch.no_grad():
            model(initial, generator)
    return infer


def _worker(out: str, parallel: str, s: dict) -> None:
    """One torchrun rank: the MoE training step with DDP, experts or batch sharded."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    model, initial = _model("moe", s, parallel)
    model.use_data_parallel()
    step, record = _step_fn(model, initial)
    step()  # warm-up
    times = []
    for _ in range(s["repeats"]):
        torch.distributed.barrier()
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    if torch.distributed.get_rank() == 0:
        Path(out).write_text(json.dumps({"seconds": statistics.median(times), **record}))
    torch.distributed.destroy_process_group()


def _two_processes(s: dict, quick: bool, parallel: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node=2", __file__, "--worker", str(out), parallel]
        if quick:
            command.append("--quick")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        return json.loads(out.read_text())


def _layer_vs_m(s: dict) -> dict[str, list[float]]:
    model, initial = _model("hard", s)
    with torch.no_grad():
        basis = model.backbone(model.network_input(initial)).flatten(2).transpose(1, 2)
    pde, grid = model.pde, model.grid
    curves: dict[str, list[float]] = {}
    for k in (1, 2, 4, 8):
        name = "PI-HC" if k == 1 else f"PI-HC-MoE (K={k})"
        curves[name] = []
        for m in s["ms"]:
            layer = MixtureOfExperts(HardConstraint(pde, m, residual_scale=500.0), (k, 1))
            generator = torch.Generator().manual_seed(4)

            def run(layer=layer, generator=generator):
                b = basis.clone().requires_grad_(True)
                layer(b, grid, initial, generator=generator).u.square().mean().backward()

            curves[name].append(interleaved_times({"x": run}, repeats=s["repeats"])["x"])
    return curves


def main(quick: bool = False) -> None:
    torch.set_num_threads(2)
    s = _setting(quick)
    models = {method: _model(method, s) for method in ("hard", "moe")}
    steps, records = {}, {}
    for method, (model, initial) in models.items():
        steps[f"{method} step"], records[method] = _step_fn(model, initial)
        steps[f"{method} inference"] = _inference_fn(model, initial)
    # What every method pays whatever its solve costs: the same PI-HC step with one LM
    # iteration (FNO forward and backward, basis terms, lift, one solve step, the implicit
    # backward, Adam). No mixture's step can take less than this.
    floor_model, floor_initial = _model("hard", s)
    floor_model.layer.max_steps = 1
    steps["shared part"], _ = _step_fn(floor_model, floor_initial)
    times = interleaved_times(steps, repeats=s["repeats"])
    # The same MoE step on one thread: what each of the 2 processes has to itself.
    torch.set_num_threads(1)
    one_thread_model, one_thread_initial = _model("moe", s)
    one_thread_step, _ = _step_fn(one_thread_model, one_thread_initial)
    times["moe step, 1 thread"] = interleaved_times({"x": one_thread_step},
                                                    repeats=s["repeats"])["x"]
    torch.set_num_threads(2)
    two = _two_processes(s, quick, "experts")
    two_batch = _two_processes(s, quick, "batch")
    curves = _layer_vs_m(s)

    moe_ratio = times["moe step"] / times["hard step"]
    inference_ratio = times["moe inference"] / times["hard inference"]
    parallel_ratio = two["seconds"] / times["moe step"]
    batch_ratio = two_batch["seconds"] / times["moe step"]
    scaling_experts = two["seconds"] / times["moe step, 1 thread"]
    scaling_batch = two_batch["seconds"] / times["moe step, 1 thread"]
    rows = [
        ["PI-HC training step", times["hard step"], 1.0, records["hard"]["steps"],
         records["hard"]["converged"]],
        ["PI-HC-MoE (K=4) training step", times["moe step"], moe_ratio,
         records["moe"]["steps"], records["moe"]["converged"]],
        ["PI-HC-MoE (K=4) training step, 1 process, 1 thread", times["moe step, 1 thread"],
         times["moe step, 1 thread"] / times["hard step"], "", ""],
        ["shared part: PI-HC step with 1 LM iteration", times["shared part"],
         times["shared part"] / times["hard step"], 1, ""],
        ["PI-HC inference", times["hard inference"], 1.0, "", ""],
        ["PI-HC-MoE (K=4) inference", times["moe inference"], inference_ratio, "", ""],
        ["PI-HC-MoE (K=4) step, 2 processes (torchrun, gloo, 1 thread each)", two["seconds"],
         parallel_ratio, two["steps"], two["converged"]],
        ["PI-HC-MoE (K=4) step, 2 processes, batch sharded (1 initial condition each)",
         two_batch["seconds"], batch_ratio, two_batch["steps"], two_batch["converged"]],
    ]
    records_out = [
        {"case": r[0], "seconds": r[1], "ratio": r[2], "mean_lm_steps": r[3],
         "converged": r[4]} for r in rows
    ] + [{"two_processes_over_one_thread": {"experts_sharded": scaling_experts,
                                           "batch_sharded": scaling_batch}},
         {"time_vs_m": {"m": list(s["ms"]), "seconds": curves}},
         {"goals": {"moe_over_hc_step": GOAL_MOE, "two_over_one_process": GOAL_TWO_PROCESSES},
          "met": {"moe_over_hc_step": moe_ratio <= GOAL_MOE,
                  "two_over_one_process_experts_sharded": parallel_ratio <= GOAL_TWO_PROCESSES,
                  "two_over_one_process_batch_sharded": batch_ratio <= GOAL_TWO_PROCESSES}}]
    curve_rows = [[name, *values] for name, values in curves.items()]
    notes = "\n".join([
        f"Goals: MoE step ≤ {GOAL_MOE}× PI-HC (ratio column of the MoE rows against PI-HC); "
        f"MoE step on 2 processes ≤ {GOAL_TWO_PROCESSES}× the same step in one process "
        f"(ratio column of the 2-process rows against the MoE step row). Grid {s['nx']} × "
        f"{s['nt']}, M = {s['m']}, N = 16, batch {s['batch']}, float64, median of "
        f"{s['repeats']} interleaved repeats (one process: 2 threads unless marked). `LM "
        "steps` is the mean over solves of the last timed step. Against the 1-thread step "
        f"(what each process has): 2 processes take {scaling_experts:.3f}× (experts sharded) "
        f"and {scaling_batch:.3f}× (batch sharded) of its time.",
        "",
        f"Why the one-process goal is out of reach here: the shared part of a step (FNO "
        f"forward and backward, basis terms, lift, implicit backward, Adam — the PI-HC step "
        f"cut to one LM iteration) takes {times['shared part']:.3f} s, "
        f"{times['shared part'] / times['hard step']:.2f}× PI-HC's step; a mixture can only "
        "save on the solve itself (its experts' rows add up to PI-HC's, batched into one call), "
        f"so even a free solve would leave it at that ratio. PI-HC's solves took "
        f"{records['hard']['steps']:.1f} LM iterations (converged "
        f"{records['hard']['converged']:.2f}), the experts' {records['moe']['steps']:.1f} "
        f"(converged {records['moe']['converged']:.2f}). The benchmark times an untrained "
        "FNO: its basis puts u slightly below 0 on a few percent of the rows, where the "
        "retardation R(u) = 1 + c (max(u, 0) + 1e-6)^(n_f − 1), n_f = 0.874, has a cusp; "
        "there ½‖r‖² is not differentiable, Levenberg–Marquardt crawls (accepted steps change "
        "it by < 1e-10 relative) and stops at max_steps without claiming convergence. In the "
        "training runs of `diffnum reproduce hard-constraints` most solves converge within a "
        "few iterations (its table's `LM iterations` and `solves converged` columns), so "
        "there the shared part is an even larger share of a step.",
        "",
        "Layer alone (solve + implicit backward, fixed basis), seconds by M:",
        "",
        markdown_table(["layer", *[f"M={m}" for m in s["ms"]]], curve_rows),
    ])
    write_results("hard_constraints", "diffnum bench hard_constraints"
                  + (" --quick" if quick else ""), records_out,
                  ["case", "seconds", "ratio", "LM steps", "converged"], rows, notes=notes)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        at = sys.argv.index("--worker")
        _worker(sys.argv[at + 1], sys.argv[at + 2], _setting("--quick" in sys.argv))
    else:
        main(quick="--quick" in sys.argv)
