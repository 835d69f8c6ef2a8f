"""Transitional: InvalidQuery is gis.errors.InvalidInput (removed once services/ names it so)."""

from gis.errors import InvalidInput as InvalidQuery

__all__ = ["InvalidQuery"]
