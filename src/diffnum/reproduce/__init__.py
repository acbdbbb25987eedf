"""The reproduction harness behind ``diffnum reproduce``.

Each paper's experiment is one module in :mod:`diffnum.reproduce.experiments`
that defines ``EXPERIMENT = Experiment(...)``; modules are discovered, so a new
pillar plugs in by adding a file and touching nothing else. :func:`run` calls the
chosen experiments with a :class:`Context`, then writes ``report.md``,
``results.json`` and the figures into the output directory. Finished experiments
are saved atomically, so ``--resume`` reuses them after an interruption.
"""

from diffnum._core.markdown import markdown_table
from diffnum.reproduce._harness import (
    Context,
    Experiment,
    Section,
    available_experiments,
    run,
)

__all__ = ["Context", "Experiment", "Section", "available_experiments", "markdown_table", "run"]
