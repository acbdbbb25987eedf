"""Matrix square root. (Being written.)"""


def sqrtm(A, method="newton_schulz", inverse=False):
    """Square root of an SPD matrix. Not implemented yet."""
    raise NotImplementedError("sqrtm is being written")
