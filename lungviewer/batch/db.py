"""The batch's SQLite results database: one row per unit (``key`` UNIQUE), written only by
the batch client, each change in a transaction, always as an upsert — so a rerun after a
crash (of the client or of a worker) cannot duplicate a row, and a row is either its old
state or its new one. WAL journal: the viewer's worklist reads while a batch writes.

The row keeps the series' identity (study, series, patient) here and nowhere else; the
terminal and logs name a series by its anonymous ``label``."""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from .task import LUNG_RADS_ORDER

SCHEMA_VERSION = 1
STATUSES = ("pending", "done", "failed", "skipped")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    kind TEXT NOT NULL,
    folder TEXT NOT NULL,
    study_uid TEXT, series_uid TEXT, patient_id TEXT, study_date TEXT, modality TEXT,
    n_instances INTEGER,
    fingerprint TEXT NOT NULL,
    volume_fingerprint TEXT,
    models TEXT,
    models_key TEXT,
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    reason TEXT,
    retry INTEGER NOT NULL DEFAULT 0,
    findings TEXT,
    n_findings INTEGER, n_shown INTEGER,
    top_probability REAL, top_size_mm REAL,
    lung_rads TEXT, lung_rads_rank INTEGER,
    operating_point INTEGER, threshold REAL,
    slices INTEGER,
    timings TEXT,
    total_s REAL,
    worker_pid INTEGER, peak_rss_mb REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT,
    read INTEGER NOT NULL DEFAULT 0,
    read_at TEXT
);
CREATE INDEX IF NOT EXISTS series_suspicion ON series (top_probability, lung_rads_rank);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""

#: columns of the export (no findings JSON: one line per series)
EXPORT_COLUMNS = ("label", "kind", "study_uid", "series_uid", "patient_id", "study_date",
                  "modality", "n_instances", "slices", "status", "reason", "n_findings",
                  "n_shown", "top_probability", "top_size_mm", "lung_rads", "operating_point",
                  "threshold", "total_s", "peak_rss_mb", "fingerprint", "models_key",
                  "updated_at", "read", "folder")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


