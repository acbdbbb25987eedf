"""Write the README's results blocks from a run's ``results.json``.

An experiment module may define ``readme(results, mode) -> str``: the markdown its README
block holds, computed from the ``results`` dict it stored (so the README shows exactly what
the harness measured). The README marks each block with a pair of HTML comments::

    <!-- reproduce:quick:hard-constraints -->
    ...replaced...
    <!-- /reproduce:quick:hard-constraints -->
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from diffnum._core.files import atomic_write


class ReadmeError(ValueError):
    """The README cannot take the results: a block's markers are missing, or it is not
    readable or writable."""


def _markers(mode: str, name: str) -> tuple[str, str]:
    return f"<!-- reproduce:{mode}:{name} -->", f"<!-- /reproduce:{mode}:{name} -->"


def readme_blocks(results: dict[str, Any]) -> dict[str, str]:
    """``{experiment: markdown}`` for the experiments of ``results`` (the parsed
    ``results.json``) that have a ``readme`` function."""
    from diffnum.reproduce._harness import available_experiments

    registry = available_experiments()
    mode = results["mode"]
    blocks = {}
    for name, entry in results["experiments"].items():
        experiment = registry.get(name)
        if experiment is not None and experiment.readme is not None:
            blocks[name] = experiment.readme(entry["results"], mode).strip()
    return blocks


def update_readme(path: str | Path, results: dict[str, Any]) -> list[str]:
    """Replace the marked blocks of the README at ``path`` with :func:`readme_blocks` of
    ``results``; returns the experiments written. A block whose markers are missing is an
    error naming them (the README decides where each block goes)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ReadmeError(f"cannot read {path}: {error}") from None
    mode = results["mode"]
    written = []
    for name, block in readme_blocks(results).items():
        begin, end = _markers(mode, name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
        if len(pattern.findall(text)) != 1:
            raise ReadmeError(f"{path} must hold exactly one block {begin} … {end} for the "
                             f"{mode} results of '{name}'")
        replacement = f"{begin}\n{block}\n{end}"
        text = pattern.sub(lambda _, r=replacement: r, text)
        written.append(name)
    try:
        atomic_write(path, lambda f: f.write(text.encode()))
    except OSError as error:
        raise ReadmeError(f"cannot write {path}: {error}") from None
    return written
