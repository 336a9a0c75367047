"""A local cluster's start-up: workers spawned (dask's default) against forked from one forkserver
preloaded with torch, timm, GDAL and the task modules (what `landcover map` does).

    python -m benchmarks.startup [--workers N]

Each row starts a LocalCluster as a run does (:func:`pipeline.cluster.connect`), has every worker
load the default model (:func:`pipeline.run.load_model_on_workers`, as a run does before its
first block) and closes it: wall seconds for start + model and for the shutdown, the CPU seconds
of every process of the cluster (the client's own included) until it is closed, and the memory
its processes then take together (PSS summed: the pages workers share with their forkserver
count once, where summed RSS would count them in every process). Spawn
and forkserver run in one process, one after the other; the forkserver twice, as a long-lived
client (a notebook, the test suite) maps twice: the second reuses the server.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from unittest import mock

import psutil

from benchmarks.pipeline import proportional_bytes
from pipeline import cluster


def _tree_cpu(seen: dict[int, float]) -> None:
    """Record the CPU seconds so far of this process and every descendant, by pid (a process's
    last sample is kept: processes still alive before the cluster closes)."""
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            seen[proc.pid] = times.user + times.system
        except psutil.Error:
            pass


def _children_pss() -> float:
    """MiB of the descendants' proportional set size (a page shared by n of them counts 1/n in each:
    what the workers and their forkserver take together); their RSS where there is no PSS."""
    total = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            total += proportional_bytes(proc)
        except psutil.Error:
            pass
    return total / 2**20


def one_start(method: str, workers: int) -> dict[str, float]:
    from models.files import sha256_file
    from pipeline.infer import ModelRef
    from pipeline.plan import DEFAULT_WEIGHTS
    from pipeline.run import load_model_on_workers

    model = ModelRef(str(DEFAULT_WEIGHTS), sha256_file(DEFAULT_WEIGHTS))
    before: dict[int, float] = {}
    _tree_cpu(before)
    after: dict[int, float] = {}
    start = time.perf_counter()
    # connect() asks worker_start_method() for the start method: "spawn" is dask's own default.
    spawning = mock.patch.object(cluster, "worker_start_method", return_value="spawn")
    with spawning if method == "spawn" else contextlib.nullcontext(), cluster.connect(None, workers) as (client, _):
        load_model_on_workers(client, model)
        ready = time.perf_counter() - start
        _tree_cpu(after)
        memory = _children_pss()
        closing = time.perf_counter()
    closed = time.perf_counter() - closing
    cpu = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return {"ready_s": ready, "shutdown_s": closed, "cpu_s": cpu, "memory_mib": memory}


def main(argv: list[str]) -> None:
    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    print(f"\n== local cluster start-up: {workers} workers, each loading the default model ==")
    print(f"{'workers start by':<34} {'start + model s':>15} {'shutdown s':>10} {'CPU s':>7} {'memory MiB':>10}")
    rows = {}
    for label, method in (("spawn (dask's default)", "spawn"), ("fork of a preloaded forkserver", "forkserver"),
                          ("  the same server, a second run", "forkserver")):
        rows[label] = r = one_start(method, workers)
        print(f"{label:<34} {r['ready_s']:>15.1f} {r['shutdown_s']:>10.1f} {r['cpu_s']:>7.1f} {r['memory_mib']:>10.0f}")
    spawn, fork, again = rows.values()
    print(f"forkserver / spawn: start + model {fork['ready_s'] / spawn['ready_s']:.2f}x the time (the server imports "
          f"once, the spawned workers each at once on their own cores), CPU {fork['cpu_s'] / spawn['cpu_s']:.2f}x, "
          f"shutdown {spawn['shutdown_s'] - fork['shutdown_s']:.1f} s shorter, memory (PSS) "
          f"{fork['memory_mib'] / spawn['memory_mib']:.2f}x; a second run in the same client: "
          f"start + model {again['ready_s'] / spawn['ready_s']:.2f}x the time of spawning ({os.cpu_count()} CPUs)")

if __name__ == "__main__":
    main(sys.argv[1:])
