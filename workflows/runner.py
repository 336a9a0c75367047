"""One run of a region, and the scheduled runs of a folder of regions.

Layout of an output root::

    ledger.sqlite                 every run of every region (see workflows.ledger)
    <region>/run.lock             held while a run of the region is in progress
    <region>/chunks/<key>.npy     finished block results, shared by the region's runs
    <region>/<as-of>/             one finished map (landcover.tif, landcover.gpkg, ..., changes.json)
    <region>/latest -> <as-of>    the newest finished map, switched atomically
    <region>/.work-<as-of>/       the map being made; renamed to <as-of>/ when complete

A run searches first and compares its inputs (item ids, model sha256, parameters) with the
ledger: a match with a finished run is reused without touching the cluster. Otherwise the map is
made with every block result persisted as it lands, so a killed run, started again, computes only
what is missing, and a run with one new scene recomputes only the blocks that scene touches.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from pipeline.errors import LandcoverError, OutputError
from models.files import sha256_file
from pipeline.export.staging import probe_writable
from pipeline.store import DirectoryChunkStore, EmptyChunkStore
from workflows.changes import record_changes
from workflows.ledger import LEDGER_NAME, Ledger, RunRecord
from workflows.lock import RegionLock, RegionLocked
from workflows.region import Region, load_region, region_files
from workflows.schedule import next_attempt, retry_after

log = logging.getLogger(__name__)

LATEST = "latest"
CLASS_RASTER = "landcover.tif"


class RunFailed(LandcoverError):
    """A run ended without a map; the ledger records why."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    region: str
    as_of: date
    status: str  # finished | reused
    out_dir: Path
    blocks_total: int
    blocks_computed: int
    reused_from: int | None
    seconds: float
    changes: dict[str, Any] | None = None
    item_ids: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # map stages, when a map was made


@dataclass(frozen=True)
class RegionPaths:
    root: Path
    region: str

    @property
    def folder(self) -> Path:
        return self.root / self.region

    @property
    def lock(self) -> Path:
        return self.folder / "run.lock"

    @property
    def chunks(self) -> Path:
        return self.folder / "chunks"

    @property
    def latest(self) -> Path:
        return self.folder / LATEST

    def final(self, as_of: date) -> Path:
        return self.folder / as_of.isoformat()

    def work(self, as_of: date) -> Path:
        return self.folder / f".work-{as_of.isoformat()}"


class LedgerChunkStore:
    """A DirectoryChunkStore that records, per run, which chunks were computed and which read back."""

    def __init__(self, store: DirectoryChunkStore, ledger: Ledger, run_id: int) -> None:
        self.store, self.ledger, self.run_id = store, ledger, run_id

    def get(self, key: str) -> np.ndarray | None:
        values = self.store.get(key)
        if values is not None:
            self.ledger.record_chunk(self.run_id, key, "reused")
        return values

    def put(self, key: str, values: np.ndarray) -> None:
        self.store.put(key, values)
        self.ledger.record_chunk(self.run_id, key, "computed")


def check_root(root: Path) -> None:
    """The output root exists (or can be made) and takes files: checked before any work."""
    try:
        probe_writable(root)
    except OSError as exc:
        raise OutputError(
            f"output root {root} is not writable ({exc.strerror or exc}); fix its permissions or pass --root DIR"
        ) from None


def checksums(folder: Path) -> dict[str, tuple[str, int]]:
    """name -> (sha256, bytes) of every file of a finished map."""
    return {p.name: (sha256_file(p), p.stat().st_size) for p in sorted(folder.iterdir()) if p.is_file()}


def outputs_intact(folder: Path, recorded: dict[str, tuple[str, int]]) -> bool:
    """A map can be reused only while every file it recorded is there, unchanged."""
    if not recorded or not folder.is_dir():
        return False
    for name, (sha, size) in recorded.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size or sha256_file(path) != sha:
            return False
    return True


