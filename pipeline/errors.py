"""Errors a user sees as one line (the CLI prints ``error: <message>`` and exits non-zero).

The base, :class:`LandcoverError`, lives in :mod:`models.errors` (models/ never imports
pipeline/) and is re-exported here, so ``except LandcoverError`` catches errors of either package.
"""

from models.errors import LandcoverError

__all__ = ["AOIError", "LandcoverError", "LoadError", "OutputError", "SearchError"]


class AOIError(LandcoverError):
    """The area of interest cannot be used."""


class SearchError(LandcoverError):
    """The STAC search failed or found nothing usable."""


class LoadError(LandcoverError):
    """Scene data could not be read."""


class OutputError(LandcoverError):
    """Outputs cannot be written where asked."""
