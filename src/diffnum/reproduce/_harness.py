"""Experiment discovery, the run context, atomic result caching, the output directory's lock
and the report writer."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import pkgutil
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import diffnum
from diffnum._core.environment import environment
from diffnum._core.files import atomic_write
from diffnum.reproduce._html import render_html

logger = logging.getLogger(__name__)

LOCK_NAME = ".diffnum-reproduce.lock"


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

    def progress(self, iterable: Iterable, desc: str, total: int | None = None,
                 initial: int = 0) -> Iterable:
        """Wrap ``iterable`` in a progress bar (silent when progress is off); ``initial``:
        the count already done (a resumed run's bar starts at its checkpoint)."""
        return tqdm(iterable, desc=desc, total=total, initial=initial,
                    disable=not self.show_progress, leave=False)

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
    # ``readme(results, mode) -> markdown``: the experiment's README block, from the results
    # it stored (``diffnum reproduce --readme``); None: the experiment has none.
    readme: Callable[[dict[str, Any], str], str] | None = None


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
    atomic_write(path, lambda f: f.write(text.encode()))


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
    """``.cache/NAME-MODE-seedS.json``: the settings are in the name, so runs with another seed
    or mode keep their own results side by side and never read each other's."""
    mode = "quick" if ctx.quick else "full"
    return ctx.out / ".cache" / f"{name}-{mode}-seed{ctx.seed}.json"


_SECTION_TYPES = {"title": str, "markdown": str, "results": dict, "figures": list,
                  "summary_table": str}


def _section_problem(section: Any) -> str | None:
    """None if ``section`` is a stored :class:`Section` (right fields and types, figures as
    relative paths inside the output directory), else what is wrong with it."""
    if not isinstance(section, dict) or set(section) != {f.name for f in fields(Section)}:
        return f"'section' must be an object with the fields {sorted(_SECTION_TYPES)}"
    wrong = [k for k, kind in _SECTION_TYPES.items() if not isinstance(section[k], kind)]
    if wrong:
        return f"field(s) {wrong} have the wrong type"
    if not all(isinstance(f, str) and not Path(f).is_absolute() and ".." not in Path(f).parts
               for f in section["figures"]):
        return "figures must be relative paths inside the output directory"
    return None


def _load_cached(ctx: Context, name: str) -> Section | None:
    """The finished section cached for ``name`` with ctx's settings, or None to (re)compute.

    A cache file that cannot be read or does not hold what :func:`run` writes is logged with
    its name and recomputed (then overwritten), never trusted and never a traceback."""
    path = _cache_path(ctx, name)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        logger.warning("cache file %s is unreadable (%s); recomputing %r", path, error, name)
        return None
    if not isinstance(data, dict):
        logger.warning("cache file %s is malformed (not a JSON object); recomputing %r", path,
                       name)
        return None
    if data.get("quick") != ctx.quick or data.get("seed") != ctx.seed:
        logger.info("cache file %s has other settings; recomputing %r", path, name)
        return None
    if data.get("version") != diffnum.__version__:
        logger.info("cache file %s is from diffnum %s; recomputing %r", path,
                    data.get("version"), name)
        return None
    section = data.get("section")
    problem = _section_problem(section)
    if problem is not None:
        logger.warning("cache file %s is malformed (%s); recomputing %r", path, problem, name)
        return None
    if not all((ctx.out / f).exists() for f in section["figures"]):
        logger.info("cache file %s names missing figures; recomputing %r", path, name)
        return None
    return Section(**{**section, "figures": tuple(section["figures"])})


class OutputLockedError(RuntimeError):
    """Another live run holds the output directory's lock."""


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host. Unknown counts as alive (refusing is
    safe, taking over a live run's directory is not); on Windows ``os.kill`` would
    terminate the process, so there every pid counts as alive."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # too large to be a pid: no such process
        return False
    except OSError:  # PermissionError: it exists under another user
        return True
    return True


def _lock_owner(text: str) -> dict[str, Any] | None:
    """The owner recorded in a lock file's text, or None if it is not one we write."""
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    pid = owner.get("pid") if isinstance(owner, dict) else None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None  # os.kill(0 or -n, …) would address process groups
    if not isinstance(owner.get("host"), str):
        return None
    return owner


def _is_stale(owner: dict[str, Any] | None) -> bool:
    """A lock is stale if it is not ours in form, or its pid is dead on this host; a lock
    from another host cannot be checked and is never stale."""
    if owner is None:
        return True
    return owner["host"] == socket.gethostname() and not _pid_alive(owner["pid"])


def _try_create(lock: Path, text: str) -> bool:
    """Create ``lock`` holding ``text`` atomically; False if it exists. The text goes to a
    temporary file first and is hard-linked into place, so no reader ever sees a partial
    lock (os.link fails if the name exists, also on NFS)."""
    fd, tmp = tempfile.mkstemp(dir=lock.parent, prefix=f"{lock.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem: exclusive create, then write
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _take_over(lock: Path, seen: str) -> None:
    """Remove the stale lock whose text was ``seen``. It is renamed away first and checked: if
    another process replaced it meanwhile, that live lock is put back untouched."""
    moved = lock.with_name(f"{lock.name}.stale.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        os.rename(lock, moved)
    except FileNotFoundError:
        return  # someone else removed it; the next attempt decides
    try:
        if moved.read_text() != seen:
            with contextlib.suppress(FileExistsError):
                os.link(moved, lock)
    finally:
        moved.unlink(missing_ok=True)


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[Path]:
    """Hold ``out/.diffnum-reproduce.lock`` for the duration of the block.

    Two runs writing into one ``--out`` would interleave their caches, checkpoints and
    reports, so a second run is refused (:class:`OutputLockedError`, naming the owner and
    the file). The lock records pid and hostname; one left by a process that is no longer
    alive on this host (killed, crashed) is taken over, with a warning. Released on every
    exit from the block, exceptions and KeyboardInterrupt included."""
    lock = Path(out) / LOCK_NAME
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "token": secrets.token_hex(8)})
    for _ in range(5):
        if _try_create(lock, text):
            break
        try:
            seen = lock.read_text()
        except FileNotFoundError:
            continue  # released between our attempt and the read
        owner = _lock_owner(seen)
        if not _is_stale(owner):
            raise OutputLockedError(
                f"{out} is in use by another run (pid {owner['pid']} on {owner['host']}, since "
                f"{owner.get('started', '?')}); wait for it or choose another --out. If no such "
                f"run exists, delete {lock}")
        logger.warning("taking over stale lock %s (%s)", lock,
                       "unreadable" if owner is None
                       else f"pid {owner['pid']} is not running on {owner['host']}")
        _take_over(lock, seen)
    else:
        raise OutputLockedError(f"could not take the lock {lock} (it keeps changing); "
                                f"check for other runs writing into {out}")
    try:
        yield lock
    finally:
        _release(lock, text)


def _release(lock: Path, text: str) -> None:
    """Delete ``lock`` if it still holds our ``text``; another owner's lock is left alone."""
    try:
        if lock.read_text() == text:
            lock.unlink()
            return
    except FileNotFoundError:
        pass
    logger.warning("lock %s was removed or replaced while this run held it", lock)


def run(
    names: Sequence[str],
    *,
    out: Path,
    quick: bool = False,
    seed: int = 0,
    resume: bool = False,
    show_progress: bool = True,
    readme: str | os.PathLike | None = None,
) -> dict[str, Section]:
    """Run the named experiments and write ``report.md`` and ``results.json`` into ``out``;
    with ``readme``, also the marked results blocks of that README (see
    :mod:`diffnum.reproduce._readme`)."""
    registry = available_experiments()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; available: {sorted(registry)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, quick=quick, seed=seed, show_progress=show_progress, resume=resume)
    with output_lock(out):
        sections, results = _run_locked(ctx, registry, names)
    if readme is not None:
        from diffnum.reproduce._readme import update_readme

        update_readme(readme, results)
    return sections


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: which experiment was running and which had finished (their
    results are saved; ``--resume`` reuses them and the interrupted one continues from its
    checkpoints)."""

    def __init__(self, running: str, finished: list[str]) -> None:
        super().__init__(running)
        self.running, self.finished = running, finished


def _run_locked(ctx: Context, registry: dict[str, Experiment],
                names: Sequence[str]) -> tuple[dict[str, Section], dict[str, Any]]:
    """:func:`run`'s work, while the output directory is locked."""
    sections: dict[str, Section] = {}
    timings: dict[str, float] = {}
    for name in names:
        cached = _load_cached(ctx, name) if ctx.resume else None
        if cached is not None:
            if ctx.show_progress:
                print(f"{name}: reused from {_cache_path(ctx, name)} (--resume)",
                      file=sys.stderr)
            sections[name] = cached
            timings[name] = float("nan")
            continue
        start = time.perf_counter()
        try:
            section = registry[name].run(ctx)
        except KeyboardInterrupt:
            raise Interrupted(name, list(sections)) from None
        timings[name] = time.perf_counter() - start
        sections[name] = section
        payload = {"quick": ctx.quick, "seed": ctx.seed, "version": diffnum.__version__,
                   "section": asdict(section)}
        _atomic_write(_cache_path(ctx, name), json.dumps(payload, indent=1))
    return sections, _write_report(ctx, registry, sections, timings)


def _write_report(ctx: Context, registry: dict[str, Experiment],
                  sections: dict[str, Section], timings: dict[str, float]) -> dict[str, Any]:
    """Write report.md and results.json; returns what results.json holds."""
    env = environment(processor=False)
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
    report = "\n".join(lines)
    _atomic_write(ctx.out / "report.md", report)
    page = render_html(report, ctx.out, "diffnum reproduction report")
    if page is not None:
        _atomic_write(ctx.out / "report.html", page)
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
    results = _json_safe(results)
    _atomic_write(ctx.out / "results.json",
                  json.dumps(results, indent=1, default=float, allow_nan=False))
    return json.loads(json.dumps(results, default=float))  # as a reader of the file sees it
