"""Experiment discovery, the run context, atomic result caching and the report writer."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import diffnum


@dataclass(frozen=True)
class Section:
    """What one experiment contributes to the report."""

    title: str
    markdown: str
    results: dict[str, Any]
    figures: tuple[str, ...] = ()
    summary_table: str = ""  # short markdown table for the README / top of the report


@dataclass(frozen=True)
class Context:
    """Settings every experiment receives."""

    out: Path
    quick: bool
    seed: int
    show_progress: bool = True
    resume: bool = False  # experiments with long runs continue from their own checkpoints

    def checkpoint_path(self, name: str) -> Path:
        """Where an experiment keeps the checkpoint ``name`` of a long run (under .cache)."""
        path = self.out / ".cache" / "checkpoints" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def progress(self, iterable: Iterable, desc: str, total: int | None = None) -> Iterable:
        """Wrap ``iterable`` in a progress bar (silent when progress is off)."""
        return tqdm(iterable, desc=desc, total=total, disable=not self.show_progress, leave=False)

    def figure_path(self, name: str) -> Path:
        """Path of a figure file inside the output directory."""
        (self.out / "figures").mkdir(parents=True, exist_ok=True)
        return self.out / "figures" / name

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the run seed (``offset`` separates streams)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)


@dataclass(frozen=True)
class Experiment:
    """A named experiment: ``run(ctx)`` returns a :class:`Section`."""

    name: str
    title: str
    run: Callable[[Context], Section]
    order: int = 100


def available_experiments() -> dict[str, Experiment]:
    """Discover every ``EXPERIMENT`` in :mod:`diffnum.reproduce.experiments`, in report order."""
    from diffnum.reproduce import experiments as package

    found: list[Experiment] = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        experiment = getattr(module, "EXPERIMENT", None)
        if isinstance(experiment, Experiment):
            found.append(experiment)
    found.sort(key=lambda e: (e.order, e.name))
    return {e.name: e for e in found}


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    """NaN/inf become null so results.json stays valid JSON (json.dumps would write NaN)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _cache_path(ctx: Context, name: str) -> Path:
    return ctx.out / ".cache" / f"{name}.json"


def _load_cached(ctx: Context, name: str) -> Section | None:
    path = _cache_path(ctx, name)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a partial file cannot happen (atomic writes), but never trust a bad one
    if data.get("quick") != ctx.quick or data.get("seed") != ctx.seed:
        return None
    if data.get("version") != diffnum.__version__:
        return None
    section = data["section"]
    section["figures"] = tuple(section["figures"])
    if not all((ctx.out / f).exists() for f in section["figures"]):
        return None
    return Section(**section)


def run(
    names: Sequence[str],
    *,
    out: Path,
    quick: bool = False,
    seed: int = 0,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, Section]:
    """Run the named experiments and write ``report.md`` and ``results.json`` into ``out``."""
    registry = available_experiments()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; available: {sorted(registry)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, quick=quick, seed=seed, show_progress=show_progress, resume=resume)
    sections: dict[str, Section] = {}
    timings: dict[str, float] = {}
    for name in names:
        cached = _load_cached(ctx, name) if resume else None
        if cached is not None:
            sections[name] = cached
            timings[name] = float("nan")
            continue
        start = time.perf_counter()
        section = registry[name].run(ctx)
        timings[name] = time.perf_counter() - start
        sections[name] = section
        payload = {"quick": quick, "seed": seed, "version": diffnum.__version__,
                   "section": asdict(section)}
        _atomic_write(_cache_path(ctx, name), json.dumps(payload, indent=1))
    _write_report(ctx, registry, sections, timings)
    return sections


def _environment() -> dict[str, Any]:
    return {
        "diffnum": diffnum.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }


def _write_report(ctx: Context, registry: dict[str, Experiment],
                  sections: dict[str, Section], timings: dict[str, float]) -> None:
    env = _environment()
    mode = "quick" if ctx.quick else "full"
    lines = [
        "# diffnum reproduction report",
        "",
        f"Mode: **{mode}**, seed {ctx.seed}. Environment: "
        + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
        "",
    ]
    for name, section in sections.items():
        took = timings[name]
        took_text = "reused from cache" if took != took else f"{took:.1f} s"
        lines += [f"## {section.title}", "", f"*Experiment `{name}`, {took_text}.*", "",
                  section.markdown.strip(), ""]
        for fig in section.figures:
            lines += [f"![{Path(fig).stem}]({fig})", ""]
    _atomic_write(ctx.out / "report.md", "\n".join(lines))
    results = {
        "mode": mode,
        "seed": ctx.seed,
        "environment": env,
        "experiments": {
            name: {"title": s.title, "seconds": timings[name], "results": s.results,
                   "figures": list(s.figures)}
            for name, s in sections.items()
        },
    }
    _atomic_write(ctx.out / "results.json",
                  json.dumps(_json_safe(results), indent=1, default=float, allow_nan=False))
