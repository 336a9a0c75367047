"""Networks, checkpoints, model cards and predictors for the land-cover mapper."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("landcover")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
