"""Batch CAD on a real Dask cluster: a loopback cluster of 2 worker processes over TCP, a tiny
archive of SYNTHETIC chest series and bad ones (corrupt, MR, one slice, empty folder).
Nothing here is skipped: dask and distributed are dependencies of the package."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchgen import write_archive, write_chest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes (one thread each) on 127.0.0.1 over TCP."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol="tcp",
                      host="127.0.0.1", dashboard_address=None) as lc, Client(lc) as client:
        assert lc.scheduler_address.startswith("tcp://127.0.0.1:")
        yield lc, client


def _rows(db: Path) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM series")]
    finally:
        con.close()


def _by_folder(rows, root: Path) -> dict[str, dict]:
    return {os.path.relpath(r["folder"], root.resolve()): r for r in rows}


def test_archive_statuses_rerun_and_export(cluster, tmp_path):
    from lungviewer.batch.db import ResultsDB
    from lungviewer.batch.runner import run_batch

    lc, _ = cluster
    root = tmp_path / "archive"
    expect = write_archive(root, good=2)
    db = tmp_path / "results.sqlite"
    s = run_batch(root, db, scheduler=lc.scheduler_address, timeout=120)
    assert (s.found, s.done, s.failed, s.skipped, s.already) == (7, 2, 4, 1, 0)
    rows = _rows(db)
    assert len(rows) == len({r["key"] for r in rows}) == 7
    got = _by_folder(rows, root)
    assert {k: r["status"] for k, r in got.items()} == expect
    assert "empty" in got["PX/empty"]["reason"]
    assert "not CT" in got["PX/mr"]["reason"]
    assert "too few slices" in got["PX/one"]["reason"]
    assert "No axial CT image series" in got["PX/corrupt"]["reason"]
    assert got["P00/scout"]["reason"] == "localizer (scout) image"
    for k in ("P00/ct", "P01/ct"):
        r = got[k]
        findings = json.loads(r["findings"])
        assert r["n_findings"] == len(findings) > 0
        assert r["top_probability"] == pytest.approx(max(f["score"] for f in findings), abs=1e-4)
        assert r["patient_id"].startswith("BATCH-") and r["study_date"].startswith("2026-01")
        assert r["lung_rads"] and json.loads(r["models"])["detector"]
        assert r["volume_fingerprint"] == r["fingerprint"]
    # identity stays in the database: the summary names series by label only
    text = json.dumps(s.as_dict())
    assert "BATCH-" not in text
    assert all(r["series_uid"] not in text for r in rows if r["series_uid"])

    again = run_batch(root, db, scheduler=lc.scheduler_address, timeout=120)
    assert (again.done, again.failed, again.already, again.skipped) == (0, 0, 7, 0)
    assert [(r["key"], r["attempts"], r["updated_at"]) for r in _rows(db)] == \
        [(r["key"], r["attempts"], r["updated_at"]) for r in rows]

    with ResultsDB(db) as rdb:
        out = rdb.export(tmp_path / "results.csv")
        order = [r["label"] for r in rdb.worklist()]
    lines = out.read_text().splitlines()
    assert len(lines) == 8 and lines[0].startswith("label,")
    assert order[:2] == [r["label"] for r in sorted(rows, key=lambda r: -(
        r["top_probability"] or -1))][:2]

    # a changed series (one more slice) is analysed again, the rest is not
    old = got["P01/ct"]
    write_chest(root / "P01" / "ct", n=15, seed=1, patient_id="BATCH-0001",
                series_uid=old["series_uid"], study_uid=old["study_uid"])
    third = run_batch(root, db, scheduler=lc.scheduler_address, timeout=120)
    assert (third.done, third.already) == (1, 6)
    assert len(_rows(db)) == 7


def test_worker_killed_mid_run(cluster, tmp_path):
    """A worker killed by its PID while it runs a series: the batch still completes and
    every row appears exactly once."""
    from lungviewer.batch.runner import run_batch

    lc, client = cluster
    root = tmp_path / "archive"
    for i in range(3):
        write_chest(root / f"K{i}" / "ct", seed=20 + i, patient_id=f"BATCH-K{i}")
    killed = []

    def kill_one(_res):
        if killed:
            return
        busy = {w: ks for w, ks in client.processing().items() if ks}
        pids = client.run(os.getpid)
        victim = next(iter(busy), next(iter(pids)))
        killed.append((pids[victim], bool(busy)))
        os.kill(pids[victim], signal.SIGKILL)

    db = tmp_path / "results.sqlite"
    s = run_batch(root, db, scheduler=lc.scheduler_address, timeout=120, on_result=kill_one)
    assert killed and killed[0][1], "no series was running when the worker was killed"
    rows = _rows(db)
    assert len(rows) == len({r["key"] for r in rows}) == 3
    assert {r["status"] for r in rows} == {"done"}, [r["reason"] for r in rows]
    assert s.done == 3
    client.wait_for_workers(2, timeout=60)  # the nanny brought the killed one back


def test_client_killed_then_rerun(cluster, tmp_path):
    """`lungviewer batch` killed with SIGKILL mid-run, then run again: every series ends
    done, none twice, and what was done before the kill is not recomputed."""
    lc, _ = cluster
    root = tmp_path / "archive"
    for i in range(4):
        write_chest(root / f"C{i}" / "ct", seed=40 + i, patient_id=f"BATCH-C{i}")
    db = tmp_path / "results.sqlite"
    cmd = [sys.executable, "-m", "lungviewer", "batch", str(root), "--db", str(db),
           "--scheduler", lc.scheduler_address, "--json"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        done_before: dict[str, int] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    done_before = {r["key"]: r["attempts"] for r in _rows(db)
                                   if r["status"] == "done"}
                except sqlite3.OperationalError:
                    done_before = {}
                if done_before:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, "the batch ended before it could be killed"
        assert 0 < len(done_before) < 4
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    mid = _rows(db)
    assert len(mid) == 4 and {r["status"] for r in mid} <= {"done", "pending"}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    rows = _rows(db)
    assert len(rows) == len({r["key"] for r in rows}) == 4
    assert {r["status"] for r in rows} == {"done"}
    assert summary["already"] >= len(done_before)
    assert {r["key"]: r["attempts"] for r in rows if r["key"] in done_before} == done_before
    # the terminal output names no patient
    assert "BATCH-" not in res.stdout + res.stderr


def test_time_limit_fails_the_series(tmp_path):
    """The per-series time limit stops the pipeline at its next step; the row says so and
    is retried on a rerun (it is not the input's fault)."""
    from lungviewer.batch.task import analyze_unit
    from lungviewer.batch.units import discover

    write_chest(tmp_path / "a" / "ct", seed=5)
    unit = discover(tmp_path / "a")[0]
    res = analyze_unit(unit.as_dict(), timeout=1e-6)
    assert res["status"] == "failed" and res["reason"] == "time limit of 1e-06 s exceeded"
    assert res["retry"] is True


def test_export_parquet_needs_pyarrow_or_writes_it(tmp_path):
    from lungviewer.batch.db import ResultsDB

    with ResultsDB(tmp_path / "r.sqlite") as db:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            with pytest.raises(ValueError, match="pyarrow"):
                db.export(tmp_path / "r.parquet")
        else:
            assert db.export(tmp_path / "r.parquet").stat().st_size > 0
        with pytest.raises(ValueError, match=".csv or .parquet"):
            db.export(tmp_path / "r.xlsx")
