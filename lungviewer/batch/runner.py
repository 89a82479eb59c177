"""The batch client: find the units under SOURCE, skip what the results database already
holds for the same input and models, run the rest on Dask (a ``LocalCluster`` of worker
processes, or an existing scheduler), and write each result as it completes.

Crash safety comes from the database, not from Dask: every unit to run is first upserted as
``pending`` (one transaction), every finished one is upserted with its result (one
transaction each), and a rerun runs whatever is not ``done`` for the same fingerprint and
models. A worker that dies mid-task is replaced by its nanny and the scheduler reruns its
task elsewhere (``distributed.scheduler.allowed-failures`` times, then the row fails with
the reason); a task that raises is retried once (``retries``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lungviewer.session import DEFAULT_OPERATING_POINT

from .db import ResultsDB
from .units import Unit, discover, model_versions, models_key

log = logging.getLogger(__name__)

#: seconds a LocalCluster worker waits for a scheduler that went away (a killed client)
#: before it exits on its own
DEATH_TIMEOUT = 20


@dataclass
class Summary:
    """What a run did. ``done``/``failed``: ran now; ``already``: done (or failed on its
    input, or skipped) before with the same fingerprint and models, not run again;
    ``skipped``: not CT images to analyse (localizer, dose report), found now."""

    found: int = 0
    done: int = 0
    failed: int = 0
    already: int = 0
    skipped: int = 0
    seconds: float = 0.0
    cluster_s: float = 0.0  # starting (or reaching) the cluster
    compute_s: float = 0.0  # first task submitted .. last result written
    per_series: list[dict] = field(default_factory=list)  # label, status, seconds, reason
    workers: dict[int, float] = field(default_factory=dict)  # pid -> peak RSS MiB

    def as_dict(self) -> dict:
        return {"found": self.found, "done": self.done, "failed": self.failed,
                "already": self.already, "skipped": self.skipped,
                "seconds": round(self.seconds, 3), "cluster_s": round(self.cluster_s, 3),
                "compute_s": round(self.compute_s, 3), "per_series": self.per_series,
                "worker_peak_rss_mb": {str(k): v for k, v in self.workers.items()}}


def to_run(db: ResultsDB, units: list[Unit], models: dict, retry_failed: bool = False
           ) -> tuple[list[Unit], list[Unit], list[Unit]]:
    """(units to run, units already done with this input and models, units not for CAD)."""
    mk = models_key(models)
    run, already, skip = [], [], []
    for u in units:
        row = db.row(u.key)
        if u.not_for_cad:
            if row is not None and row["status"] == "skipped" and \
                    row["fingerprint"] == u.fingerprint:
                already.append(u)
            else:
                skip.append(u)
            continue
        same = row is not None and row["fingerprint"] == u.fingerprint and row["models_key"] == mk
        if same and (row["status"] == "done" or (
                row["status"] == "failed" and not row["retry"] and not retry_failed)):
            already.append(u)
        else:
            run.append(u)
    return run, already, skip


def make_client(workers: int | None = None, scheduler: str | None = None,
                memory_limit: str | int = "auto"):
    """A Dask client: on ``scheduler`` (``tcp://host:port``), or on a new LocalCluster of
    ``workers`` processes with one thread each (default: one per core). Returns
    ``(client, cluster or None)``."""
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
    import os

    import dask

    n = workers or max(1, os.cpu_count() or 1)
    # the workers' statistical profiler samples every thread's stack every 10 ms: CPU taken
    # from the CAD for a dashboard nobody looks at here (the workers get this config)
    # and no MALLOC_TRIM_THRESHOLD_ (Dask's default 64 KiB turns glibc's adaptive mmap
    # threshold off: every array of the pipeline is mapped and zeroed afresh, +14 % CPU per
    # series measured); arrays above 32 MiB are still mapped and given back when freed
    dask.config.set({"distributed.worker.profile.enabled": False,
                     "distributed.nanny.pre-spawn-environ": {
                         "OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
                         "OPENBLAS_NUM_THREADS": 1}})
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           memory_limit=memory_limit, dashboard_address=None,
                           host="127.0.0.1", death_timeout=DEATH_TIMEOUT,
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def run_batch(source: str | Path, db_path: str | Path, *, workers: int | None = None,
              scheduler: str | None = None, timeout: float | None = 600.0,
              device: str = "cpu", operating_point: int = DEFAULT_OPERATING_POINT,
              memory_limit: str | int = "auto", retry_failed: bool = False,
              weights_dir: str | None = None,
              progress: Callable[[int, int, dict | None], None] | None = None,
              on_result: Callable[[dict], None] | None = None) -> Summary:
    """Analyse every series under ``source`` into the database at ``db_path``; see the
    module docstring. ``progress(done, total, result)`` is called after each unit;
    ``on_result(result)`` too (tests kill a worker from it)."""
    t0 = time.perf_counter()
    models = model_versions(weights_dir)
    units = discover(source)
    summary = Summary(found=len(units))
    with ResultsDB(db_path) as db:
        run, already, skip = to_run(db, units, models, retry_failed)
        summary.already = len(already)
        if skip:
            db.mark(skip, "skipped", models, {u.key: u.reason for u in skip})
            summary.skipped = len(skip)
        for u in skip:
            summary.per_series.append({"label": u.label, "status": "skipped",
                                       "seconds": 0.0, "reason": u.reason})
        total = len(run)
        if progress is not None:
            progress(0, total, None)
        if run:
            db.mark(run, "pending", models)
            _run_on_dask(db, run, models, summary, workers, scheduler, timeout, device,
                         operating_point, memory_limit, weights_dir, progress, on_result)
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_on_dask(db, run, models, summary, workers, scheduler, timeout, device,
                 operating_point, memory_limit, weights_dir, progress, on_result) -> None:
    from distributed import as_completed

    from .task import analyze_unit

    by_key = {u.key: u for u in run}
    t0 = time.perf_counter()
    client, cluster = make_client(workers, scheduler, memory_limit)
    t1 = time.perf_counter()
    summary.cluster_s = t1 - t0
    try:
        futures = {}
        for u in run:
            fut = client.submit(analyze_unit, u.as_dict(), timeout, device, operating_point,
                                weights_dir, key=f"lungviewer-{u.label}-{u.fingerprint[:12]}",
                                retries=1, pure=False)
            futures[fut] = u.key
        for n, fut in enumerate(as_completed(futures), 1):
            unit = by_key[futures[fut]]
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - the worker died on it, or Dask failed
                res = {"key": unit.key, "status": "failed", "retry": True, "timings": {},
                       "reason": _dask_failure(exc)}
            db.record(unit, res, models)
            total_s = res.get("timings", {}).get("total_s", 0.0)
            summary.per_series.append({
                "label": unit.label, "status": res["status"], "seconds": total_s,
                "reason": unit.redact(res.get("reason", "")),
                "engine_s": res.get("timings", {}).get("engine_s", 0.0),
                "cpu_s": res.get("timings", {}).get("cpu_s"),
                "lung_rads_s": res.get("timings", {}).get("lung_rads_s", 0.0),
                "lung_rads_cpu_s": res.get("timings", {}).get("lung_rads_cpu_s", 0.0),
                "peak_rss_mb": res.get("peak_rss_mb"), "rss_start_mb": res.get("rss_start_mb")})
            setattr(summary, res["status"], getattr(summary, res["status"]) + 1)
            if res.get("worker_pid"):
                pid = int(res["worker_pid"])
                summary.workers[pid] = max(summary.workers.get(pid, 0.0),
                                           float(res.get("peak_rss_mb") or 0.0))
            fut.release()
            if on_result is not None:
                on_result(res)
            if progress is not None:
                progress(n, len(run), res)
        summary.compute_s = time.perf_counter() - t1
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _dask_failure(exc: Exception) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return ("the worker process running it died each time it was tried (out of memory "
                "or killed)")
    return f"{name}: {exc}" if str(exc) else name
