"""The environment recorded with benchmark results and reproduction reports."""

from __future__ import annotations

import platform
from typing import Any

import torch

import diffnum


def environment(*, processor: bool = True) -> dict[str, Any]:
    """Versions of diffnum, torch and Python, the machine (and with ``processor`` its
    processor string) and torch's thread count, in that order."""
    env = {
        "diffnum": diffnum.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if processor:
        env["processor"] = platform.processor()
    env["threads"] = torch.get_num_threads()
    return env
