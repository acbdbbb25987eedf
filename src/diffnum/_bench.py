"""Timing and memory helpers shared by ``benchmarks/`` (not part of the public API)."""

from __future__ import annotations

import gc
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import diffnum
from diffnum._core.markdown import markdown_table


def median_time(fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(fns: dict[str, Callable[[], Any]], *, repeats: int = 7,
                      warmup: int = 1) -> dict[str, float]:
    """Median times of several functions, run round-robin so drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def environment() -> dict[str, Any]:
    """Versions and thread count recorded with every benchmark result."""
    return {
        "diffnum": diffnum.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
    }


# Where write_results puts its files; ``diffnum bench --dir D`` sets it to D/results.
results_directory = Path("benchmarks") / "results"


def write_results(name: str, command: str, records: list[dict[str, Any]],
                  headers: Sequence[str], rows: Sequence[Sequence[Any]],
                  notes: str = "", directory: Path | None = None) -> Path:
    """Write ``results/NAME.json`` and ``results/NAME.md`` next to the benchmark scripts
    (the ``--dir`` of ``diffnum bench``; ``benchmarks/`` when a script runs on its own)."""
    directory = directory or results_directory
    if "--quick" in command:  # smoke runs never overwrite the committed full-size results
        directory = directory / "quick"
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "command": command, "environment": environment(),
               "records": records}
    (directory / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    md = [f"# {name}", "", f"Command: `{command}`", "",
          "Environment: " + ", ".join(f"{k} {v}" for k, v in environment().items()), "",
          markdown_table(headers, rows), ""]
    if notes:
        md += [notes.strip(), ""]
    (directory / f"{name}.md").write_text("\n".join(md))
    return directory / f"{name}.json"
