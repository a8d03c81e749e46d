"""The one exception the data package raises for problems a user can fix."""

from __future__ import annotations


class DataError(ValueError):
    """A data problem a user can fix; the message names the file, the problem and what to do."""
