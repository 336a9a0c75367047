"""The batch land-cover pipeline. A run is planned once (``settings`` -> ``plan``), then executed
(``run``) block by block through one module per stage, in the order the data flows:

    aoi -> search -> patches (the grid) -> blocks -> load (read + composite) -> infer (workers)
        -> mosaic -> export                       (stream: the client's side of load and infer)

``store`` keeps finished blocks for resumed runs; ``assess`` reports a finished map's accuracy.
"""

from models import __version__  # one distribution, one version (read from its metadata in models/)

__all__ = ["__version__"]
