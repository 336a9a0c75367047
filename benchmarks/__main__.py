"""`make bench`: every benchmark, figures printed as ratios measured in one run.

    python -m benchmarks [--full-tile] [--detail]
    python -m benchmarks --scale [--large]

:mod:`benchmarks.blocks` compares a classifier's backbone once per block with windows (issue #22).
``--detail`` also runs :mod:`benchmarks.detail` (detailed maps against the demo truth, issue #12).
:mod:`benchmarks.startup` compares a local cluster's workers spawned with forked from a preloaded server.
``--scale`` runs :mod:`benchmarks.scale` alone (planning at 1-1,000 MGRS tiles, client memory of
pixel runs over the multi-tile demo world; issue #11).
"""

import sys

from benchmarks import blocks, demo_world, models, pipeline, pixels, startup

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--scale" in args:
        from benchmarks import scale

        scale.main(["--large"] if "--large" in args else [])
        sys.exit(0)
    full = "--full-tile" in args
    demo_world.main([])
    startup.main([])
    models.main([])
    pipeline.main(["--full-tile"] if full else [])
    pixels.main([])
    blocks.main(["--full-tile"] if full else [])
    if "--detail" in args:
        from benchmarks import detail

        detail.main([])
