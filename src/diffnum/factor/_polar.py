"""Polar factor / matrix sign. (Being written.)"""


def msign(M, steps=5, method="newton_schulz", precondition="frobenius", coefficients=None):
    """Polar factor U Vᵀ of M. Not implemented yet."""
    raise NotImplementedError("msign is being written")