def switch_latest(paths: RegionPaths, as_of: date) -> None:
    """Point ``latest`` at ``as_of`` unless it already points at a newer map (a backfill run)."""
    current = paths.latest
    if current.is_symlink():
        try:
            if date.fromisoformat(os.readlink(current)) > as_of:
                return
        except ValueError:
            pass
    temp = paths.folder / f".latest.{secrets.token_hex(6)}"
    os.symlink(as_of.isoformat(), temp)
    os.replace(temp, current)  # rename(2) over the old link: readers see the old or the new one


def publish(work: Path, final: Path) -> None:
    """Rename the finished work folder to its final name (replacing an older map of that date)."""
    if final.exists():
        old = final.with_name(f".old-{final.name}-{secrets.token_hex(4)}")
        os.replace(final, old)
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, final)


def sweep_leftovers(paths: RegionPaths) -> list[Path]:
    """Work folders and replaced maps a killed run left (called by the lock holder only)."""
    removed = []
    for path in paths.folder.glob(".work-*"):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    for path in paths.folder.glob(".old-*"):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    for path in paths.folder.glob(".latest.*"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _link_or_copy(source: Path, target: Path) -> None:
    # Finished maps are never modified in place (changes are written to copies and renamed),
    # so sharing their files by hard link is safe and costs no space.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def plan_region(region: Region, *, as_of: date | None = None, root: Path | None = None, console: Console | None = None):
    """What ``landcover run`` would do for ``region`` on ``as_of``: its plan and what of it remains,
    with the blocks the region's chunk store already holds counted as done. Reads no pixel and
    writes nothing."""
    from pipeline.run import plan_run

    as_of = as_of or datetime.now(UTC).date()
    paths = RegionPaths(Path(root or region.root).resolve(), region.name)
    chunks = DirectoryChunkStore(paths.chunks) if paths.chunks.is_dir() else EmptyChunkStore()
    return plan_run(region.map_config(paths.work(as_of), as_of), console, chunks=chunks, lattice="aoi")


def run_region(
    region: Region,
    *,
    as_of: date | None = None,
    root: Path | None = None,
    console: Console | None = None,
    trigger: str = "manual",
) -> RunOutcome:
    """One run of ``region`` for ``as_of`` (default: today, UTC) into ``root`` (default: the
    region's). Raises RegionLocked when another run of the region is in progress and RunFailed
    (after recording it in the ledger) when the run cannot finish."""
    console = console or Console(stderr=True)
    if not region.enabled:
        raise RunFailed(f"region {region.name!r} is disabled (enabled: false); edit its root and schedule, then set "
                        "enabled: true")
    as_of = as_of or datetime.now(UTC).date()
    root = Path(root or region.root).resolve()
    check_root(root)
    paths = RegionPaths(root, region.name)
    with RegionLock(paths.lock, region.name) as lock, Ledger.in_root(root) as ledger:
        if lock.took_over:
            console.print(f"[yellow]warning:[/yellow] took over the stale lock of {lock.took_over.describe()}")
        ledger.mark_interrupted(region.name)
        removed = sweep_leftovers(paths)
        if removed:
            console.print(f"removed {len(removed)} leftovers of an interrupted run; finished chunks are kept")
        run_id = ledger.start_run(region.name, as_of, trigger)
        try:
            return _run(region, as_of, paths, ledger, run_id, console)
        except KeyboardInterrupt:
            ledger.interrupt(run_id, "interrupted by the user")
            raise
        except LandcoverError as exc:
            ledger.fail(run_id, str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - a scheduled run must end in the ledger, whatever broke
            message = (str(exc).splitlines() or [""])[0] or type(exc).__name__
            ledger.fail(run_id, f"{type(exc).__name__}: {message}")
            log.debug("run %d of %s failed", run_id, region.name, exc_info=True)
            raise RunFailed(
                f"run {run_id} of region {region.name!r} failed: {type(exc).__name__}: {message}; "
                f"see {ledger.path} and run again to resume"
            ) from exc


def _run(region: Region, as_of: date, paths: RegionPaths, ledger: Ledger, run_id: int, console: Console) -> RunOutcome:
    from pipeline.plan import make_plan
    from pipeline.run import announce, execute, stac_endpoint

    clock = time.perf_counter()
    work, final = paths.work(as_of), paths.final(as_of)
    cfg = region.map_config(work, as_of)
    start, end = cfg.date_window()
    console.print(f"region {region.name}: as of {as_of} (scenes {start} .. {end}), run {run_id}")

    with stac_endpoint(cfg) as catalogue:
        # One search and one hash of the weights: the plan keys the run and, if it must, is executed.
        plan = make_plan(cfg, catalogue, lattice="aoi")
        item_ids = sorted(it.id for it in plan.items)
        parameters = plan.result_parameters()
        key = plan.inputs_key()
        ledger.record_inputs(run_id, inputs_key=key, model_sha256=plan.model.sha256, parameters=parameters,
                             item_ids=item_ids)

        reusable = _reusable(ledger, region.name, key, final)
        if reusable is not None and reusable.out_dir == final:
            ledger.record_outputs(run_id, ledger.outputs(reusable.id))
            ledger.finish(run_id, status="reused", out_dir=final, blocks_total=reusable.blocks_total or 0,
                          blocks_computed=0, reused_from=reusable.id)
            switch_latest(paths, as_of)
            seconds = time.perf_counter() - clock
            console.print(f"[green]unchanged[/green]: same scenes, model and parameters as run {reusable.id}; {final} reused")
            return RunOutcome(run_id, region.name, as_of, "reused", final, reusable.blocks_total or 0, 0,
                              reusable.id, seconds, item_ids=item_ids)

        shutil.rmtree(work, ignore_errors=True)
        if reusable is not None:
            assert reusable.out_dir is not None
            work.mkdir(parents=True)
            for name in ledger.outputs(reusable.id):
                _link_or_copy(reusable.out_dir / name, work / name)
            blocks_total, blocks_computed, status = reusable.blocks_total or 0, 0, "reused"
            timings: dict[str, float] = {}
            console.print(f"same scenes, model and parameters as run {reusable.id} ({reusable.as_of}): its map is reused")
        else:
            chunks = LedgerChunkStore(DirectoryChunkStore(paths.chunks), ledger, run_id)
            announce(plan, console)
            result = execute(plan, console, chunks=chunks)
            blocks_total, blocks_computed, status = result.blocks_total, result.blocks_computed, "finished"
            timings = result.timings
            console.print(f"chunks: {blocks_computed} computed, {blocks_total - blocks_computed} read back of {blocks_total}")

    previous = ledger.previous_done(region.name, as_of)
    previous_tif = previous.out_dir / CLASS_RASTER if previous and previous.out_dir else None
    if previous_tif is not None and not previous_tif.is_file():
        previous_tif = None
    changes = record_changes(work, previous_tif, previous.as_of.isoformat() if previous_tif and previous else None)
    ledger.record_outputs(run_id, checksums(work))
    publish(work, final)
    switch_latest(paths, as_of)
    ledger.finish(run_id, status=status, out_dir=final, blocks_total=blocks_total, blocks_computed=blocks_computed,
                  reused_from=reusable.id if reusable else None)
    seconds = time.perf_counter() - clock
    if changes.get("changed_ha") is not None:
        console.print(f"changes since {changes['previous']}: {changes['changed_ha']:.1f} ha of {changes['compared_ha']:.1f} ha compared")
    console.print(f"[green]done[/green]: {final} ({seconds:.1f} s)")
    return RunOutcome(run_id, region.name, as_of, status, final, blocks_total, blocks_computed,
                      reusable.id if reusable else None, seconds, changes, item_ids, timings)


def _reusable(ledger: Ledger, region: str, key: str, final: Path) -> RunRecord | None:
    """A finished run made from these inputs whose files are intact; the map already at
    ``final`` first (nothing to write), else the newest."""
    candidates = sorted(ledger.finished_with_inputs(region, key), key=lambda r: r.out_dir != final)
    for record in candidates:
        if record.out_dir is not None and outputs_intact(record.out_dir, ledger.outputs(record.id)):
            return record
    return None


@dataclass(frozen=True)
class DueResult:
    region_file: Path
    region: str
    status: str  # finished | reused | not-due | disabled | locked | failed
    message: str = ""
    next_attempt: datetime | None = None  # not-due and failed regions: when run-due will try it


def run_due(
    folder: Path,
    *,
    now: datetime | None = None,
    root: Path | None = None,
    console: Console | None = None,
) -> list[DueResult]:
    """Run, one after another, every enabled region of ``folder`` whose schedule fired since its
    last map; a region whose runs failed since is retried with a growing wait (workflows.schedule).
    A region that fails or is locked does not stop the others. Nothing is written for a region
    that is disabled or not due: a root that does not exist yet is not made."""
    console = console or Console(stderr=True)
    now = now or datetime.now(UTC)
    results = []
    for path in region_files(folder):
        try:
            region = load_region(path)
        except LandcoverError as exc:
            results.append(DueResult(path, path.stem, "failed", str(exc)))
            console.print(f"[red]error:[/red] {exc}")
            continue
        if not region.enabled:
            results.append(DueResult(path, region.name, "disabled", f"set enabled: true in {path} to schedule it"))
            continue
        region_root = Path(root or region.root).resolve()
        failures: list[datetime] = []
        try:
            last_map, failures = _attempts(region_root, region.name)
            when = next_attempt(region.schedule, last_map, failures, now)
            if when > now:
                results.append(DueResult(path, region.name, "not-due", next_attempt=when))
                continue
            outcome = run_region(region, as_of=now.date(), root=region_root, console=console, trigger="schedule")
            results.append(DueResult(path, region.name, outcome.status, str(outcome.out_dir)))
        except RegionLocked as exc:
            results.append(DueResult(path, region.name, "locked", str(exc)))
            console.print(f"[yellow]skipped:[/yellow] {exc}")
        except LandcoverError as exc:
            retry = retry_after([*failures, now]) if region_root.is_dir() else None
            results.append(DueResult(path, region.name, "failed", str(exc), next_attempt=retry))
            console.print(f"[red]error:[/red] {exc}")
    return results


@dataclass(frozen=True)
class RunRow:
    """One run of a region, as `landcover runs` lists it."""

    run_id: int
    as_of: date
    status: str
    scenes: int
    model: str  # sha256, shortened
    changed_ha: float | None
    where: str  # the map's folder, or why the run failed


def run_history(region: Region, *, root: Path | None = None) -> list[RunRow]:
    """The region's runs from its ledger, oldest first (none: it never ran; nothing is made)."""
    root = Path(root or region.root).resolve()
    if not (root / LEDGER_NAME).is_file():
        return []
    rows = []
    with Ledger.in_root(root) as ledger:
        for record in ledger.runs(region.name):
            changes = record.out_dir / "changes.json" if record.out_dir else None
            changed = None
            if changes is not None and changes.is_file():
                changed = json.loads(changes.read_text(encoding="utf-8")).get("changed_ha")
            rows.append(RunRow(record.id, record.as_of, record.status, len(ledger.items(record.id)),
                               (record.model_sha256 or "")[:12], changed,
                               str(record.out_dir) if record.out_dir else (record.error or "")))
    return rows


def _attempts(root: Path, region: str) -> tuple[datetime | None, list[datetime]]:
    """The region's last map and failures since, from its root's ledger (none: never ran)."""
    if not (root / LEDGER_NAME).is_file():
        return None, []
    with Ledger.in_root(root) as ledger:
        return ledger.attempts(region)
