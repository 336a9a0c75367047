"""Errors a user sees as one line (the CLI prints ``error: <message>`` and exits non-zero)."""


class LandcoverError(Exception):
    """Base of errors shown to users as one line: say what is wrong and how to fix it."""
