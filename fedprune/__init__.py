"""fedprune: federated DP-SGD that trains only a public-data-chosen subset of the parameters."""

__version__ = "0.1.0"

__all__ = ["__version__"]
