"""DCLS training defaults measured on the two real-data tasks of ``diffnum reproduce dcls``.

Not a ``bench_*.py`` (``diffnum bench`` does not run it): a one-off accuracy sweep behind the
defaults of ``diffnum.interp.parameter_groups``, ``SigmaSchedule`` and ``round_positions``.
Run from the repository root, on one thread:

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sweep_dcls_defaults.py

It writes ``benchmarks/results/dcls_defaults.json`` and ``.md`` (``--quick``: a smoke run of a
few seconds per setting that writes under ``benchmarks/results/quick/`` instead).

1. Part (d), scikit-learn's digits on a 32×32 canvas (``CanvasNet``, 9 taps per depthwise
   kernel in a 7×7 support, ``"spread"`` init; AdamW lr 1e-2, weight decay 0.01 on the
   weights, cosine to 0, 15 epochs — the full size of ``diffnum reproduce dcls``), 3 seeds
   (the seeds and batch orders of that command's seed 0, so the ×5 rows repeat its table):
   test accuracy, accuracy with the taps rounded, and after one epoch of training the
   weights at the rounded taps, for
   - the position learning-rate multiplier ×1, ×5, ×25 for ``gauss`` and ``v1``;
   - ``gauss``'s σ learned from its init (0.5) vs annealed 2 → 0.5 over the first half of
     the steps and frozen vs annealed 2 → 0.28 (``SigmaSchedule.for_rounding``) vs frozen at
     0.5;
   - weight decay 0.01 on the positions (decoupled, AdamW) vs none, for ``gauss``.
2. Part (c), the delayed-coincidence spiking task (``DelayedLinear``, T_d = 25; Adam lr 1e-2,
   cosine to 0; 20 epochs of 2048 samples — the full size), 5 seeds (seed s is
   ``diffnum reproduce dcls --seed s``: its own data, initial delays and batches): test
   accuracy before and after rounding the delays (and after one epoch of the weights at the
   rounded delays) for five σ schedules: part (c)'s before this sweep (linear T_d/2 → 0.5
   over the first quarter, positions ×50); the thesis code's (exponential 8.27 → 0.5 over the
   first half, positions ×150) and the same down to 0.28; linear T_d/2 → 0.28 over the first
   quarter (``SigmaSchedule.for_rounding``, part (c)'s now); and T_d/2 → 0.5 followed by
   0.5 → 0.28 over the last quarter only. It also records how far the learned delays end from
   the nearest integer.

About 26 minutes on one thread (25.6 for the committed results, on a 2-core machine shared
with other jobs); ``--quick`` about 2.5 minutes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import diffnum.interp as interp
from diffnum._bench import write_results
from diffnum.reproduce._harness import Context
from diffnum.reproduce.experiments import dcls
from diffnum.reproduce.experiments._digits import load_digits_data

THESIS_VISION = ("K-H-Ismail/ConvNeXt-dcls (optim_factory.py, models/convnext_dcls.py): "
                 "positions at the base learning rate (×1) in the no-weight-decay group, "
                 "clamped to the support after each step, one position tensor shared by the "
                 "blocks of a stage, initialized N(0, 0.5²)")
THESIS_SNN = ("Thvnvtos/SNN-delays (config.py, snn_delays.py): Adam, position lr 150 × the "
              "weight lr (1e-3) with cosine annealing (the weights: one-cycle); positions "
              "uniform in ±T_d//2; SIG = T_d//3, frozen, multiplied once per epoch by a "
              "constant factor to reach 0.23 (σ = 0.5 with the 0.27 offset) at half the "
              "epochs; positions rounded at the end (round_pos)")


# ----------------------------------------------------------------- (d) canvas settings
def _groups(scale: float, position_decay: float) -> Callable[[nn.Module], list[dict]]:
    """AdamW groups built by hand: the weights at part (d)'s lr and decay, the positions at
    ``scale`` × the lr with ``position_decay``, the widths at ``scale`` × the lr without
    decay (a decay on SIG would narrow σ: another effect)."""
    def build(model: nn.Module) -> list[dict]:
        layers = interp.dcls_layers(model)
        positions = [layer.P for layer in layers]
        widths = [layer.SIG for layer in layers if layer.SIG is not None]
        spacing = {id(p) for p in positions + widths}
        weights = [p for p in model.parameters() if id(p) not in spacing]
        lr = dcls.CANVAS_LR
        groups = [{"params": weights, "lr": lr, "weight_decay": dcls.CANVAS_WEIGHT_DECAY},
                  {"params": positions, "lr": lr * scale, "weight_decay": position_decay}]
        if widths:
            groups.append({"params": widths, "lr": lr * scale, "weight_decay": 0.0})
        return groups
    return build


def canvas_settings(steps: int) -> list[dict[str, Any]]:
    """The part (d) settings: version, position lr scale, decay on P, σ (step → σ, or None:
    learned) and its description, and a name made of those."""
    anneal = interp.SigmaSchedule(2.0, 0.5, max(1, steps // 2))
    to_floor = interp.SigmaSchedule.for_rounding(2.0, steps, fraction=0.5)
    fixed = interp.SigmaSchedule(0.5, 0.5, 1, kind="constant")
    out = []
    for version in ("gauss", "v1"):
        for scale in (1.0, 5.0, 25.0):
            out.append(dict(version=version, scale=scale, position_decay=0.0, sigma=None,
                            sigma_text="learned" if version == "gauss" else "—"))
    out += [dict(version="gauss", scale=5.0, position_decay=0.0, sigma=anneal,
                 sigma_text="2 → 0.5 linear over the first half, frozen"),
            dict(version="gauss", scale=5.0, position_decay=0.0, sigma=to_floor,
                 sigma_text="2 → 0.28 linear over the first half, frozen"),
            dict(version="gauss", scale=5.0, position_decay=0.0, sigma=fixed,
                 sigma_text="0.5, frozen"),
            dict(version="gauss", scale=5.0, position_decay=0.01, sigma=None,
                 sigma_text="learned")]
    for s in out:
        s["name"] = (f"{s['version']}, P lr ×{s['scale']:g}, σ {s['sigma_text']}, "
                     f"decay on P {s['position_decay']:g}")
    return out


# ----------------------------------------------------------- (c) spiking-delay settings
def snn_settings(steps: int) -> list[dict[str, Any]]:
    """The part (c) σ schedules: name, position lr scale, σ (step → σ) and its final value."""
    max_delay = dcls.SNN["max_delay"]
    floor = interp.SigmaSchedule.for_rounding(max_delay / 2, steps).end  # 0.28
    quarter, half = max(1, steps // 4), max(1, steps // 2)
    before = interp.SigmaSchedule(max_delay / 2, 0.5, quarter)  # part (c) before this sweep
    thesis_start = max_delay // 3 + 0.27  # SIG = T_d // 3 under σ = SIG + 0.27
    thesis = interp.SigmaSchedule(thesis_start, 0.5, half, kind="exponential")
    thesis_floor = interp.SigmaSchedule(thesis_start, floor, half, kind="exponential")
    last = steps - quarter
    sharpen = interp.SigmaSchedule(0.5, floor, quarter)

    def then_sharpen(step: int) -> float:
        return before(step) if step < last else sharpen(step - last)

    return [
        dict(name="linear T_d/2 → 0.5 over the first 1/4, P lr ×50 (part (c) before)",
             scale=50.0, sigma=before, end=0.5),
        dict(name=f"thesis: exponential {thesis_start:g} → 0.5 over the first 1/2, P lr ×150",
             scale=150.0, sigma=thesis, end=0.5),
        dict(name=f"thesis to the floor: exponential {thesis_start:g} → {floor:g} over the "
                  "first 1/2, P lr ×150", scale=150.0, sigma=thesis_floor, end=floor),
        dict(name=f"to the floor: linear T_d/2 → {floor:g} over the first 1/4, P lr ×50 "
                  "(SigmaSchedule.for_rounding)", scale=50.0,
             sigma=interp.SigmaSchedule.for_rounding(max_delay / 2, steps), end=floor),
        dict(name=f"linear T_d/2 → 0.5 over the first 1/4, then 0.5 → {floor:g} over the "
                  "last 1/4, P lr ×50", scale=50.0, sigma=then_sharpen, end=floor),
    ]


def run_canvas(epochs: int, seeds: int, n_train: int | None, log: Callable[[str], None]
               ) -> list[dict[str, Any]]:
    data = load_digits_data()
    if data is None:
        raise SystemExit("scikit-learn is needed for the digits (pip install scikit-learn)")
    train, test, _ = dcls.canvas_digits(*data, torch.Generator().manual_seed(dcls.CANVAS_SEED))
    if n_train is not None:
        train = (train[0][:n_train], train[1][:n_train])
    steps = epochs * (len(train[1]) // dcls.CANVAS_BATCH)
    ctx = Context(out=Path("."), quick=False, seed=0, show_progress=False)  # part (d)'s seeds
    records = []
    for setting in canvas_settings(steps):
        spec = {"kind": "dcls", "version": setting["version"], "init": "spread"}
        runs = []
        for s in range(seeds):
            start = time.perf_counter()
            runs.append(dcls._canvas_run(
                spec, ctx.seed * 1_000_003 + 700 + s, train, test, epochs,
                ctx.generator(800 + s),
                groups=_groups(setting["scale"], setting["position_decay"]),
                sigma=setting["sigma"]))
            log(f"(d) {setting['name']}, seed {s}: {runs[-1]['accuracy']:.3f} "
                f"(rounded {runs[-1]['accuracy_rounded']:.3f}) "
                f"[{time.perf_counter() - start:.0f} s]")
        records.append({
            "task": "canvas digits (d)", "setting": setting["name"],
            "version": setting["version"], "position_lr_scale": setting["scale"],
            "position_weight_decay": setting["position_decay"], "sigma": setting["sigma_text"],
            "seeds": seeds, "epochs": epochs, "train": len(train[1]), "test": len(test[1]),
            **{key: dcls._mean_std([r[key] for r in runs])
               for key in ("accuracy", "accuracy_rounded", "accuracy_rounded_finetuned",
                           "tap_movement")}})
    return records


def run_snn(epochs: int, n_train: int, seeds: int, log: Callable[[str], None]
            ) -> list[dict[str, Any]]:
    steps = epochs * (n_train // dcls.SNN_BATCH)
    records = []
    for setting in snn_settings(steps):
        runs = []
        for s in range(seeds):
            start = time.perf_counter()
            ctx = Context(out=Path("."), quick=False, seed=s, show_progress=False)
            g = ctx.generator(3)  # as `diffnum reproduce dcls --seed s`, part (c)
            data = dcls._delay_data(n_train, g)
            model = dcls._snn_model(False, s)
            curve = dcls._train_delays(model, data, epochs, g, sigma=setting["sigma"],
                                       position_lr_scale=setting["scale"])
            P = model[0].P.detach()
            off = (P - P.round()).abs()
            run = {"accuracy": curve[-1], "distance_to_integer": float(off.mean()),
                   "near_half": float((off > 0.25).float().mean())}
            run.update(dcls._round_delays(model, data, ctx.generator(4)))
            runs.append(run)
            log(f"(c) {setting['name']}, seed {s}: {run['accuracy']:.3f} → rounded "
                f"{run['integer_delay_accuracy']:.3f} → tuned "
                f"{run['integer_delay_finetuned_accuracy']:.3f} "
                f"[{time.perf_counter() - start:.0f} s]")
        records.append({
            "task": "spiking delays (c)", "setting": setting["name"],
            "position_lr_scale": setting["scale"], "sigma_end": setting["end"],
            "seeds": seeds, "epochs": epochs, "train": n_train,
            "accuracy": dcls._mean_std([r["accuracy"] for r in runs]),
            "accuracy_rounded": dcls._mean_std([r["integer_delay_accuracy"] for r in runs]),
            "accuracy_rounded_finetuned": dcls._mean_std([r["integer_delay_finetuned_accuracy"]
                                                    for r in runs]),
            "distance_to_integer": dcls._mean_std([r["distance_to_integer"] for r in runs]),
            "fraction_over_quarter_from_integer": dcls._mean_std([r["near_half"] for r in runs])})
    return records


def main(quick: bool = False) -> None:
    torch.set_num_threads(1)
    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {text}", flush=True)

    if quick:
        snn_records = run_snn(epochs=2, n_train=256, seeds=2, log=log)
        canvas = run_canvas(epochs=1, seeds=2, n_train=320, log=log)
    else:
        snn_records = run_snn(epochs=20, n_train=2048, seeds=5, log=log)
        canvas = run_canvas(epochs=15, seeds=3, n_train=None, log=log)
    minutes = (time.perf_counter() - began) / 60
    records = canvas + snn_records
    rows = [[r["task"], r["setting"], r["seeds"]]
            + [dcls._pm(r[key]) for key in ("accuracy", "accuracy_rounded",
                                            "accuracy_rounded_finetuned")]
            + [dcls._pm(r.get("tap_movement") or r.get("distance_to_integer"))]
            for r in records]
    command = ("PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sweep_dcls_defaults.py"
               + (" --quick" if quick else ""))
    sizes = ("--quick smoke sizes: canvas 1 epoch on 320 training images, 2 seeds; spiking "
             "2 epochs of 256, 2 seeds" if quick else
             "full sizes of `diffnum reproduce dcls`: canvas 15 epochs of 1347 training "
             "images, 450 test, 3 seeds; spiking 20 epochs of 2048, 1024 test, 5 seeds")
    notes = (
        f"Mean ± sample std over seeds; {sizes}; {minutes:.1f} minutes on one thread. Last "
        "column: for the canvas, the mean absolute move of the taps from init to end (cells); "
        "for the spiking task, the mean distance of the learned delays to the nearest integer just "
        "before rounding. 'rounded': taps/delays rounded to integers, integer-tap mode, "
        "nothing retrained (canvas: BatchNorm statistics recomputed); '+ 1 epoch': then one "
        "epoch of training the weights alone at the rounded taps (lr 1e-3, cosine to 0). "
        "Canvas: AdamW lr 1e-2, weight decay 0.01 on the weights, cosine to 0, spread init; "
        "'decay on P' is AdamW's decoupled decay on the positions (the widths never decay); "
        "gauss's σ 'learned' starts at 0.5 (SIG = 0.23). Spiking: Adam lr 1e-2, cosine to 0, "
        "σ frozen along its schedule. "
        f"The thesis's released code — vision: {THESIS_VISION}; spiking delays: {THESIS_SNN}.")
    write_results("dcls_defaults", command, records,
                  ["task", "setting", "seeds", "test accuracy", "rounded",
                   "rounded + 1 epoch (weights)",
                   "mean abs ΔP (canvas) / distance to integer (SNN)"],
                  rows, notes)
    print(json.dumps({"minutes": minutes}), flush=True)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
