"""The ledger: one SQLite file in the output root recording every run of every region.

What a run used (STAC items, model sha256, parameters), what it did with each chunk (computed or
read back), what it wrote (checksums) and how it ended (finished, reused, failed, interrupted).
It is what proves a repeated run did no inference, and what ``run-due`` reads to know when a
region last ran.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

LEDGER_NAME = "ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    region TEXT NOT NULL,
    as_of TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'reused', 'failed', 'interrupted')),
    started TEXT NOT NULL,
    ended TEXT,
    seconds REAL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    inputs_key TEXT,
    model_sha256 TEXT,
    parameters TEXT,
    out_dir TEXT,
    reused_from INTEGER REFERENCES runs(id),
    blocks_total INTEGER,
    blocks_computed INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_region ON runs(region, as_of);
CREATE TABLE IF NOT EXISTS run_items (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    item_id TEXT NOT NULL,
    PRIMARY KEY (run_id, item_id)
);
CREATE TABLE IF NOT EXISTS chunks (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    chunk_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('computed', 'reused')),
    at TEXT NOT NULL,
    PRIMARY KEY (run_id, chunk_key)
);
CREATE TABLE IF NOT EXISTS outputs (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""

DONE = ("finished", "reused")


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunRecord:
    id: int
    region: str
    as_of: date
    trigger: str
    status: str
    started: datetime
    ended: datetime | None
    seconds: float | None
    inputs_key: str | None
    model_sha256: str | None
    parameters: dict[str, Any]
    out_dir: Path | None
    reused_from: int | None
    blocks_total: int | None
    blocks_computed: int | None
    error: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        return cls(
            id=row["id"], region=row["region"], as_of=date.fromisoformat(row["as_of"]), trigger=row["trigger"],
            status=row["status"], started=datetime.fromisoformat(row["started"]),
            ended=datetime.fromisoformat(row["ended"]) if row["ended"] else None, seconds=row["seconds"],
            inputs_key=row["inputs_key"], model_sha256=row["model_sha256"],
            parameters=json.loads(row["parameters"] or "{}"),
            out_dir=Path(row["out_dir"]) if row["out_dir"] else None, reused_from=row["reused_from"],
            blocks_total=row["blocks_total"], blocks_computed=row["blocks_computed"], error=row["error"],
        )


class Ledger:
    """The ledger of one output root. Each write is its own committed transaction, so what a
    killed run recorded before it died stays recorded."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Runs of different regions share one ledger: wait for a writer rather than fail.
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_root(cls, root: Path) -> Ledger:
        return cls(Path(root) / LEDGER_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------

    def start_run(self, region: str, as_of: date, trigger: str = "manual") -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs (region, as_of, trigger, status, started, host, pid) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (region, as_of.isoformat(), trigger, now_utc().isoformat(), socket.gethostname(), os.getpid()),
            )
            return int(cur.lastrowid)

    def mark_interrupted(self, region: str) -> list[int]:
        """Runs of ``region`` still marked running: called by the lock holder, so they died."""
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM runs WHERE region = ? AND status = 'running'", (region,))]
            db.executemany(
                "UPDATE runs SET status = 'interrupted', error = 'the process ended without finishing (killed?)' WHERE id = ?",
                [(i,) for i in ids],
            )
        return ids

    def record_inputs(self, run_id: int, *, inputs_key: str, model_sha256: str, parameters: dict[str, Any],
                      item_ids: Iterable[str]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET inputs_key = ?, model_sha256 = ?, parameters = ? WHERE id = ?",
                (inputs_key, model_sha256, json.dumps(parameters, sort_keys=True, default=str), run_id),
            )
            db.executemany("INSERT OR IGNORE INTO run_items VALUES (?, ?)", [(run_id, i) for i in item_ids])

    def record_chunk(self, run_id: int, key: str, status: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)", (run_id, key, status, now_utc().isoformat())
            )

    def record_outputs(self, run_id: int, checksums: dict[str, tuple[str, int]]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outputs WHERE run_id = ?", (run_id,))
            db.executemany(
                "INSERT INTO outputs VALUES (?, ?, ?, ?)",
                [(run_id, name, sha, size) for name, (sha, size) in sorted(checksums.items())],
            )

    def finish(self, run_id: int, *, status: str, out_dir: Path, blocks_total: int, blocks_computed: int,
               reused_from: int | None = None) -> None:
        self._end(run_id, status=status, out_dir=str(out_dir), blocks_total=blocks_total,
                  blocks_computed=blocks_computed, reused_from=reused_from)

    def fail(self, run_id: int, error: str) -> None:
        self._end(run_id, status="failed", error=error)

    def interrupt(self, run_id: int, reason: str) -> None:
        """Ended by the user (Ctrl-C): resumable, and not an attempt that schedules count."""
        self._end(run_id, status="interrupted", error=reason)

    def _end(self, run_id: int, **values: Any) -> None:
        with self._tx() as db:
            started = datetime.fromisoformat(db.execute("SELECT started FROM runs WHERE id = ?", (run_id,)).fetchone()[0])
            ended = now_utc()
            values.update(ended=ended.isoformat(), seconds=(ended - started).total_seconds())
            assignments = ", ".join(f"{k} = ?" for k in values)
            db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))

    # -- reading -------------------------------------------------------------------------

    def run(self, run_id: int) -> RunRecord:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return RunRecord.from_row(row)

    def runs(self, region: str | None = None) -> list[RunRecord]:
        sql, args = ("SELECT * FROM runs ORDER BY id", ()) if region is None else (
            "SELECT * FROM runs WHERE region = ? ORDER BY id", (region,))
        return [RunRecord.from_row(r) for r in self._db.execute(sql, args)]

    def items(self, run_id: int) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT item_id FROM run_items WHERE run_id = ? ORDER BY item_id", (run_id,))]

    def chunks(self, run_id: int) -> dict[str, str]:
        """chunk key -> 'computed' | 'reused' for one run."""
        return {r[0]: r[1] for r in self._db.execute("SELECT chunk_key, status FROM chunks WHERE run_id = ?", (run_id,))}

    def outputs(self, run_id: int) -> dict[str, tuple[str, int]]:
        return {r[0]: (r[1], r[2]) for r in self._db.execute("SELECT name, sha256, bytes FROM outputs WHERE run_id = ?", (run_id,))}

    def finished_with_inputs(self, region: str, inputs_key: str) -> list[RunRecord]:
        """Finished runs of ``region`` made from exactly these inputs, newest first."""
        rows = self._db.execute(
            "SELECT * FROM runs WHERE region = ? AND inputs_key = ? AND status IN ('finished', 'reused') ORDER BY id DESC",
            (region, inputs_key),
        )
        return [RunRecord.from_row(r) for r in rows]

    def previous_done(self, region: str, before: date) -> RunRecord | None:
        """The latest finished run of ``region`` for an earlier as-of date."""
        row = self._db.execute(
            "SELECT * FROM runs WHERE region = ? AND as_of < ? AND status IN ('finished', 'reused') "
            "ORDER BY as_of DESC, id DESC LIMIT 1",
            (region, before.isoformat()),
        ).fetchone()
        return RunRecord.from_row(row) if row else None

    def attempts(self, region: str) -> tuple[datetime | None, list[datetime]]:
        """When the region's last map began (finished or reused run), and when each run that
        failed since then began, oldest first: what its schedule and retries go by. Interrupted
        runs count as neither, so a killed scheduled run is retried at the next check."""
        row = self._db.execute(
            "SELECT MAX(started) FROM runs WHERE region = ? AND status IN ('finished', 'reused')", (region,)
        ).fetchone()
        last_map = datetime.fromisoformat(row[0]) if row and row[0] else None
        failed = self._db.execute(
            "SELECT started FROM runs WHERE region = ? AND status = 'failed' AND started > ? ORDER BY started",
            (region, last_map.isoformat() if last_map else ""),
        ).fetchall()
        return last_map, [datetime.fromisoformat(r[0]) for r in failed]

    def last_attempt(self, region: str) -> datetime | None:
        """When the region last ran to an end (finished, reused or failed): what schedules count.
        Interrupted runs do not count, so a killed scheduled run is retried at the next check."""
        row = self._db.execute(
            "SELECT MAX(started) FROM runs WHERE region = ? AND status IN ('finished', 'reused', 'failed')", (region,)
        ).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None
