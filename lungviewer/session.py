"""StudySession: the Qt-free pipeline and state of one open study (docs/ARCHITECTURE.md).

The session owns everything the viewer knows about the study on screen: the volume and its
folder, the lung mask, the readers' annotations, the CAD engine, the CAD findings and slice
ranking, the last box scores and nodule segmentation, and the reading (marks, measurements,
nodules) that is saved with the study. The viewer, ``analyze``, ``export``, the screenshot
mode and the self-test all drive this one object; none of them re-implements the chain.

**Jobs.** Each step is a *job*: a generator that yields :class:`Progress` between pieces of
work and returns its result (napari / superqt ``create_worker`` style). A job stops at the
next yield when its driver closes it; the step raises :class:`lungviewer.cancel.Cancelled`.
:func:`run` drives a job in the calling thread (headless use); the Qt views drive the same
jobs on a QThread (``ui/workers.py``). Every job has a blocking twin without the ``_job``
suffix (``session.open(path)`` = ``run(session.open_job(path))``).

**Events.** Listeners added with :meth:`StudySession.subscribe` are called as
``listener(event, payload)`` from the thread that runs the job (the Qt bridge re-emits them
as queued signals in the GUI thread):

===============  =================================================================
event            payload
===============  =================================================================
``opened``       the :class:`~lungviewer.study.volume.Volume` (state was reset)
``annotations``  :class:`~lungviewer.study.annotations.StudyAnnotations`
``mask``         the lung mask, bool ``(z, y, x)``
``engine``       the :class:`~lungviewer.cad.engine.CadEngine`, or ``None`` (failed)
``scan``         :class:`~lungviewer.cad.engine.SliceScores` (also while it fills)
``findings``     list of :class:`~lungviewer.cad.findings.Finding`
``box``          :class:`~lungviewer.cad.engine.BoxScores`
``nodule``       :class:`~lungviewer.reading.volumetry.NoduleSegmentation`
``reading``      the study's reading (after a change)
``message``      a line of text for the study panel
===============  =================================================================

A result belongs to the study it was computed for: every job notes the session's
*generation* when it starts, and a result that arrives after another study was opened is
dropped rather than shown on the wrong patient.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lungviewer.cancel import Cancelled
from lungviewer.contracts import DEMO_PATIENT

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the findings' operating points (false positives per scan on held-out data) and the default
OPERATING_POINTS = (1, 2, 4)
DEFAULT_OPERATING_POINT = 2


def study_findings(engine, volume, mask, progress=None, cancel=None) -> list:
    """The study's CAD findings as the reader sees them: candidates, false-positive
    reduction and calibration (``engine.find_findings``), one finding per lesion with its
    measured size (:func:`lungviewer.reading.lesions.size_findings`: the most likely
    ``SIZED``, whatever their probability — a large lesion's candidates must merge into one
    finding even where the calibrated probability keeps it below every operating point) and
    the malignancy level of the sized findings at or above the least operating point
    (``engine.malignancy_of``); most likely first."""
    from lungviewer.reading.lesions import size_findings

    found = engine.find_findings(volume, mask, progress=progress, cancel=cancel)
    floor = min(engine.operating_points.values(), default=0.0)
    found = size_findings(volume.hu, volume.spacing, mask, found, cancel=cancel)
    engine.malignancy_of(volume, [f for f in found if f.score >= floor and f.sized])
    return found


@dataclass(frozen=True)
class Progress:
    """One step of a job: ``done`` of ``total`` (total 0 = unknown) and what it is doing."""

    done: int
    total: int
    text: str


Job = Generator[Progress, None, T]
Listener = Callable[[str, Any], None]


def run(job: Job[T], progress: Callable[[Progress], None] | None = None,
        cancel: Callable[[], bool] | None = None) -> T:
    """Drive ``job`` to its end in this thread and return its result; ``cancel()`` is asked
    between two yields and stops the job with :class:`Cancelled`."""
    try:
        while True:
            p = next(job)
            if cancel is not None and cancel():
                job.close()
                raise Cancelled("cancelled")
            if progress is not None and p is not None:
                progress(p)
    except StopIteration as stop:
        return stop.value


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, Cancelled)


def call_job(fn: Callable[..., T], *args, text: str = "", **kwargs) -> Job[T]:
    """A job around a library function that reports through ``progress(done, total)`` and
    polls ``cancel()`` (the study, imaging and CAD functions): the function runs on a helper
    thread, its progress comes out as yields, and closing the job tells it to stop (and
    waits for it, so no work outlives its job)."""
    updates: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    pool = ThreadPoolExecutor(1, thread_name_prefix="lungviewer-job")
    fut = pool.submit(fn, *args, progress=lambda d, n: updates.put((int(d), int(n))),
                      cancel=stop.is_set, **kwargs)
    pool.shutdown(wait=False)
    finished = False
    try:
        yield Progress(0, 0, text)
        while True:
            try:
                d, n = updates.get(timeout=0.05)
            except queue.Empty:
                if fut.done():
                    break
                yield Progress(-1, -1, text)  # a heartbeat: the driver may cancel here
                continue
            yield Progress(d, n, text)
        try:
            result = fut.result()
        except BaseException as exc:
            if _is_cancel(exc):
                raise Cancelled(f"{text or 'the job'} was cancelled") from exc
            raise
        finished = True
        return result
    finally:
        if not finished:
            stop.set()
            try:
                fut.result(timeout=30)
            except BaseException:  # noqa: BLE001 - the job is being abandoned
                pass


def read_annotations(volume, folder, progress=None, cancel=None):
    """The readers' annotations of ``volume`` (its folder's LIDC XML, else the LIDC
    database); the lookup itself cannot stop half-way, so cancel is checked around it."""
    from lungviewer.cancel import check
    from lungviewer.study.nodules import load_study_annotations

    check(cancel, "reading the annotations")
    ann = load_study_annotations(volume, folder)
    check(cancel, "reading the annotations")
    return ann


class StudySession:
    """The state and steps of one open study (a new :meth:`open_job` replaces the study)."""

    def __init__(self, autosave: bool = True) -> None:
        self.autosave = autosave  # False: the reading changes in memory only (export)
        self.reading_saved = False  # the open study's reading came from the store
        self.reading_writable = True  # False: the saved file was unreadable and is kept as is
        #: a saved reading of this series made on other images: offered, not applied
        #: (:meth:`apply_offered_reading`)
        self.offered_reading = None
        self._save_qualified = False
        #: why the last save of the reading failed (None: it was saved, or never tried)
        self.save_error: str | None = None
        self.volume = None
        self.folder: Path | None = None
        self.mask = None
        self.annotations = None
        self.scan_result = None  # SliceScores
        self.findings: list | None = None
        self.box_scores = None
        self.nodule = None
        self.reading = None
        self.engine = None
        self.engine_error: str | None = None
        self.engine_loading = False
        self.generation = 0
        #: the findings' operating point: false positives per scan on held-out data (one of
        #: OPERATING_POINTS); the viewer remembers the reader's choice
        self.operating_point = DEFAULT_OPERATING_POINT
        #: the viewer's callable that saves the reading (off its GUI thread); None: the
        #: session writes it itself
        self.saver = None
        self._listeners: list[Listener] = []
        self._box_lock = threading.Lock()  # one box at a time through the networks

    # -- events --------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event, payload)`` on every event; returns the unsubscribe call."""
        self._listeners.append(listener)
        return lambda: listener in self._listeners and self._listeners.remove(listener)

    def emit(self, event: str, payload: Any = None) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, payload)
            except Exception:  # noqa: BLE001 - one broken view must not stop the pipeline
                log.exception("a listener failed on %s", event)

    def _current(self, generation: int) -> bool:
        return generation == self.generation

    # -- opening -------------------------------------------------------------------------------
    def open_job(self, path: str | Path, series_uid: str | None = None) -> Job:
        """Load the CT series under ``path`` (folder or file); emits ``opened``."""
        from lungviewer.study.dicom_series import load_series

        path = Path(path)
        volume = yield from call_job(load_series, path, series_uid,
                                     text=f"Loading {path.name}")
        return self.set_volume(volume, path if path.is_dir() else path.parent)

    def demo_job(self, patient_id: str = DEMO_PATIENT) -> Job:
        """Generate (first time only) and load the synthetic twin of ``patient_id``."""
        from lungviewer.synth.demo import load_demo

        volume, folder = yield from call_job(
            load_demo, patient_id, text=f"Preparing the synthetic demo study ({patient_id})")
        return self.set_volume(volume, folder)

    def set_volume(self, volume, folder: str | Path | None = None):
        """Make ``volume`` the session's study (resets everything derived from the last)."""
        self.generation += 1
        self.volume = volume
        self.folder = Path(folder) if folder else None
        self.mask = None
        self.annotations = None
        self.scan_result = None
        self.findings = None
        self.box_scores = None
        self.nodule = None
        self.save_error = None
        self._import_messages: list[str] = []
        self.reading = self._load_reading(volume)
        self.emit("opened", volume)
        for msg in self._import_messages:
            self.emit("message", msg)
        self.emit("reading", self.reading)
        return volume

    def close(self) -> None:
        """Forget the study (late results of its jobs are dropped)."""
        self.generation += 1
        self.volume = self.mask = self.annotations = None
        self.scan_result = self.findings = self.box_scores = self.nodule = self.reading = None

    def _need_volume(self):
        if self.volume is None:
            raise RuntimeError("no study is open")
        return self.volume

    # -- the study's own data ----------------------------------------------------------------
    def annotations_job(self) -> Job:
        """The LIDC readers' nodules (the folder's LIDC XML, else the LIDC database)."""
        volume, gen = self._need_volume(), self.generation
        ann = yield from call_job(read_annotations, volume, self.folder, text="Annotations")
        if self._current(gen):
            self.annotations = ann
            self.emit("annotations", ann)
            for msg in getattr(ann, "messages", []):
                self.emit("message", msg)
        return ann

    def segment_job(self) -> Job:
        """The lung parenchyma mask (threshold method), bool ``(z, y, x)``."""
        from lungviewer.imaging.parenchyma import segment_lungs

        volume, gen = self._need_volume(), self.generation
        res = yield from call_job(segment_lungs, volume.hu, text="Lung parenchyma")
        if self._current(gen):
            self.mask = res.mask
            ml = float(self.mask.sum()) * volume.voxel_volume_ml
            self.emit("mask", self.mask)
            self.emit("message", f"Lung parenchyma (threshold method): {ml:.0f} mL")
        return res.mask

    # -- CAD -----------------------------------------------------------------------------------
    def engine_job(self, device: str = "auto") -> Job:
        """Load the CAD networks (checksums verified); emits ``engine`` (None on failure)."""
        self.engine_loading = True
        self.engine_error = None
        try:
            from lungviewer.cad.engine import CadEngine

            engine = yield from call_job(lambda progress=None, cancel=None:
                                         CadEngine.load(device=device),
                                         text="Loading the CAD models")
        except Cancelled:
            self.engine_loading = False
            raise
        except Exception as exc:  # noqa: BLE001 - reported, the viewer works without CAD
            self.engine_error = str(exc) or type(exc).__name__
            self.engine_loading = False
            self.emit("engine", None)
            raise
        self.engine = engine
        self.engine_loading = False
        self.emit("engine", engine)
        return engine

    def scan_job(self) -> Job:
        """The whole-study CAD scan: the CAD findings (marks added to the reading) and the
        slice ranking read off them (``findings``, then ``scan``). Waits for the CAD engine
        if it is still loading; without one it does nothing and returns None."""
        volume, gen = self._need_volume(), self.generation
        while self.engine is None and self.engine_loading:
            yield Progress(-1, -1, "Waiting for the CAD models")
            time.sleep(0.05)
        engine = self.engine
        if engine is None:
            return None
        mask = self.mask
        if mask is None:
            mask = yield from self.segment_job()
        from lungviewer.cad.findings import CadInputError

        try:
            findings = yield from call_job(study_findings, engine, volume, mask,
                                           text="CAD findings")
        except CadInputError as exc:
            if self._current(gen):
                self.emit("message", f"No CAD findings: {exc}.")
            return None
        return self.use_findings(findings, gen)

    def use_findings(self, findings: list, gen: int | None = None, source: str = ""):
        """Make ``findings`` the study's CAD findings — a scan's, or stored ones (a batch's
        results database, ``source`` names it) shown without running the CAD again: the
        slice ranking read off them, marks in the reading; emits ``findings``, ``scan`` and
        a message. Returns the ranking (dropped, with None, when another study was opened
        since generation ``gen``)."""
        from lungviewer.cad.findings import slice_ranking

        volume = self._need_volume()
        gen = self.generation if gen is None else gen
        result = slice_ranking(findings, volume.n_slices, volume.spacing)
        if not self._current(gen):
            return result
        self.findings = findings
        self.scan_result = result
        if self.reading is not None:
            self.reading.set_cad_marks(findings)
            self.save_reading()
        self.emit("findings", findings)
        self.emit("scan", result)
        shown, below = self.finding_counts()
        self.emit("message", f"CAD findings{f' ({source})' if source else ''}: {shown} shown "
                             f"at {self.operating_point} false positive(s) per scan, {below} "
                             "below.")
        return result

    # -- the operating point ---------------------------------------------------------------------
    @property
    def threshold(self) -> float | None:
        """The probability at or above which findings are shown at the operating point
        (None: the weights have no calibration, every finding is shown)."""
        ops = self.engine.operating_points if self.engine is not None else {}
        return ops.get(self.operating_point)

    def set_operating_point(self, fp_per_scan: int) -> None:
        """Show the findings at ``fp_per_scan`` false positives per scan (one of
        :data:`OPERATING_POINTS`); emits ``reading`` so that the views redraw."""
        if int(fp_per_scan) not in OPERATING_POINTS:
            raise ValueError(f"operating point {fp_per_scan} is not one of "
                             f"{', '.join(map(str, OPERATING_POINTS))} false positives per scan")
        self.operating_point = int(fp_per_scan)
        if self.reading is not None:
            self.emit("reading", self.reading)

    def is_shown(self, item) -> bool:
        """Whether a finding or CAD mark (its ``score``) lies at or above the threshold."""
        t = self.threshold
        return t is None or float(item.score) >= t

    def finding_counts(self) -> tuple[int, int]:
        """(shown, below) findings at the operating point."""
        found = self.findings or []
        shown = sum(self.is_shown(f) for f in found)
        return shown, len(found) - shown

    def score_box_job(self, k: int, box: tuple[int, int, int, int]) -> Job:
        """CAD scores of ``box`` = (row0, col0, row1, col1) on slice ``k``; emits ``box``."""
        volume, gen = self._need_volume(), self.generation
        if not 0 <= int(k) < volume.n_slices:
            raise ValueError(f"slice {k} is outside 0..{volume.n_slices - 1}")
        while self.engine is None and self.engine_loading:
            yield Progress(-1, -1, "Waiting for the CAD models")
            time.sleep(0.05)
        if self.engine is None:
            raise RuntimeError(f"the CAD is unavailable: {self.engine_error or 'not loaded'}")
        engine = self.engine

        def score(progress=None, cancel=None):
            with self._box_lock:
                return engine.score_box(volume, int(k), tuple(int(v) for v in box))

        res = yield from call_job(score, text=f"Scoring the box on image {int(k) + 1}")
        self._fuse_box(res, int(k), box)
        if self._current(gen):
            self.box_scores = res
            if self.reading is not None:
                from lungviewer.reading.model import BoxScore

                score = BoxScore.from_scores(res, engine.manifest, engine.disease_source,
                                             engine.disease_assessment()["why"])
                if self._bounded(lambda: self.reading.add_box_score(score)):
                    self.save_reading()
            self.emit("box", res)
        return res

    def _fuse_box(self, res, k: int, box) -> None:
        """One probability for a box and the finding it lies on: the box shows the finding's
        calibrated probability (the detector's own patch probability is not shown beside
        it); a box on no finding says so, and before the findings exist it has none."""
        from lungviewer.reading.lesions import finding_at

        if self.findings is None:
            res.nodule_prob, res.nodule_source = None, "CAD findings not computed yet"
            return
        f = finding_at(self.findings, k, tuple(int(v) for v in box))
        if f is None:
            res.nodule_prob = None
            res.nodule_source = "no CAD finding here"
        else:
            res.nodule_prob = float(f.score)
            res.nodule_source = (f"CAD finding ({f.kind}, {f.diameter_mm:.1f} mm)"
                                 + ("" if self.is_shown(f) else ", below the operating point"))

    # -- the standard chain ---------------------------------------------------------------------
    def prepare_job(self, scan: bool = True, findings: list | None = None,
                    source: str = "") -> Job:
        """What follows opening: annotations, the lung mask, then (with a CAD engine) the
        slice scan, one after the other (on 2 cores, parallel Python threads would compete
        with the GUI thread). A failed annotation lookup is reported and the chain goes on.
        Stored ``findings`` (from ``source``) replace the scan: the CAD is not run again."""
        gen = self.generation
        try:
            yield from self.annotations_job()
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - reported; the study is still readable
            self.emit("message", f"Annotations could not be read: {exc}")
        if not self._current(gen):
            return None
        yield from self.segment_job()
        if findings is not None and self._current(gen):
            while self.engine is None and self.engine_loading:  # its operating points
                yield Progress(-1, -1, "Waiting for the CAD models")
                time.sleep(0.05)
            self.use_findings(findings, gen, source)
        elif scan and self._current(gen):
            yield from self.scan_job()
        return self.volume

    def opened_and_prepared_job(self, opening: Job, scan: bool = True,
                                stored: Callable[[Any], tuple[list | None, str]] | None = None
                                ) -> Job:
        """``opening`` (:meth:`open_job` or :meth:`demo_job`), then :meth:`prepare_job`: the
        whole path from a folder to a scanned study, as one job. ``stored(volume)`` may give
        findings kept for this very volume (and where from) to show instead of a scan."""
        volume = yield from opening
        findings, source = stored(volume) if stored is not None else (None, "")
        yield from self.prepare_job(scan, findings, source)
        return volume

    # -- blocking twins (headless use) ----------------------------------------------------------
    def open(self, path: str | Path, series_uid: str | None = None):
        return run(self.open_job(path, series_uid))

    def open_demo(self, patient_id: str = DEMO_PATIENT):
        return run(self.demo_job(patient_id))

    def load_annotations(self):
        return run(self.annotations_job())

    def segment(self):
        return run(self.segment_job())

    def load_engine(self, device: str = "auto"):
        return run(self.engine_job(device))

    def scan(self):
        return run(self.scan_job())

    def score_box(self, k: int, box: tuple[int, int, int, int]):
        return run(self.score_box_job(k, box))

    def prepare(self, scan: bool = True):
        return run(self.prepare_job(scan))

    def segment_nodule(self, k: int, box: tuple[int, int, int, int], source: str = "box",
                       cad_mark_id: str = ""):
        return run(self.segment_nodule_job(k, box, source, cad_mark_id))

    def segment_nodule_job(self, k: int, box: tuple[int, int, int, int], source: str = "box",
                           cad_mark_id: str = "") -> Job:
        """Semi-automatic 3-D segmentation of the nodule in ``box`` on slice ``k`` (volume,
        axes, type, Lung-RADS suggestion); added to the reading, emits ``nodule``."""
        from lungviewer.reading.volumetry import segment_nodule

        volume, gen = self._need_volume(), self.generation
        if not 0 <= int(k) < volume.n_slices:
            raise ValueError(f"slice {k} is outside 0..{volume.n_slices - 1}")
        mask = self.mask
        full_box = (int(k), *(int(v) for v in box))
        seg = yield from call_job(lambda progress=None, cancel=None: segment_nodule(
            volume.hu, volume.spacing, full_box, mask), text="Segmenting the nodule")
        if self._current(gen):
            self.nodule = seg
            self.record_nodule(seg, source, cad_mark_id)
            self.emit("nodule", seg)
        return seg

    def export_job(self, out_dir: str | Path, sr: bool = True, seg: bool = True,
                   pdf: bool = True, lung_mask: bool = False,
                   include_patient_name: bool = False, force: bool = False) -> Job:
        """The reading as DICOM SR (TID 1500) / SEG and a PDF report in ``out_dir``
        (``sr.dcm``, ``seg.dcm``, ``report.pdf``; atomic writes, nothing replaced unless
        ``force``). Returns the files written."""
        from lungviewer.reading.export_dicom import export_dicom
        from lungviewer.reading.report_pdf import build_report

        volume, reading = self._need_volume(), self.reading
        out = Path(out_dir)
        if not force and pdf and (out / "report.pdf").exists():
            raise FileExistsError(f"{out / 'report.pdf'} already exists")
        lung = self.mask if lung_mask else None

        def write(progress=None, cancel=None):
            from lungviewer.fileio import WriteError, os_error_line

            try:
                return write_all()
            except WriteError:
                raise
            except OSError as exc:  # one line for the dialog (fileio's rule), never a trace
                if isinstance(exc, FileExistsError) and exc.errno is None:
                    raise
                raise WriteError(os_error_line(exc, "the export", out), exc.errno) from None

        def write_all():
            files = []
            if sr or seg:
                res = export_dicom(reading, volume, out, sr=sr, seg=seg, lung_mask=lung,
                                   force=force)
                files += [p for p in (res.sr, res.seg) if p is not None]
            if pdf:
                out.mkdir(parents=True, exist_ok=True)
                files.append(build_report(reading, volume, out / "report.pdf",
                                          include_patient_name=include_patient_name))
            return files

        return (yield from call_job(write, text="Exporting the reading"))

    # -- the reading ------------------------------------------------------------------------------
    def _load_reading(self, volume):
        """The study's saved reading (a new one if none), with any lungviewer SR/SEG found
        beside the CT when nothing was saved; messages go to the study panel."""
        from lungviewer.reading import store
        from lungviewer.reading.import_dicom import import_beside

        from lungviewer.reading.model import Reading

        from lungviewer.reading.content import content_key, fits, matches

        reading = None
        self.reading_writable = True
        self.offered_reading = None
        self._save_qualified = False
        stored_messages: list[str] = []
        if volume.study_uid:  # an in-memory volume (evaluation) has none: nothing saved
            try:
                stored = store.open_reading(volume.study_uid, volume.series_uid,
                                            content_key(volume))
            except Exception as exc:  # noqa: BLE001 - a broken reading never blocks the study
                # never overwrite what could not be read: this study's reading is not saved
                log.warning("the saved reading could not be read: %s", exc)
                stored = store.StoredReading(None, [f"The saved reading could not be read "
                                                    f"({exc}); it will not be overwritten."],
                                             None, False)
            reading = stored.reading
            self.reading_writable = stored.writable
            self._save_qualified = stored.qualified
            stored_messages = list(stored.messages)
            if reading is not None and not stored.qualified and not matches(reading, volume):
                if not reading.content_key and fits(reading, volume):
                    # saved before content keys: taken as made on these images
                    reading.content_key = content_key(volume)
                    reading.slice_uids = list(volume.sop_uids or [])
                else:  # made on other images of this series: offered, not applied
                    self.offered_reading, reading = reading, None
                    self._save_qualified = True
                    stored_messages.append(
                        f"A saved reading of this series was made on other images "
                        f"({len(self.offered_reading.slice_uids) or 'an unknown number of'} "
                        f"slices; this folder has {volume.n_slices}). It is not shown; it "
                        f"is offered ({len(self.offered_reading.nodules)} nodule(s), "
                        f"{len(self.offered_reading.cad_marks)} CAD mark(s), "
                        f"{len(self.offered_reading.measurements)} measurement(s)), and only "
                        "what lies on slices of this folder can be taken over.")
        self.reading_saved = reading is not None
        reading = reading or Reading.for_volume(volume)
        if self.folder is not None:
            imported = import_beside(volume, self.folder)
            self._import_messages = stored_messages + list(imported.messages)
            if not imported.empty and reading.is_empty:
                reading = imported.to_reading(volume)
                self._import_messages.append(
                    f"Shown from the SR/SEG beside the study: {len(reading.nodules)} "
                    f"nodule(s), {len(reading.cad_marks)} mark(s).")
        else:
            self._import_messages = stored_messages
        return reading

    def save_reading(self) -> None:
        """Write the reading to the user data folder (atomic); emits ``reading``."""
        if self.reading is None:
            return
        if self.autosave and self.reading.study_uid and self.saver is not None:
            self.saver(self.reading)  # the viewer writes it off its GUI thread
        elif self.autosave and self.reading.study_uid:
            from lungviewer.reading import store

            if not self.reading_writable:
                self.save_error = ("the saved reading of this study could not be read and "
                                   "is kept as it was, so changes are not saved")
                self.emit("message", f"The reading was not saved: {self.save_error}.")
            else:
                try:
                    store.save_reading(self.reading, self._save_qualified)
                    self.save_error = None
                except (OSError, ValueError) as exc:
                    self.save_error = str(exc)
                    self.emit("message", f"The reading could not be saved: {exc}")
        self.emit("reading", self.reading)

    def apply_offered_reading(self) -> list[str]:
        """Take over the offered reading (one made on other images of this series): its
        items are moved to this volume's slices by SOPInstanceUID, and what lies on a slice
        this volume lacks is left out (:func:`lungviewer.reading.content.fit_reading`).
        The current reading's own nodules and measurements are kept, and CAD marks at the
        place of offered ones keep the offered verdict. Returns the messages (also emitted)."""
        from lungviewer.reading.content import fit_reading

        if self.offered_reading is None or self.volume is None:
            return []
        fitted = fit_reading(self.offered_reading, self.volume)
        merged, current = fitted.reading, self.reading
        if current is not None:
            if current.cad_marks:
                merged.set_cad_marks(current.cad_marks)
            for n in current.nodules:
                merged.add_nodule(n)
            merged.measurements += [m for m in current.measurements
                                    if m.id not in {x.id for x in merged.measurements}]
            merged.note = current.note or merged.note
        self.reading, self.offered_reading = merged, None
        msgs = [f"The offered reading was taken over: {fitted.kept} item(s)"
                + (f"; left out, on slices this folder lacks: {', '.join(fitted.dropped)}"
                   if fitted.dropped else "") + "."]
        for m in msgs:
            self.emit("message", m)
        self.save_reading()
        return msgs

    def record_nodule(self, seg, source: str = "box", cad_mark_id: str = "") -> None:
        from lungviewer.reading.model import NoduleRecord

        if self.reading is not None:
            kw = {"source": source, "cad_mark_id": cad_mark_id} if cad_mark_id else {}
            if self._bounded(lambda: self.reading.add_nodule(
                    NoduleRecord.from_segmentation(seg, **kw))):
                self.save_reading()

    def set_mark_status(self, mark_id: str, status: str) -> None:
        """Accept, reject or reset (``unreviewed``) a CAD mark of the reading."""
        if self.reading is not None:
            self.reading.set_status(mark_id, status)
            self.save_reading()

    def _bounded(self, change: Callable[[], Any]) -> bool:
        """Apply ``change`` to the reading; past a bound of what a reading may hold
        (:class:`~lungviewer.reading.model.ReadingLimitError`) the reading is left as it was
        and the message goes to the study panel (these are called from Qt slots)."""
        from lungviewer.reading.model import ReadingLimitError

        try:
            change()
        except ReadingLimitError as exc:
            self.emit("message", f"Not recorded: {exc}.")
            return False
        return True

    def set_nodules(self, nodules) -> None:
        """The reading's segmented nodules (replacing its list: the viewer's undo / redo)."""
        if self.reading is not None and self._bounded(
                lambda: self.reading.set_nodules(nodules)):
            self.save_reading()

    def set_measurements(self, measurements) -> None:
        """The reader's measurements (replacing the reading's list)."""
        if self.reading is not None and self._bounded(
                lambda: self.reading.set_measurements(measurements)):
            self.save_reading()

    def set_note(self, text: str) -> None:
        if self.reading is not None and self._bounded(lambda: self.reading.set_note(text)):
            self.save_reading()

    # -- follow-up reading (lungviewer/followup/) ----------------------------------------------
    #: the reader's verdicts on a follow-up pair (``PairResult.verdict``): none, agrees, disagrees
    PAIR_VERDICTS = ("", "confirmed", "rejected")

    def set_pair_verdict(self, index: int, verdict: str) -> None:
        """The reader's verdict on pair ``index`` of the reading's follow-up comparison
        (one of :attr:`PAIR_VERDICTS`), saved with the reading. ValueError for another
        verdict, IndexError when the reading has no such pair."""
        if verdict not in self.PAIR_VERDICTS:
            raise ValueError(f"a pair's verdict is one of {self.PAIR_VERDICTS}, not "
                             f"{verdict!r}")
        fu = self.reading.followup if self.reading is not None else None
        pairs = fu.get("pairs", []) if fu is not None else []
        if not 0 <= int(index) < len(pairs):
            raise IndexError(f"the follow-up comparison has no pair {int(index) + 1}")
        pairs[int(index)]["verdict"] = verdict
        self.reading.touch()
        self.save_reading()

    def prior_job(self, path: str | Path, confirm_other_patient: bool = False,
                  prior_volume=None) -> Job:
        """Open ``path`` as the prior of the open study and compare (``followup.pipeline``):
        prior checked, registered on the lungs, the CAD findings of both exams (the prior's
        run now, with progress) paired. Returns ``(prior volume, Comparison, Registration or
        None)``, kept with the reading; event ``followup``. PriorError for an invalid prior."""
        from lungviewer.followup.compare import nodules_from_findings
        from lungviewer.followup.pipeline import run_comparison
        from lungviewer.study.dicom_series import load_series

        volume, gen = self._need_volume(), self.generation
        prior = prior_volume
        if prior is None:
            prior = yield from call_job(load_series, path, text="Loading the prior")
        while self.engine is None and self.engine_loading:
            yield Progress(-1, -1, "Waiting for the CAD models")
            time.sleep(0.05)
        engine, threshold, own = self.engine, self.threshold, self.findings
        notes: list[str] = []

        def find(vol, mask, progress=None, cancel=None):
            if vol is volume and own is not None:
                return nodules_from_findings(own, threshold)
            if engine is None:
                notes.append("no CAD models: no findings to pair")
                return []
            from lungviewer.cad.findings import CadInputError

            try:
                return nodules_from_findings(study_findings(engine, vol, mask, cancel=cancel),
                                             threshold)
            except (CadInputError, ValueError) as exc:
                notes.append(f"no CAD findings on the {'current' if vol is volume else 'prior'}"
                             f" exam: {exc}")
                return []

        def compare(progress=None, cancel=None):
            return run_comparison(volume, prior, find,
                                  confirm_other_patient=confirm_other_patient,
                                  current_mask=self.mask, cancel=cancel,
                                  progress=lambda d, n, t: progress(d, n) if progress else None)

        comp, reg = yield from call_job(compare, text="Comparing with the prior")
        comp.messages += notes
        if self._current(gen):
            if self.reading is not None:
                self.reading.set_followup(comp.as_dict())
                self.save_reading()
            self.emit("followup", (prior, comp, reg))
        return prior, comp, reg
