"""fleet: a GitOps reconciler for physical infrastructure."""

__version__ = "0.1.0"
