"""One module per paper; each defines ``EXPERIMENT``."""
