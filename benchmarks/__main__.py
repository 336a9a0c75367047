"""`make bench`: every benchmark, figures printed as ratios measured in one run.

    python -m benchmarks [--full-tile]
"""

import sys

from benchmarks import demo_world, models, pipeline

if __name__ == "__main__":
    full = "--full-tile" in sys.argv[1:]
    demo_world.main([])
    models.main([])
    pipeline.main(["--full-tile"] if full else [])
