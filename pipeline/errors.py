"""Errors a user sees as one line (the CLI prints ``error: <message>`` and exits non-zero)."""


class LandcoverError(Exception):
    """Base of errors shown to users as one line: say what is wrong and how to fix it."""


class AOIError(LandcoverError):
    """The area of interest cannot be used."""


class SearchError(LandcoverError):
    """The STAC search failed or found nothing usable."""


class LoadError(LandcoverError):
    """Scene data could not be read."""


class OutputError(LandcoverError):
    """Outputs cannot be written where asked."""
