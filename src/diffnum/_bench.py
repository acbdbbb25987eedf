"""Timing and result helpers shared by ``benchmarks/`` (not part of the public API)."""

from __future__ import annotations

import gc
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Timer

from diffnum._core.environment import environment
from diffnum._core.markdown import markdown_table


def _timer(fn: Callable[[], Any]) -> Timer:
    """A ``torch.utils.benchmark.Timer`` for one call of ``fn``: it runs ``fn`` with torch's
    current thread count, synchronizes CUDA around it when CUDA is in use, and keeps Python's
    garbage collector out of the timed region."""
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def _sample(timer: Timer) -> float:
    gc.collect()  # garbage from the previous call is not charged to this one
    return timer.timeit(1).times[0]


def median_time(fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    timer = _timer(fn)
    for _ in range(warmup):
        fn()
    return statistics.median(_sample(timer) for _ in range(repeats))


def interleaved_times(fns: dict[str, Callable[[], Any]], *, repeats: int = 7,
                      warmup: int = 1) -> dict[str, float]:
    """Median times of several functions, run round-robin so drift hits all alike."""
    timers = {k: _timer(fn) for k, fn in fns.items()}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, timer in timers.items():
            samples[key].append(_sample(timer))
    return {k: statistics.median(v) for k, v in samples.items()}


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
