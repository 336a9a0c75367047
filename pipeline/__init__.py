"""The batch land-cover pipeline: one module per stage (aoi, search, load, patches, infer, mosaic, export)."""

from models import __version__  # one distribution, one version (read from its metadata in models/)

__all__ = ["__version__"]
