"""The local study cache: what was retrieved from a PACS, by study and series.

Layout under ``<cache>/pacs/`` (folder names are hashes of the UIDs: no patient data in
paths)::

    <study key>/state.json          what the entry holds and which series are complete
    <study key>/<series key>/*.dcm  one file per instance (written atomically)

A series is *complete* only when a retrieve of it (or of its whole study) ended with every
sub-operation done; until then it is listed as incomplete and :meth:`StudyCache.series_path`
refuses to open it, so an interrupted retrieve is never shown as a whole series. A retry
overwrites what is there and marks it complete. The cache has a size limit: after each
retrieve the least recently used entries go until it fits (the one just written stays).
A full disk stops the retrieve with a clear message and leaves no partial file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lungviewer.fileio import atomic_write_text
from lungviewer.paths import cache_dir

from .nodes import PacsError

log = logging.getLogger(__name__)

#: default size limit (bytes); ``LUNGVIEWER_PACS_CACHE_GB`` overrides it
DEFAULT_LIMIT = 10 * 1024 ** 3
STATE = "state.json"


class CacheFullError(PacsError):
    """The cache's disk has no room left."""


def _key(uid: str) -> str:
    return hashlib.sha1(uid.encode("ascii", "replace")).hexdigest()[:20]


def _write_file(path: Path, data: bytes) -> None:
    """The one place instance bytes reach the disk (tests replace it to fake a full disk).
    Written to a temporary name and renamed like :mod:`lungviewer.fileio`, but without its
    fsync per file (a retrieve writes hundreds): after a power cut a cached file may be
    short; the loader then says so and the study is retrieved again."""
    with open(path, "wb") as fh:
        fh.write(data)


@dataclass
class CachedSeries:
    uid: str
    description: str = ""
    modality: str = ""
    files: int = 0
    complete: bool = False
    path: Path | None = None


@dataclass
class CachedStudy:
    uid: str
    date: str = ""
    description: str = ""
    complete: bool = False          # the whole study was retrieved completely
    bytes: int = 0
    last_used: float = 0.0
    series: list[CachedSeries] = field(default_factory=list)
    path: Path | None = None


class Retrieval:
    """One retrieve into the cache: collects the instances as they arrive (from any
    thread) and, at :meth:`finish`, marks what arrived complete or not."""

    def __init__(self, cache: "StudyCache", study_uid: str, series_uid: str | None) -> None:
        self.cache, self.study_uid, self.series_uid = cache, study_uid, series_uid
        self.received = 0
        self.series: dict[str, dict] = {}
        self.error: Exception | None = None
        self._lock = threading.Lock()

    def add(self, data: bytes, series_uid: str, sop_uid: str, description: str = "",
            modality: str = "") -> Path:
        """Store one instance (its Part-10 bytes); raises :class:`CacheFullError`."""
        if self.error is not None:
            raise self.error
        try:
            path = self.cache._write(self.study_uid, series_uid, sop_uid, data)
        except PacsError as exc:
            self.error = exc
            raise
        with self._lock:
            self.received += 1
            s = self.series.setdefault(series_uid, {"description": description,
                                                    "modality": modality})
            s["description"] = s["description"] or description
            s["modality"] = s["modality"] or modality
        return path

    def finish(self, complete: bool, study: dict | None = None) -> CachedStudy:
        """Record the outcome; ``complete`` only if the PACS said every instance was sent
        and each arrived. Evicts older entries when the cache is over its limit."""
        complete = complete and self.error is None
        self.cache._finish(self, complete, study or {})
        self.cache.evict(keep=self.study_uid)
        return self.cache.study(self.study_uid)


