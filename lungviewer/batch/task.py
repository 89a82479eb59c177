"""One unit of a batch, run on a Dask worker: the series through the same
:class:`~lungviewer.session.StudySession` pipeline as ``lungviewer analyze`` (open, lung
mask, CAD findings at the operating point, Lung-RADS of the shown findings the pipeline
segmented), under a time limit. :func:`analyze_unit` never raises for bad input: it returns
a result dict whose ``status`` is ``done`` or ``failed`` with the loader's or the CAD's
one-line reason, so one bad series never stops the others.

The CAD engine is loaded once per worker process and kept (:func:`_engine`); torch uses one
thread per worker."""

from __future__ import annotations

import dataclasses
import os
import resource
import threading
import time

from lungviewer.session import DEFAULT_OPERATING_POINT

#: Lung-RADS categories, least to most suspicious (a study's suggestion: its worst nodule)
LUNG_RADS_ORDER = ("0", "1", "2", "3", "4A", "4B", "4X")
#: at most this many shown, segmented findings get a Lung-RADS suggestion per series
MAX_LUNG_RADS = 3

_engines: dict = {}
_engine_lock = threading.Lock()


def lung_rads_rank(category: str | None) -> int:
    """Order of a Lung-RADS category (-1: none)."""
    return LUNG_RADS_ORDER.index(category) if category in LUNG_RADS_ORDER else -1


def _engine(weights_dir: str | None, device: str):
    """This process's CAD engine (loaded on first use, then kept), with torch limited to
    one thread."""
    from lungviewer.cad.device import limit_threads

    limit_threads(1)
    key = (weights_dir or "", device)
    with _engine_lock:
        if key not in _engines:
            from lungviewer.cad.engine import CadEngine

            _engines[key] = CadEngine.load(weights_dir, device=device)
        return _engines[key]


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / 1024.0 if os.uname().sysname != "Darwin" else r / 2**20, 1)


def rss_mb() -> float | None:
    """Resident memory of this process now (MiB; None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def finding_record(f, threshold) -> dict:
    """A finding for the results database: every field of the Finding (so that the viewer
    can show it again) and whether it is shown at the operating point."""
    d = dataclasses.asdict(f)
    d["shown"] = bool(threshold is None or f.score >= threshold)
    return d


def analyze_unit(unit: dict, timeout: float | None = None, device: str = "cpu",
                 operating_point: int = DEFAULT_OPERATING_POINT,
                 weights_dir: str | None = None) -> dict:
    """Run one unit (a :class:`~lungviewer.batch.units.Unit` as a dict); see the module
    docstring. The result holds the status, reason, findings, top finding, Lung-RADS,
    timings and the worker's pid and peak memory."""
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict = {"key": unit["key"], "status": "failed", "reason": "", "timings": {},
                 "worker_pid": os.getpid()}
    deadline = None if not timeout else time.monotonic() + float(timeout)
    from .units import _quiet_pydicom

    try:
        with _quiet_pydicom():
            _analyze(unit, out, deadline, device, operating_point, weights_dir)
    except Exception as exc:  # noqa: BLE001 - one series' failure is its row, not the batch's
        from lungviewer.cancel import Cancelled

        if isinstance(exc, Cancelled) and deadline is not None:
            out["reason"] = f"time limit of {float(timeout):g} s exceeded"
            out["retry"] = True
        else:
            out["reason"] = str(exc) or type(exc).__name__
            out["retry"] = not _input_error(exc)
        out["status"] = "failed"
    out["timings"]["total_s"] = round(time.perf_counter() - t0, 3)
    out["timings"]["cpu_s"] = round(time.process_time() - c0, 3)  # all of the process's threads
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _input_error(exc: Exception) -> bool:
    """Whether the failure is the input's (the same files fail again: not retried on a
    rerun unless asked)."""
    from lungviewer.cad.findings import CadInputError
    from lungviewer.study.dicom_series import StudyLoadError

    return isinstance(exc, (StudyLoadError, CadInputError))


