"""The ``diffnum`` command: ``reproduce`` the papers' comparisons, run ``bench``-marks."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import pkgutil
import sys
from pathlib import Path

import diffnum


def _target_names() -> list[str]:
    """The reproduce targets, read from the experiment modules' names without importing
    them (``hard_constraints.py`` is the target ``hard-constraints``)."""
    from diffnum.reproduce import experiments

    return [m.name.replace("_", "-") for m in pkgutil.iter_modules(experiments.__path__)
            if not m.name.startswith("_")]


def _spelled(name: str) -> str:
    """One spelling for targets and benchmarks: hyphens (``hard_constraints`` is accepted)."""
    return name.replace("_", "-")


def _reproduce(args: argparse.Namespace) -> int:
    from diffnum import reproduce
    from diffnum.reproduce._harness import Interrupted, OutputLockedError
    from diffnum.reproduce._readme import ReadmeError

    registry = reproduce.available_experiments()
    targets = [_spelled(t) for t in args.targets] or ["all"]
    if "all" in targets:
        names = list(registry)
    else:
        unknown = [t for t in targets if t not in registry]
        if unknown:
            print(f"diffnum reproduce: unknown target(s) {unknown}; choose from "
                  f"{['all', *registry]}", file=sys.stderr)
            return 2
        names = targets
    out = Path(args.out)
    try:
        reproduce.run(names, out=out, quick=args.quick, seed=args.seed, resume=args.resume,
                      show_progress=not args.no_progress, readme=args.readme)
    except OutputLockedError as error:  # another run owns --out: a message, not a traceback
        print(f"diffnum reproduce: {error}", file=sys.stderr)
        return 2
    except ReadmeError as error:  # --readme without its markers, or unwritable
        print(f"diffnum reproduce: --readme: {_one_line(error)}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # Ctrl-C: one line, not a traceback
        kept = f" ({', '.join(stop.finished)} finished and saved)" if stop.finished else ""
        print(f"\ndiffnum reproduce: interrupted during '{stop.running}'{kept}; rerun the "
              f"same command with --resume to continue from its checkpoints", file=sys.stderr)
        return 130
    print(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    return 0


def _find_benchmarks(directory: Path) -> dict[str, Path]:
    return {_spelled(p.stem.removeprefix("bench_")): p
            for p in sorted(directory.glob("bench_*.py"))}


def _bench(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    found = _find_benchmarks(directory)
    if not found:
        print(f"diffnum bench: no bench_*.py files in {directory.resolve()} "
              "(run from the repository root or pass --dir)", file=sys.stderr)
        return 2
    names = [_spelled(n) for n in args.names] or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        print(f"diffnum bench: unknown benchmark(s) {unknown}; choose from {list(found)}",
              file=sys.stderr)
        return 2
    from diffnum import _bench

    _bench.results_directory = directory / "results"
    for name in names:
        spec = importlib.util.spec_from_file_location(f"_diffnum_bench_{name}", found[name])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main(quick=args.quick)
    return 0


def _data(args: argparse.Namespace) -> int:
    from diffnum.pde import dataset_paths, generate_dataset

    sizes = {}
    for item in args.size:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"diffnum data: --size needs KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        sizes[key] = value
    try:
        before = _stamp(dataset_paths(args.kind, args.n, args.seed, args.out)[0])
        path = generate_dataset(args.kind, args.n, args.seed, args.out, overwrite=args.overwrite,
                                **sizes)
    except (ValueError, TypeError) as error:  # a bad --n/--seed/--out/--size: one line, exit 2
        print(f"diffnum data: {_one_line(error)}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as error:  # the disk or a solver failed: one line, exit 1
        print(f"diffnum data: generation failed: {type(error).__name__}: {_one_line(error)}",
              file=sys.stderr)
        return 1
    if before is not None and _stamp(path) == before:
        print(f"cached: {path} (settings and checksum match; --overwrite regenerates)")
    else:
        print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def _stamp(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of an existing file: a reused dataset keeps both."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffnum",
        description="Differentiable structured numerics: reproduce the papers' claims on a CPU.",
    )
    parser.add_argument("--version", action="version", version=f"diffnum {diffnum.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_reproduce(sub)
    _add_bench(sub)
    _add_data(sub)
    return parser


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("reproduce", help="run the papers' key comparisons and write a report",
                         description="Generate data, run each paper's comparison at CPU scale, "
                                     "and write report.md, results.json and PNG figures to --out.")
    rep.add_argument("targets", nargs="*", metavar="TARGET",
                     help="experiments to run: 'all' (default) or any of "
                          + ", ".join(_target_names()))
    rep.add_argument("--quick", action="store_true", help="small sizes; finishes in minutes")
    rep.add_argument("--out", default="reproduce-out",
                     help="output directory (default: %(default)s)")
    rep.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    rep.add_argument("--resume", action="store_true",
                     help="reuse experiments already finished in --out with the same settings")
    rep.add_argument("--no-progress", action="store_true", help="hide progress bars")
    rep.add_argument("--readme", metavar="PATH",
                     help="also rewrite the marked results blocks of this README from the "
                          "run's results (with --resume, finished experiments are reused)")
    rep.set_defaults(func=_reproduce)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="run side-by-side benchmarks from benchmarks/",
                           description="Run benchmarks/bench_NAME.py side by side with their "
                                       "peers; results go to benchmarks/results/NAME.json and .md.")
    bench.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    bench.add_argument("--dir", default="benchmarks",
                       help="benchmark directory (default: %(default)s)")
    bench.add_argument("--quick", action="store_true",
                       help="fewer repeats, smaller sizes (smoke test)")
    bench.set_defaults(func=_bench)


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="generate cached reference datasets",
                          description="Generate reference solutions deterministically per seed "
                                      "into --out, with a JSON sidecar holding the settings and a "
                                      "SHA-256 checksum.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    gen = data_sub.add_parser("generate", help="generate (or reuse a valid cached) dataset")
    gen.add_argument("kind", choices=["diffusion-sorption", "navier-stokes", "burgers"])
    gen.add_argument("--n", type=int, required=True, help="number of samples")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    gen.add_argument("--out", required=True, help="output directory")
    gen.add_argument("--size", action="append", default=[], metavar="KEY=VALUE",
                     help="override a size/setting, e.g. --size nx=64 (repeatable)")
    gen.add_argument("--overwrite", action="store_true",
                     help="regenerate even if a valid cached dataset exists")
    gen.set_defaults(func=_data)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``diffnum`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
