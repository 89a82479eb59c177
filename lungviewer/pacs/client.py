"""What the dialog, the ``pacs`` command and the priors lookup call: one function per
operation, whatever the node speaks (DIMSE or DICOMweb). Each long operation takes
``progress(done, total)`` and ``cancel()`` like the study functions, so
:func:`lungviewer.session.call_job` runs it off the GUI thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from . import dimse, web
from .cache import CachedStudy, StudyCache
from .model import DEFAULT_LIMIT, FindResult, Query, SendResult, SeriesInfo, StudyInfo
from .model import series_identifier, study_identifier
from .nodes import Node, PacsError

log = logging.getLogger(__name__)

Cancel = Callable[[], bool] | None
ProgressFn = Callable[[int, int], None] | None


def verify(node: Node) -> float:
    """C-ECHO (DIMSE) or a QIDO-RS ping (DICOMweb); seconds it took."""
    node.validate()
    t0 = time.perf_counter()
    if node.kind == "dicomweb":
        web.ping(node)
    else:
        dimse.echo(node)
    dt = time.perf_counter() - t0
    log.info("PACS %s answered in %.0f ms", node.address(), dt * 1000)
    return dt


def find_studies(node: Node, query: Query, *, limit: int = DEFAULT_LIMIT, offset: int = 0,
                 cancel: Cancel = None, progress: ProgressFn = None) -> FindResult:
    """Studies matching ``query``: at most ``limit`` from ``offset`` on (``more`` says there
    are others: the next page is ``offset + limit``), most recent first within the page."""
    node.validate()
    if limit < 1:
        raise PacsError("the result limit must be at least 1")
    if node.kind == "dicomweb":
        res = web.find_studies(node, query, limit=limit, offset=offset)
    else:
        res = dimse.find(node, study_identifier(query), limit=limit, offset=offset,
                         cancel=cancel)
    res.items = sorted((StudyInfo.from_dataset(d) for d in res.items),
                       key=lambda s: (s.date, s.time), reverse=True)
    log.info("PACS %s: %d stud%s%s", node.address(), len(res.items),
             "y" if len(res.items) == 1 else "ies", " (more available)" if res.more else "")
    return res


def find_series(node: Node, study_uid: str, cancel: Cancel = None,
                progress: ProgressFn = None) -> list[SeriesInfo]:
    node.validate()
    if node.kind == "dicomweb":
        found = web.find_series(node, study_uid)
    else:
        found = dimse.find(node, series_identifier(study_uid), limit=10000,
                           cancel=cancel).items
    out = [SeriesInfo.from_dataset(d, study_uid) for d in found]

    def order(s: SeriesInfo):
        try:
            return (0, int(s.number))
        except ValueError:
            return (1, 0)
    return sorted(out, key=order)


def retrieve(node: Node, study_uid: str, series_uid: str | None = None, *,
             method: str | None = None, cache: StudyCache | None = None,
             study: StudyInfo | None = None, progress: ProgressFn = None,
             cancel: Cancel = None) -> CachedStudy:
    """Retrieve a study (or one series) into the study cache by ``method`` (``get``,
    ``move`` or ``wado``; default: the node's). Returns the cache entry; a series is
    complete there only if the retrieve finished. An interruption raises
    :class:`PacsError` and leaves what arrived marked incomplete."""
    node.validate()
    method = method or node.retrieve
    if node.kind == "dicomweb":
        method = "wado"
    elif method not in ("get", "move"):
        raise PacsError(f"a DIMSE node retrieves by 'get' or 'move', not {method!r}")
    cache = cache or StudyCache()
    r = cache.begin(study_uid, series_uid)
    fn = {"get": dimse.get, "move": dimse.move, "wado": web.retrieve}[method]
    t0 = time.perf_counter()
    complete = False
    info = {"date": study.date, "description": study.description} if study else {}
    try:
        complete = fn(node, study_uid, series_uid, r, progress=progress, cancel=cancel)
    except BaseException:  # cancelled, refused, aborted, disk full: kept as incomplete
        r.finish(False, info)
        raise
    entry = r.finish(complete, info)
    log.info("PACS %s: %s of %d instance(s) in %.1f s%s", node.address(), method.upper(),
             r.received, time.perf_counter() - t0, "" if complete else " (INCOMPLETE)")
    if not complete:
        raise PacsError(f"{node.address()}: the retrieve ended with instances missing "
                        f"({r.received} arrived); kept as incomplete: retrieve again")
    return entry


def collect_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files named, and every file under the folders named (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()
                              and not f.name.startswith(".")))
        elif p.is_file():
            out.append(p)
        else:
            raise PacsError(f"{p} does not exist")
    if not out:
        raise PacsError("nothing to send: no files found")
    return out


def send(node: Node, paths: Iterable[str | Path], progress: ProgressFn = None,
         cancel: Cancel = None) -> list[SendResult]:
    """Send files (or every file under folders) by C-STORE or STOW-RS; the PACS's answer
    per object. A failed object can be sent again with the same call."""
    node.validate()
    files = collect_files(paths)
    if node.kind == "dicomweb":
        res = web.stow(node, files, progress=progress, cancel=cancel)
    else:
        res = dimse.store(node, files, progress=progress, cancel=cancel)
    log.info("PACS %s: %d of %d object(s) stored", node.address(),
             sum(r.ok for r in res), len(res))
    return res


def find_priors(node: Node, patient_id: str, before_date: str, modality: str = "CT",
                exclude_study_uid: str = "", limit: int = 50) -> list[StudyInfo]:
    """Earlier studies of ``patient_id`` on ``node``: study date before ``before_date``
    (YYYYMMDD, the open study's date) with ``modality`` among the study's modalities,
    newest first. Studies without a date are left out; so is ``exclude_study_uid``."""
    if not patient_id:
        raise PacsError("the open study has no patient ID: priors cannot be looked up")
    before = before_date.replace("-", "")
    if len(before) != 8 or not before.isdigit():
        raise PacsError(f"the open study's date {before_date!r} is not YYYYMMDD")
    res = find_studies(node, Query(patient_id=patient_id, study_date=f"-{before}",
                                   modality=modality), limit=limit)
    out = [s for s in res.items if s.date and s.date < before
           and s.study_uid != exclude_study_uid
           and (not modality or not s.modalities
                or modality in s.modalities.split("\\"))]
    return sorted(out, key=lambda s: (s.date, s.time), reverse=True)