class StudyCache:
    """The cache folder (default ``<cache_dir>/pacs``) with a size limit in bytes."""

    def __init__(self, root: str | Path | None = None, limit_bytes: int | None = None) -> None:
        self.root = Path(root) if root else cache_dir() / "pacs"
        self.root.mkdir(parents=True, exist_ok=True)
        if limit_bytes is None:
            gb = os.environ.get("LUNGVIEWER_PACS_CACHE_GB")
            limit_bytes = int(float(gb) * 1024 ** 3) if gb else DEFAULT_LIMIT
        self.limit = int(limit_bytes)
        self._lock = threading.RLock()

    # -- paths and state -------------------------------------------------------------
    def _study_dir(self, study_uid: str) -> Path:
        return self.root / _key(study_uid)

    def _state(self, study_uid: str) -> dict:
        p = self._study_dir(study_uid) / STATE
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"study_uid": study_uid, "series": {}, "complete": False}

    def _save_state(self, study_uid: str, state: dict) -> None:
        d = self._study_dir(study_uid)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / STATE, json.dumps(state, indent=1))

    def begin(self, study_uid: str, series_uid: str | None = None) -> Retrieval:
        """Start a retrieve: what it may overwrite is marked incomplete first, so a crash
        or an abort never leaves a series that looks whole."""
        with self._lock:
            state = self._state(study_uid)
            state["complete"] = False
            for uid, s in state["series"].items():
                if series_uid is None or uid == series_uid:
                    s["complete"] = False
            if series_uid is not None:
                state["series"].setdefault(series_uid, {"complete": False})
            state["last_used"] = time.time()
            self._save_state(study_uid, state)
        return Retrieval(self, study_uid, series_uid)

    def _write(self, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path:
        folder = self._study_dir(study_uid) / _key(series_uid)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_key(sop_uid)}.dcm"
        tmp = folder / f".{path.name}.part"
        try:
            _write_file(tmp, data)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise CacheFullError(
                    f"the study cache's disk is full ({self.root}): free some space or lower "
                    "the cache limit, then retrieve again") from None
            raise PacsError(f"cannot write into the study cache ({self.root}): "
                            f"{exc.strerror or exc}") from None
        return path

    def _finish(self, r: Retrieval, complete: bool, study: dict) -> None:
        with self._lock:
            state = self._state(r.study_uid)
            for k in ("date", "description"):
                if study.get(k):
                    state[k] = study[k]
            for uid, info in r.series.items():
                s = state["series"].setdefault(uid, {})
                s.update({k: v for k, v in info.items() if v})
                s["complete"] = complete
            if r.series_uid is not None:
                state["series"].setdefault(r.series_uid, {})["complete"] = (
                    complete and r.series_uid in r.series)
            if r.series_uid is None:
                state["complete"] = complete
            state["last_used"] = time.time()
            self._save_state(r.study_uid, state)

    # -- reading -----------------------------------------------------------------------
    def _size(self, folder: Path) -> int:
        total = 0
        for dirpath, _, files in os.walk(folder):
            for f in files:
                try:
                    total += os.stat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total

    def study(self, study_uid: str) -> CachedStudy | None:
        d = self._study_dir(study_uid)
        if not (d / STATE).exists():
            return None
        state = self._state(study_uid)
        series = []
        for uid, s in state.get("series", {}).items():
            folder = d / _key(uid)
            n = sum(1 for f in folder.glob("*.dcm")) if folder.is_dir() else 0
            series.append(CachedSeries(uid, s.get("description", ""), s.get("modality", ""),
                                       n, bool(s.get("complete")) and n > 0, folder))
        return CachedStudy(study_uid, state.get("date", ""), state.get("description", ""),
                           bool(state.get("complete")), self._size(d),
                           float(state.get("last_used", 0.0)), series, d)

    def list(self) -> list[CachedStudy]:
        """Every entry, most recently used first."""
        out = []
        for d in self.root.iterdir():
            if (d / STATE).exists():
                uid = self._state_uid(d)
                if uid:
                    s = self.study(uid)
                    if s is not None:
                        out.append(s)
        return sorted(out, key=lambda s: -s.last_used)

    def _state_uid(self, d: Path) -> str:
        try:
            return json.loads((d / STATE).read_text(encoding="utf-8")).get("study_uid", "")
        except (OSError, ValueError):
            return ""

    def series_path(self, study_uid: str, series_uid: str) -> Path:
        """The folder of a complete cached series (marks the study used); a missing or
        incomplete one is a :class:`PacsError`."""
        s = self.study(study_uid)
        match = next((x for x in (s.series if s else []) if x.uid == series_uid), None)
        if match is None:
            raise PacsError("that series is not in the study cache; retrieve it first")
        if not match.complete:
            raise PacsError("that series is incomplete in the study cache (an interrupted "
                            "retrieve); retrieve it again")
        with self._lock:
            state = self._state(study_uid)
            state["last_used"] = time.time()
            self._save_state(study_uid, state)
        return match.path

    def total_bytes(self) -> int:
        return self._size(self.root)

    def remove(self, study_uid: str) -> None:
        shutil.rmtree(self._study_dir(study_uid), ignore_errors=True)

    def evict(self, keep: str | None = None) -> list[str]:
        """Drop least recently used studies until the cache fits its limit; returns the
        UIDs dropped (``keep`` is never dropped)."""
        with self._lock:
            entries = sorted(self.list(), key=lambda s: s.last_used)
            total = sum(e.bytes for e in entries)
            dropped = []
            for e in entries:
                if total <= self.limit:
                    break
                if e.uid == keep:
                    continue
                self.remove(e.uid)
                total -= e.bytes
                dropped.append(e.uid)
            if dropped:
                log.info("study cache: %d least recently used stud%s evicted (limit %.1f GB)",
                         len(dropped), "y" if len(dropped) == 1 else "ies", self.limit / 1e9)
            return dropped
