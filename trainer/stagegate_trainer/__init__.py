"""Stagegate trainer: spec model, data, features, labels, walk-forward plan, fit and evaluate."""

__version__ = "0.1.0"
