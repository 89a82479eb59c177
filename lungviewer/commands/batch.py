"""``lungviewer batch SOURCE --db results.sqlite [--workers N] [--scheduler ADDR]
[--timeout S] [--export results.csv] [--json]``: the CAD of ``analyze`` on every CT series
under a folder tree, on Dask (a LocalCluster of worker processes by default, or an existing
scheduler), into a resumable SQLite results database (:mod:`lungviewer.batch`).

The terminal shows a progress bar and a summary; series are named by an anonymous label
(``s-…``), never by patient, study or series identifiers (those are in the database only)."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time

from lungviewer.session import DEFAULT_OPERATING_POINT, OPERATING_POINTS


def add_parser(sub):
    p = sub.add_parser("batch", help="CAD on every CT series under a folder tree, on Dask, "
                                     "into a results database")
    p.add_argument("source", help="folder tree of studies (searched recursively)")
    p.add_argument("--db", required=True, help="SQLite results database (created if missing)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of the local cluster (default: one per core)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="an existing Dask scheduler (dask scheduler / dask worker) instead "
                        "of a local cluster")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="time limit per series in seconds (default 600; 0: none)")
    p.add_argument("--memory-limit", default="auto",
                   help="memory limit per local worker, e.g. 4GiB (default: the machine's "
                        "memory shared between the workers)")
    p.add_argument("--export", metavar="FILE", help="write the results as .csv or .parquet")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again series that failed on their input before")
    p.add_argument("--operating-point", type=int, choices=OPERATING_POINTS,
                   default=DEFAULT_OPERATING_POINT, metavar="FP",
                   help=f"false positives per scan (default {DEFAULT_OPERATING_POINT})")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="where each worker runs the networks (default cpu)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


class ProgressBar:
    """A one-line text progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self, stream=sys.stderr, width: int = 30) -> None:
        self.stream, self.width, self.t0 = stream, width, time.perf_counter()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, done: int, total: int, result: dict | None) -> None:
        frac = done / total if total else 1.0
        bar = "#" * int(round(frac * self.width))
        el = time.perf_counter() - self.t0
        eta = f", ~{el / done * (total - done):.0f} s left" if done and done < total else ""
        line = (f"[{bar:<{self.width}}] {done}/{total} series, {el:.0f} s{eta}"
                + (f"  last: {result['status']}" if result else ""))
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        elif done == total or done % max(1, total // 20) == 0:
            self.stream.write(line + "\n")
        self.stream.flush()


def run(args) -> int:
    from lungviewer.batch.db import ResultsDB
    from lungviewer.batch.runner import run_batch
    from lungviewer.cad.manifest import WeightsError
    from lungviewer.study.dicom_series import StudyLoadError

    if not getattr(args, "verbose", False):  # Dask's own INFO lines would drown the bar
        import distributed  # noqa: F401 - it sets its loggers' levels when imported

        for name in list(logging.root.manager.loggerDict):
            if name.split(".")[0] in ("distributed", "dask"):
                logging.getLogger(name).setLevel(logging.WARNING)
    try:
        summary = run_batch(args.source, args.db, workers=args.workers,
                            scheduler=args.scheduler, timeout=args.timeout or None,
                            device=args.device, operating_point=args.operating_point,
                            memory_limit=args.memory_limit, retry_failed=args.retry_failed,
                            progress=None if args.json else ProgressBar())
        if args.export:
            with ResultsDB(args.db) as db:
                db.export(args.export)
    except (StudyLoadError, WeightsError, ValueError, OSError, sqlite3.Error) as exc:
        print(f"lungviewer batch: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
        return 0
    ran = [s for s in summary.per_series if s["status"] in ("done", "failed")]
    for s in summary.per_series:
        why = f"  {s['reason']}" if s["reason"] else ""
        print(f"  {s['label']}  {s['status']:7s} {s['seconds']:6.1f} s{why}")
    mean = sum(s["seconds"] for s in ran) / len(ran) if ran else 0.0
    print(f"{summary.found} found: {summary.done} done, {summary.failed} failed, "
          f"{summary.skipped} skipped (not CT images to analyse), {summary.already} already "
          f"in the database; {summary.seconds:.1f} s in all, {mean:.1f} s per series run")
    if summary.workers:
        print("peak memory per worker: " + ", ".join(
            f"{v:.0f} MiB" for v in summary.workers.values()))
    if args.export:
        print(f"results exported to {args.export}")
    return 0
