"""distgfn: distributed GFlowNet training for expensive rewards. Start at distgfn.core."""

__version__ = "0.1.0"
