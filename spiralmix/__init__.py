"""spiralmix: mixup regularization on the two-spiral problem."""

__version__ = "0.1.0"
