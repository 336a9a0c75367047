"""Where the work runs: a LocalCluster sized to this machine, or an existing dask scheduler."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask
import psutil
from dask.system import cpu_count
from distributed import Client, LocalCluster
from distributed.utils import get_mp_context

from pipeline.errors import LandcoverError

log = logging.getLogger(__name__)

# glibc malloc settings for local workers, set before each worker process starts. dask's default
# (MALLOC_TRIM_THRESHOLD_=65536) also freezes glibc's mmap threshold at 128 KiB, so every large
# numpy/torch buffer becomes a fresh mmap that is page-faulted in again: measured 17% slower seed
# inference and seconds of system time per chunk. Buffers up to 32 MiB come from the heap instead,
# which is returned to the OS once more than 32 MiB at its top is free (as fast as 128 MiB, less
# resident memory).
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "33554432"}

# The client's own glibc mmap threshold: 128 KiB, fixed. The client holds transient arrays of every
# size (each block's class map and, with --save-composite, its composite pixels: up to 18 MiB a
# block). glibc's default raises the threshold to the largest buffer freed, after which those
# arrays come from the heap and their pages stay resident: the client with --save-composite grew
# by ~40 MiB from 144 to 441 km² of the 3 x 2 demo world that way (benchmarks/scale.py).
CLIENT_MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def return_large_buffers_to_the_os() -> bool:
    """Make this process's large buffers fresh mmaps, unmapped when freed (glibc only): called by the
    `landcover` command, whose process is the client of its run. False where glibc is absent."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, CLIENT_MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator returns memory its own way
        return False


# Local workers start as forks of one process (multiprocessing's forkserver) that has already
# imported what every worker imports: torch and timm (~3 s of CPU per process on its own), GDAL and
# the modules whose functions the tasks run. The imports happen once per run instead of once per
# worker, and once per process for every map a long-lived client runs (a notebook, the test suite).
# benchmarks/startup.py, 2 workers loading the default model on 2 cores: a fresh run starts 0.7-0.9 s
# later (one process imports, where spawned workers import side by side) and shuts down 0.8 s
# sooner (a forked worker skips the interpreter's teardown), on 0.67-0.72x the CPU and 0.81x the
# memory (PSS: the imported pages are shared); a second run from the same client starts in 0.2 s
# instead of 3.1-3.6 s. Missing modules are skipped by the forkserver; platforms without one
# (Windows) spawn, as dask does by default.
WORKER_PRELOAD = (
    "distributed", "numpy", "pandas", "torch", "timm", "rasterio", "odc.stac",
    "pipeline.load", "pipeline.infer", "pipeline.export.composite", "models.predictor",
)


def worker_start_method() -> str:
    """The start method of local workers: "forkserver" where the platform has it, its preload list
    set to :data:`WORKER_PRELOAD` (read when this process's forkserver starts); else "spawn"."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        context = get_mp_context()  # dask sets its own preload list on its first call, and only then
    # Takes effect when the forkserver starts (this process's first local worker); later runs reuse it.
    context.set_forkserver_preload(list(WORKER_PRELOAD))
    return "forkserver"


# Inference tasks ask for this resource when GPU workers exist (dask-cuda workers, or
# `dask worker --resources GPU=1`), so each GPU runs one model at a time.
GPU_RESOURCE = "GPU"


@dataclass(frozen=True)
class ClusterInfo:
    dashboard: str | None
    n_workers: int
    gpu_workers: int
    local: bool


def local_worker_count(requested: int | None = None) -> int:
    """One single-threaded worker process per core this process may run on (its CPU affinity and
    cgroup quota, as dask counts them: a container or `taskset` given two of 64 cores gets two
    workers), capped so each worker keeps ~3 GiB of memory. torch threads per worker are 1 too."""
    if requested:
        return requested
    cores = cpu_count()
    by_memory = max(1, int(psutil.virtual_memory().total / 3e9))
    return max(1, min(cores, by_memory))


def gpu_count() -> int:
    """NVIDIA GPUs of this machine, from the driver's /proc entries (no CUDA or torch import on
    the client, which never runs a model)."""
    root = Path("/proc/driver/nvidia/gpus")
    return sum(1 for _ in root.iterdir()) if root.is_dir() else 0


@contextlib.contextmanager
def connect(
    scheduler: str | None, workers: int | None = None, *, gpus: int = 0, timeout: str = "20s"
) -> Iterator[tuple[Client, ClusterInfo]]:
    """Yield a client: to ``scheduler`` when given (the same graph, no code change), else to a
    fresh LocalCluster of worker processes that is closed afterwards.

    With ``gpus``, the local cluster has, beside its CPU workers (which read and composite), one
    worker per GPU that carries the GPU resource and sees only its own device
    (``CUDA_VISIBLE_DEVICES``, as dask-cuda's workers do): only classification asks for it."""
    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise LandcoverError(
                f"cannot reach the dask scheduler at {scheduler} ({exc.__class__.__name__}); "
                "start it (`dask scheduler`) or drop --scheduler to run locally"
            ) from None
        try:
            yield client, describe(client, local=False)
        finally:
            client.close()
        return
    n = local_worker_count(workers)
    spawn_env = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_MALLOC_ENV}
    settings = {
        # Read when the forkserver starts, so OMP_NUM_THREADS and the malloc settings reach every worker.
        "distributed.nanny.pre-spawn-environ": spawn_env,
        "distributed.worker.multiprocessing-method": worker_start_method(),
        # The worker's statistical profiler samples every thread's stack every 10 ms by default;
        # that cost ~4% of inference speed. 100 ms still fills the dashboard's profile page.
        "distributed.worker.profile.interval": "100ms",
        # Ctrl-C is the client's to handle (pipeline.worker_setup): no traceback from each worker.
        "distributed.worker.preload": [*dask.config.get("distributed.worker.preload", []), "pipeline.worker_setup"],
    }
    # Workers pin torch to one thread each so n workers use n cores without oversubscription.
    with dask.config.set(settings), LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit=f"{max(2.0, psutil.virtual_memory().total / 1e9 / n * 0.8):.1f}GB",
        silence_logs=logging.ERROR,
        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    ) as cluster, Client(cluster) as client:
        if gpus:
            add_gpu_workers(cluster, gpus)
            client.wait_for_workers(n + gpus, timeout=120)
        try:
            yield client, describe(client, local=True)
        except BaseException:
            # The run ends on an error or Ctrl-C, with tasks in flight: closing the cluster now makes
            # the scheduler log each message it can no longer deliver, after the one line the user gets.
            logging.getLogger("distributed").setLevel(logging.CRITICAL)
            raise


def add_gpu_workers(cluster: LocalCluster, gpus: int) -> None:
    """One worker process per GPU, with the CPU workers' settings, the GPU resource and only its
    own device visible."""
    base = cluster.new_spec
    for i in range(gpus):
        options = dict(base["options"])
        options.update(
            name=f"gpu-{i}",
            resources={GPU_RESOURCE: 1},
            env={**options.get("env", {}), "CUDA_VISIBLE_DEVICES": str(i)},
        )
        cluster.worker_spec[f"gpu-{i}"] = {"cls": base["cls"], "options": options}
    cluster.sync(cluster._correct_state)  # SpecCluster starts the workers its spec now names


def describe(client: Client, *, local: bool) -> ClusterInfo:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    gpus = sum(1 for w in workers.values() if w.get("resources", {}).get(GPU_RESOURCE))
    return ClusterInfo(
        dashboard=client.dashboard_link if info.get("services", {}).get("dashboard") else None,
        n_workers=len(workers),
        gpu_workers=gpus,
        local=local,
    )
