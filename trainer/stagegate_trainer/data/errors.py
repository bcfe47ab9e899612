"""The one exception the data layer raises for anything a user can cause."""

from __future__ import annotations


class DataError(ValueError):
    """A one-line, user-facing data problem (missing file, bad rows, unknown symbol...)."""