class ResultsDB:
    """The results database at ``path`` (created when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        self.con.row_factory = sqlite3.Row
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        with self.transaction():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self.con.execute(stmt)
            self.con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                             (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on an error)."""
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- reading -------------------------------------------------------------------------------
    def rows(self, where: str = "", params: tuple = ()) -> list[dict]:
        sql = "SELECT * FROM series" + (f" WHERE {where}" if where else "") + " ORDER BY id"
        return [dict(r) for r in self.con.execute(sql, params)]

    def row(self, key: str) -> dict | None:
        r = self.con.execute("SELECT * FROM series WHERE key = ?", (key,)).fetchone()
        return None if r is None else dict(r)

    def counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.con.execute(
            "SELECT status, COUNT(*) FROM series GROUP BY status")}

    def worklist(self, status: str | None = None, date_from: str = "",
                 date_to: str = "") -> list[dict]:
        """Rows by suspicion: highest top finding probability, then Lung-RADS (most
        suspicious first); ``status`` and StudyDate (YYYY-MM-DD, inclusive) filter them."""
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if date_from:
            where.append("study_date >= ?")
            params.append(date_from)
        if date_to:
            where.append("study_date <= ?")
            params.append(date_to)
        sql = ("SELECT * FROM series" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY COALESCE(top_probability, -1) DESC,"
                 " COALESCE(lung_rads_rank, -1) DESC, id")
        return [dict(r) for r in self.con.execute(sql, params)]

    # -- writing -------------------------------------------------------------------------------
    def upsert_unit(self, con, unit, status: str, models: dict | None = None,
                    reason: str = "") -> None:
        """The unit's identity and input, with ``status`` (pending before it runs, skipped
        when it is not CT images to analyse); a result already there is cleared."""
        from .units import models_key

        con.execute(
            """INSERT INTO series (key, label, kind, folder, study_uid, series_uid, patient_id,
                   study_date, modality, n_instances, fingerprint, models, models_key, status,
                   reason, updated_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(key) DO UPDATE SET
                   label=excluded.label, kind=excluded.kind, folder=excluded.folder,
                   study_uid=excluded.study_uid, series_uid=excluded.series_uid,
                   patient_id=excluded.patient_id, study_date=excluded.study_date,
                   modality=excluded.modality, n_instances=excluded.n_instances,
                   fingerprint=excluded.fingerprint, models=excluded.models,
                   models_key=excluded.models_key, status=excluded.status,
                   reason=excluded.reason, updated_at=excluded.updated_at,
                   findings=NULL, n_findings=NULL, n_shown=NULL, top_probability=NULL,
                   top_size_mm=NULL, lung_rads=NULL, lung_rads_rank=NULL, retry=0""",
            (unit.key, unit.label, unit.kind, unit.folder, unit.study_uid, unit.series_uid,
             unit.patient_id, unit.study_date, unit.modality, unit.n_instances,
             unit.fingerprint, json.dumps(models or {}, sort_keys=True),
             models_key(models or {}), status, reason, _now()))

    def mark(self, units, status: str, models: dict, reasons: dict | None = None) -> None:
        """Upsert several units with ``status`` in one transaction."""
        with self.transaction() as con:
            for u in units:
                self.upsert_unit(con, u, status, models, (reasons or {}).get(u.key, ""))

    def record(self, unit, result: dict, models: dict) -> None:
        """A finished task's result (done or failed), in one transaction."""
        from .task import lung_rads_rank
        from .units import models_key

        used = result.get("models") or models
        timings = result.get("timings", {})
        with self.transaction() as con:
            self.upsert_unit(con, unit, result["status"], used, result.get("reason", ""))
            con.execute(
                """UPDATE series SET volume_fingerprint=?, retry=?, findings=?, n_findings=?,
                       n_shown=?, top_probability=?, top_size_mm=?, lung_rads=?,
                       lung_rads_rank=?, operating_point=?, threshold=?, slices=?, timings=?,
                       total_s=?, worker_pid=?, peak_rss_mb=?, attempts=attempts + 1,
                       models_key=? WHERE key=?""",
                (result.get("volume_fingerprint"), int(bool(result.get("retry"))),
                 json.dumps(result["findings"]) if "findings" in result else None,
                 result.get("n_findings"), result.get("n_shown"),
                 result.get("top_probability"), result.get("top_size_mm"),
                 result.get("lung_rads") or None,
                 lung_rads_rank(result.get("lung_rads")) if result.get("lung_rads") else None,
                 result.get("operating_point"), result.get("threshold"), result.get("slices"),
                 json.dumps(timings), timings.get("total_s"), result.get("worker_pid"),
                 result.get("peak_rss_mb"), models_key(used), unit.key))

    def set_read(self, key: str, read: bool = True) -> None:
        """The worklist's read / unread flag."""
        with self.transaction() as con:
            con.execute("UPDATE series SET read=?, read_at=? WHERE key=?",
                        (int(read), _now() if read else None, key))

    # -- export --------------------------------------------------------------------------------
    def export(self, path: str | Path) -> Path:
        """The rows as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow)."""
        path = Path(path)
        rows = [{c: r[c] for c in EXPORT_COLUMNS} for r in self.worklist()]
        if path.suffix.lower() == ".parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise ValueError("Parquet export needs pyarrow (pip install pyarrow); "
                                 "export to .csv instead") from exc
            table = pa.Table.from_pylist(rows) if rows else pa.table(
                {c: [] for c in EXPORT_COLUMNS})
            pq.write_table(table, path)
            return path
        if path.suffix.lower() != ".csv":
            raise ValueError(f"export to .csv or .parquet, not {path.name}")
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        tmp.replace(path)
        return path


__all__ = ["ResultsDB", "STATUSES", "EXPORT_COLUMNS", "LUNG_RADS_ORDER"]
