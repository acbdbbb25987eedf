"""Matplotlib access for experiments: Agg backend, and a clear skip when it is missing."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def pyplot():
    """Return ``matplotlib.pyplot`` on the Agg backend, or ``None`` if matplotlib is absent."""
    try:
        import matplotlib
    except ImportError:
        logger.warning("matplotlib is not installed: figures are skipped "
                       "(install diffnum[plot])")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(ctx, fig, name: str) -> str:
    """Lay out, write ``figures/NAME`` under the run's output directory, close the figure, and
    return its path relative to the output directory (as the report links it)."""
    if fig.get_layout_engine() is None:  # figures made with layout="constrained" keep it
        fig.tight_layout()
    path = ctx.figure_path(name)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return str(path.relative_to(ctx.out))
