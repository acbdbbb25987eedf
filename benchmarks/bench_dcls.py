"""DCLS layers: diffnum vs the official ``dcls`` 0.1.1 package, side by side.

Forward + backward (input, weight, positions, widths) medians over interleaved runs with two
threads, for the issue's configurations, plus the peak memory of kernel construction
(forward + backward), each measured in a fresh subprocess as the growth of the resident-set
high-water mark. Run from the repository root: ``diffnum bench dcls [--quick]``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import torch

from diffnum._bench import interleaved_times, write_results

CONFIGS = [
    # name, dimension, layer arguments, input shape (full), input shape (quick)
    ("depthwise 17×17 gauss m=26", 2,
     {"in_channels": 96, "out_channels": 96, "kernel_count": 26, "dilated_kernel_size": 17,
      "padding": 8, "groups": 96, "version": "gauss"}, (8, 96, 56, 56), (2, 96, 56, 56)),
    ("depthwise 17×17 v1 m=26", 2,
     {"in_channels": 96, "out_channels": 96, "kernel_count": 26, "dilated_kernel_size": 17,
      "padding": 8, "groups": 96, "version": "v1"}, (8, 96, 56, 56), (2, 96, 56, 56)),
    ("depthwise 17×17 v1 m=34", 2,
     {"in_channels": 96, "out_channels": 96, "kernel_count": 34, "dilated_kernel_size": 17,
      "padding": 8, "groups": 96, "version": "v1"}, (8, 96, 56, 56), (2, 96, 56, 56)),
    ("SNN delays 1d gauss m=1 s=25", 1,
     {"in_channels": 140, "out_channels": 256, "kernel_count": 1, "dilated_kernel_size": 25,
      "version": "gauss"}, (64, 140, 100), (16, 140, 100)),
]

MEMORY_CONFIG = {"in_channels": 96, "out_channels": 96, "kernel_count": 2000,
                 "dilated_kernel_size": 7, "groups": 96}

_MEMORY_SCRIPT = textwrap.dedent("""
    import json, logging, sys
    import torch
    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    impl, version, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    torch.manual_seed(0)
    if impl == "dcls":
        from DCLS.construct.modules import Dcls2d
        layer = Dcls2d(**args, version=version)
        build = lambda: layer.DCK(layer.weight, layer.P, layer.SIG)
    else:
        from diffnum.interp import Dcls2d
        layer = Dcls2d(**args, version=version)
        build = layer.kernel
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark VmHWM to the current RSS (Linux >= 4.0)
    kernel = build()
    (kernel * kernel).sum().backward()
    print(json.dumps({"peak_bytes": status("VmHWM") - before}))
""")


def _layers(dim: int, args: dict):
    from DCLS.construct import modules as dcls_modules

    import diffnum.interp as interp

    ref_cls = {1: dcls_modules.Dcls1d, 2: dcls_modules.Dcls2d}[dim]
    ours_cls = {1: interp.Dcls1d, 2: interp.Dcls2d}[dim]
    torch.manual_seed(0)
    ref = ref_cls(**args)
    ours = ours_cls(**args)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _step(layer, x):
    def run():
        layer.zero_grad(set_to_none=True)
        xx = x.detach().requires_grad_()
        layer(xx).sum().backward()
    return run


def _peak_memory(impl: str, version: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, impl, version, json.dumps(MEMORY_CONFIG)],
        check=True, capture_output=True, text=True,
    )
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"])


def main(quick: bool = False) -> None:
    """Run every configuration and write ``benchmarks/results/dcls.{json,md}``."""
    logging.getLogger().setLevel(logging.ERROR)  # dcls warns about CUDA per 2-D layer
    torch.set_num_threads(2)
    repeats = 3 if quick else 7
    records, rows = [], []
    for name, dim, args, full_shape, quick_shape in CONFIGS:
        shape = quick_shape if quick else full_shape
        ref, ours = _layers(dim, args)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            agree = ((ours(x) - ref(x)).norm() / ref(x).norm()).item()
        times = interleaved_times({"dcls": _step(ref, x), "diffnum": _step(ours, x)},
                                  repeats=repeats)
        ratio = times["diffnum"] / times["dcls"]
        records.append({"config": name, "input_shape": list(shape), "layer": args,
                        "dcls_s": times["dcls"], "diffnum_s": times["diffnum"],
                        "ratio": ratio, "relative_difference": agree})
        rows.append([name, "×".join(map(str, shape)), times["dcls"] * 1e3,
                     times["diffnum"] * 1e3, ratio, agree])
        print(f"{name}: dcls {times['dcls'] * 1e3:.1f} ms, diffnum {times['diffnum'] * 1e3:.1f}"
              f" ms, ratio {ratio:.3f}", flush=True)
    for version in ("gauss", "v1"):
        ref_mem = _peak_memory("dcls", version)
        ours_mem = _peak_memory("diffnum", version)
        ratio = ours_mem / ref_mem if ref_mem else float("nan")
        name = f"construction peak memory {version} m=2000 s=7 g=96"
        records.append({"config": name, "layer": MEMORY_CONFIG, "version": version,
                        "dcls_bytes": ref_mem, "diffnum_bytes": ours_mem, "ratio": ratio})
        rows.append([name, "-", ref_mem / 2**20, ours_mem / 2**20, ratio, float("nan")])
        print(f"{name}: dcls {ref_mem / 2**20:.1f} MiB, diffnum {ours_mem / 2**20:.1f} MiB, "
              f"ratio {ratio:.3f}", flush=True)
    command = "diffnum bench dcls" + (" --quick" if quick else "")
    notes = (
        "Times in ms (forward + backward w.r.t. input and all parameters, median of "
        f"{repeats} interleaved runs, 2 threads); memory rows in MiB (peak resident-set "
        "growth during kernel construction forward + backward: VmHWM reset through "
        "/proc/self/clear_refs, fresh subprocess per measurement). "
        "ratio = diffnum / dcls (lower is better). Goals (issue 3): depthwise 17×17 gauss ≤ 1.0, "
        "v1 ≤ 0.5; SNN delays ≤ 0.5; construction memory ≤ 0.5. relative difference = "
        "‖y_diffnum − y_dcls‖/‖y_dcls‖ on the benchmark input."
    )
    write_results("dcls", command, records,
                  ["configuration", "input", "dcls", "diffnum", "ratio", "relative difference"],
                  rows, notes)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