def _analyze(unit: dict, out: dict, deadline, device, operating_point, weights_dir) -> None:
    from lungviewer.cad.findings import CadInputError
    from lungviewer.session import StudySession, run
    from lungviewer.study.dicom_series import StudyLoadError, load_series

    from .units import versions_of, volume_fingerprint

    def expired() -> bool:
        return deadline is not None and time.monotonic() > deadline

    timings = out["timings"]
    if unit["kind"] == "folder":
        load_series(unit["folder"])  # raises the loader's message for what is there
        raise StudyLoadError("no series found here by the batch's header pass")
    t = time.perf_counter()
    engine = _engine(weights_dir, device)
    timings["engine_s"] = round(time.perf_counter() - t, 3)
    out["models"] = versions_of(engine.manifest)
    out["rss_start_mb"] = rss_mb()
    s = StudySession(autosave=False)
    s.set_operating_point(operating_point)
    messages: list[str] = []
    s.subscribe(lambda ev, payload: messages.append(str(payload)) if ev == "message" else None)
    t = time.perf_counter()
    volume = run(s.open_job(unit["folder"], unit["series_uid"] or None), cancel=expired)
    timings["load_s"] = round(time.perf_counter() - t, 3)
    out["volume_fingerprint"] = volume_fingerprint(volume)
    out["slices"] = int(volume.n_slices)
    out["warnings"] = list(volume.warnings)
    s.engine = engine
    t = time.perf_counter()
    run(s.segment_job(), cancel=expired)
    timings["mask_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    res = run(s.scan_job(), cancel=expired)
    timings["cad_s"] = round(time.perf_counter() - t, 3)
    if res is None:  # the series the findings cannot search: the CAD's own message
        why = next((m for m in messages if m.startswith("No CAD findings")), "no CAD findings")
        raise CadInputError(why.removeprefix("No CAD findings: ").rstrip("."))
    threshold = s.threshold
    findings = sorted(s.findings or [], key=lambda f: -float(f.score))
    records = [finding_record(f, threshold) for f in findings]
    t, c = time.perf_counter(), time.process_time()
    worst = None
    graded = [(f, r) for f, r in zip(findings, records) if r["shown"] and f.sized]
    for f, r in graded[:MAX_LUNG_RADS]:
        z0, z1, y0, y1, x0, x1 = f.extent
        try:
            seg = run(s.segment_nodule_job(int(f.slice), (y0, x0, y1, x1), source="cad"),
                      cancel=expired)
        except ValueError as exc:  # nothing to segment in the box: no suggestion for it
            r["lung_rads_note"] = str(exc)
            continue
        lr = seg.lung_rads
        r["lung_rads"] = lr.category
        r["nodule_type"] = seg.type
        if worst is None or lung_rads_rank(lr.category) > lung_rads_rank(worst):
            worst = lr.category
    timings["lung_rads_s"] = round(time.perf_counter() - t, 3)
    timings["lung_rads_cpu_s"] = round(time.process_time() - c, 3)
    top = records[0] if records else None
    out.update(
        status="done", findings=records, operating_point=int(operating_point),
        threshold=threshold, n_findings=len(records),
        n_shown=sum(r["shown"] for r in records),
        top_probability=None if top is None else round(float(top["score"]), 4),
        top_size_mm=None if top is None else round(float(top["diameter_mm"]), 1),
        lung_rads=worst or "", messages=messages)


def findings_from_records(records: list[dict]) -> list:
    """The :class:`~lungviewer.cad.findings.Finding` objects of stored records
    (:func:`finding_record`), most likely first."""
    from lungviewer.cad.findings import Finding

    names = {f.name for f in dataclasses.fields(Finding)}
    out = []
    for r in records:
        d = {k: v for k, v in r.items() if k in names}
        for k in ("extent", "detector_logits"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        out.append(Finding(**d))
    return sorted(out, key=lambda f: -float(f.score))


def stored_findings(row: dict, volume, versions: dict | None = None) -> tuple[list | None, str]:
    """A results-database row's findings when they belong to ``volume`` as it is now (same
    instances and positions) and to the CAD models installed now (``versions``, default:
    the weights manifest's); else ``(None, why)``."""
    import json

    from .units import model_versions, models_key, volume_fingerprint

    if row.get("status") != "done" or not row.get("findings"):
        return None, f"the batch's result is {row.get('status')}, not done"
    if row.get("volume_fingerprint") != volume_fingerprint(volume):
        return None, "the series changed since the batch ran"
    try:
        current = versions if versions is not None else model_versions()
    except Exception as exc:  # noqa: BLE001 - no weights: the scan will say so
        return None, str(exc)
    if row.get("models_key") != models_key(current):
        return None, "the CAD models changed since the batch ran"
    return findings_from_records(json.loads(row["findings"])), ""
