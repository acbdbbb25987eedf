"""scikit-learn's handwritten digits, the real images that ``optim`` and ``dcls`` train on.
This module is not an experiment (it defines no ``EXPERIMENT``)."""

from __future__ import annotations

import torch


def load_digits_data() -> tuple[torch.Tensor, torch.Tensor] | None:
    """scikit-learn's 1797 8×8 handwritten digits (shipped with the package) as float32 images
    in [0, 1] (N, 1, 8, 8) and labels; None when scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    return images, torch.tensor(digits.target, dtype=torch.long)
