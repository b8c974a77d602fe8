"""Errors of review files."""

from __future__ import annotations


class ReviewFileError(ValueError):
    """A review file that cannot be ingested; the message names the file and the line (or the
    task / annotation) and says what is wrong."""
