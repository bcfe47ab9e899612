"""Stagegate trainer: data, features, labels, fit and evaluate, the steps and the local runner."""

from stagegate_core import __version__

__all__ = ["__version__"]
