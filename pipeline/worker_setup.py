"""Preloaded into every local worker process (``distributed.worker.preload``) before it starts.

A terminal's Ctrl-C reaches every process of the run's process group. The client handles it (one
line, then it closes the cluster, whose workers it owns); workers that also took it would each
print a KeyboardInterrupt traceback on the way down. So local workers leave SIGINT to the client.

A local worker's scheduler lives in the client's process: a heartbeat that cannot reach it only
means the run is ending, so that one record (an ERROR with a 25-line traceback) is dropped.
"""

from __future__ import annotations

import logging
import signal
import threading

HEARTBEAT_LOST = "Failed to communicate with scheduler during heartbeat"


def ending_heartbeat(record: logging.LogRecord) -> bool:
    """False for the record of a heartbeat lost as the run's scheduler goes away."""
    return not record.getMessage().startswith(HEARTBEAT_LOST)


def dask_setup(worker) -> None:  # noqa: ARG001 - dask's preload hook
    logging.getLogger("distributed.worker").addFilter(ending_heartbeat)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# The hook may run off the main thread (signals can only be set there); importing this module
# happens in the worker process's main thread as it starts, so set it here too.
if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
