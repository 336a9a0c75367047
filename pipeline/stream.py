"""The client's side of classification: blocks submitted to the cluster as the plan yields them,
a bounded number in flight, results handed back as each lands.

The client never holds the area: it holds the blocks in flight. Each block is read (with its read
group, :func:`pipeline.blocks.read_group`) and classified on the workers
(:func:`pipeline.infer.classify_blocks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import dask
import numpy as np

from pipeline.cluster import GPU_RESOURCE
from pipeline.detail import DetailPlan
from pipeline.halo import PixelPlan
from pipeline.infer import ModelRef, classify_blocks
from pipeline.patches import PatchGrid

# A GPU worker takes windows of several blocks per task, so each forward pass gets at least
# this many (the predictor's default CUDA batch).
GPU_WINDOWS_PER_TASK = 128


def windows_per_block(grid: PatchGrid, detail: DetailPlan | PixelPlan) -> int:
    """Model windows of a full block (at most: cloudy windows are skipped). A per-pixel model's
    block is one image run in tiles each as large as a full batch of windows: it counts as a full
    batch, so a GPU task takes one block; so does a classifier whose backbone runs once per block."""
    if isinstance(detail, PixelPlan) or detail.path == "block":
        return GPU_WINDOWS_PER_TASK
    side = grid.cells_per_chunk * grid.stride_px + 2 * grid.margin_px
    return (max(0, side - grid.window_px) // detail.stride_px + 1) ** 2


def gpu_group_size(windows_per_block: int) -> int:
    """Blocks per classification task on a GPU worker: enough windows for one full batch."""
    return max(1, -(-GPU_WINDOWS_PER_TASK // max(1, windows_per_block)))


def classify_stream(
    client,
    works: Iterable,
    prepare: Callable[[list], list],
    model: ModelRef,
    detail: DetailPlan | PixelPlan,
    min_clear: float,
    *,
    gpu: bool,
    in_flight: int,
    group: int = 1,
    read_key: Callable[[object], object] = id,
    read_size: int = 1,
    before_first: Callable[[], None] = lambda: None,
    tap: Callable[[object, object], object] | None = None,
) -> Iterator[tuple[object, np.ndarray, bool, object]]:
    """Run the blocks of ``works`` on the cluster and yield ``(work, values, computed, tapped)`` as each lands.

    ``works`` are planned lazily (``work.stored`` holds a result a store already had: it is
    yielded at once, uncomputed). Consecutive works with the same ``read_key`` (at most
    ``read_size`` of them) are read together: ``prepare(works)`` gives each its lazy composite
    planes (reads and composite, dask arrays that may share one task) and runs on any worker.
    Each block is classified by its own :func:`classify_blocks` task, or ``group`` blocks by one,
    which asks for the GPU resource when ``gpu`` (GPU workers only classify while every worker
    reads). At most ``in_flight`` classification tasks are on the cluster at once, so the client
    holds what is in flight, not the area. ``before_first`` runs before the first submission
    (loading the model on the workers only when something is computed). ``tap(work, planes)``
    submits a task of its own on a computed block's planes (a future); its result comes as
    ``tapped`` with the block (None for stored blocks, or without ``tap``).
    """
    from itertools import groupby

    from distributed import as_completed

    resources = {GPU_RESOURCE: 1} if gpu else None
    works = iter(works)
    running = as_completed()
    groups: dict[str, list] = {}
    tapped: dict[str, object] = {}
    waiting: list = []
    started = False
    exhausted = False

    def submit(batch: list) -> None:
        nonlocal started
        if not started:
            before_first()
            started = True
        planes = [p for _, unit in groupby(batch, key=read_key) for p in prepare(list(unit))]
        prepared = client.compute(planes)
        if tap is not None:
            for work, block_planes in zip(batch, prepared, strict=True):
                tapped[work.key] = tap(work, block_planes)
        parts = [(batch[i:i + 1], prepared[i:i + 1]) for i in range(len(batch))] if group == 1 else [(batch, prepared)]
        for part, inputs in parts:
            key = (f"classify-{part[0].block.index[0]}-{part[0].block.index[1]}-"
                   f"{dask.base.tokenize([w.key for w in part], model.key)}")
            future = client.submit(classify_blocks, inputs, [w.block for w in part], model, detail, min_clear, key=key,
                                   resources=resources)
            groups[future.key] = part
            running.add(future)

    def unit_complete() -> bool:
        last = read_key(waiting[-1])
        return sum(1 for w in waiting if read_key(w) == last) >= read_size

    def fill() -> Iterator[tuple[object, np.ndarray, bool]]:
        nonlocal exhausted
        while not exhausted and running.count() < in_flight:
            work = next(works, None)
            if work is None:
                exhausted = True
                if waiting:
                    submit(waiting[:])
                    waiting.clear()
            elif work.stored is not None:
                yield work, work.stored, False, None
            else:
                # A read group is never split between submissions when it can be helped.
                if len(waiting) >= group and read_key(work) != read_key(waiting[-1]):
                    submit(waiting[:])
                    waiting.clear()
                waiting.append(work)
                if len(waiting) >= group and unit_complete():
                    submit(waiting[:])
                    waiting.clear()

    yield from fill()
    while running.count():
        future = next(running)
        batch = groups.pop(future.key)
        for work, values in zip(batch, future.result(), strict=True):
            extra = tapped.pop(work.key, None)
            yield work, values, True, (extra.result() if extra is not None else None)
        future.release()
        yield from fill()
