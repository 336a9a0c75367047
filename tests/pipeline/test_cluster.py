import os
import subprocess
import sys

import pytest

from pipeline.cluster import connect, local_worker_count
from pipeline.errors import LandcoverError


def test_worker_count_defaults_to_the_cores_and_honours_a_request():
    assert local_worker_count(3) == 3
    assert local_worker_count() >= 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_the_default_worker_count_is_the_cores_this_process_may_run_on():
    """A container or `taskset -c 0` given one core of many gets one worker, not one per core of the host."""
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " \
           "from pipeline.cluster import local_worker_count; print(local_worker_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


def test_local_cluster_runs_worker_processes_and_closes_them():
    with connect(None, workers=2) as (client, info):
        assert info.local and info.n_workers == 2 and info.gpu_workers == 0
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        assert client.submit(lambda x: x + 1, 1).result() == 2
        # Set before the worker started (glibc reads them once): large buffers stay on the heap.
        env = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "OMP_NUM_THREADS")})
        assert all(e == {"MALLOC_MMAP_THRESHOLD_": "33554432", "OMP_NUM_THREADS": "1"} for e in env.values())
    assert client.status == "closed"


def test_local_workers_are_forked_from_one_process_that_imported_torch_once():
    """Workers start as forks of a forkserver preloaded with torch and the task modules: they share
    one parent that is not the client, arrive with torch imported, and compute on one thread."""

    def worker_state():
        import torch  # already imported: the check below looks at the state the fork inherited

        return os.getppid(), torch.get_num_threads()

    with connect(None, workers=2) as (client, _):
        preloaded = client.run(lambda: all(m in sys.modules for m in ("torch", "timm", "pipeline.infer")))
        assert all(preloaded.values())
        state = list(client.run(worker_state).values())
    parents = {parent for parent, _ in state}
    assert len(parents) == 1 and os.getpid() not in parents
    assert [threads for _, threads in state] == [1, 1]


def test_unreachable_scheduler_is_a_one_line_error():
    with pytest.raises(LandcoverError, match="cannot reach the dask scheduler at tcp://127.0.0.1:9"):
        with connect("tcp://127.0.0.1:9", timeout="2s"):
            pass


def test_a_local_cluster_on_a_gpu_machine_adds_one_gpu_worker_per_gpu():
    """CPU workers read; each GPU gets its own worker with the GPU resource and only its device
    visible (run here without a GPU: the worker's model would run on the CPU)."""
    with connect(None, workers=1, gpus=1) as (client, info):
        assert info.n_workers == 2 and info.gpu_workers == 1
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(v or "-" for v in seen.values()) == ["-", "0"]
        on_gpu = client.submit(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"), resources={"GPU": 1}, pure=False)
        assert on_gpu.result() == "0"
