"""driftloop: the operations loop that keeps a production language model healthy."""

__version__ = "0.1.0"
