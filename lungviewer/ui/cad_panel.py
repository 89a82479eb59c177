"""The CAD assistant in the viewer: box → scores, slice recommendations, similar nodules.

A view of the session's CAD state: the engine loads, boxes are scored and the study is
scanned by :class:`~lungviewer.session.StudySession` jobs on worker threads; the GUI thread
only starts jobs and paints results (the heat strip and the list fill while the scan runs).
"""

from __future__ import annotations

import logging

import numpy as np
from PySide6.QtCore import QObject, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (QFrame, QGridLayout, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QProgressBar, QVBoxLayout, QWidget)

from lungviewer.study.annotations import RATING_WORDS

from .workers import Task

log = logging.getLogger(__name__)


def _pixmap(arr: np.ndarray, size: int = 72, lo: float | None = None,
            hi: float | None = None) -> QPixmap:
    """A small grey thumbnail of a 2-D array (scaled to ``size`` px, nearest neighbour)."""
    a = np.asarray(arr, dtype=np.float32)
    lo = float(a.min()) if lo is None else lo
    hi = float(a.max()) if hi is None else hi
    g = np.clip((a - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    g = np.ascontiguousarray(g)
    img = QImage(g.data, g.shape[1], g.shape[0], g.shape[1], QImage.Format.Format_Grayscale8)
    return QPixmap.fromImage(img.copy()).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                                Qt.TransformationMode.FastTransformation)


def percent(p: float) -> str:
    """A probability as the PDF report writes it (``f"{p:.0%}"``: rounded, not truncated
    as QProgressBar's ``%p%`` is), so that the panel and the report agree."""
    return f"{float(p):.0%}"


def _set_bar(bar: QProgressBar, p: float) -> None:
    bar.setValue(int(round(float(p) * 1000)))
    bar.setFormat(percent(p))


def _note(engine) -> str:
    return f"  ⚠ {engine.note}" if engine is not None and engine.note else ""


class HeatStrip(QWidget):
    """A thin vertical strip beside the slice slider: one cell per slice, brighter = more
    likely to hold a nodule (top = last slice, like the slider)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scores: np.ndarray | None = None
        self.setFixedWidth(10)
        self.setToolTip("CAD slice scores (brighter = more likely to show a nodule)")

    def set_scores(self, scores: np.ndarray | None) -> None:
        self.scores = None if scores is None else np.asarray(scores, dtype=float)
        self.update()

    def paintEvent(self, ev):  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(20, 20, 20))
        s = self.scores
        if s is not None and len(s) and np.isfinite(s).any():
            fin = s[np.isfinite(s)]
            lo, hi = float(fin.min()), float(fin.max())
            s = (s - lo) / max(hi - lo, 1e-6)  # relative within the study
            n, h = len(s), self.height()
            for i, v in enumerate(s):
                if not np.isfinite(v):
                    continue
                c = int(np.clip(v, 0, 1) * 255)
                y0 = h - (i + 1) * h / n
                p.fillRect(QRectF(0, y0, self.width(), h / n + 0.5), QColor(c, c // 3, 0))
        p.end()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(10, 200)


class CadPanel(QWidget):
    """Scores of the boxed region, what the networks saw, similar nodules and the
    recommended slices."""

    jumpToSlice = Signal(int)
    openSimilar = Signal(str, int)  # LIDC patient ID, 0-based slice of its nodule

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        self.status = QLabel("Press B and drag a box around a nodule.")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        thumbs = QHBoxLayout()
        self.thumb_labels = []
        for title in ("nodule patch", "grey patch", "detector 50×50"):
            box = QVBoxLayout()
            img = QLabel()
            img.setFixedSize(72, 72)
            img.setFrameShape(QFrame.Shape.Box)
            cap = QLabel(title)
            cap.setStyleSheet("font-size: 9pt; color: #888;")
            box.addWidget(img)
            box.addWidget(cap)
            thumbs.addLayout(box)
            self.thumb_labels.append(img)
        thumbs.addStretch(1)
        lay.addLayout(thumbs)
        grid = QGridLayout()
        self.mal_bars: list[QProgressBar] = []
        lay.addWidget(QLabel("<b>Malignancy level</b> (LIDC rating scale)"))
        for i in range(5):
            lab = QLabel(f"{i + 1} {RATING_WORDS['malignancy'][i + 1]}")
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setFormat("%p%")
            bar.setMaximumHeight(16)
            grid.addWidget(lab, i, 0)
            grid.addWidget(bar, i, 1)
            self.mal_bars.append(bar)
        lay.addLayout(grid)
        self.disease_title = QLabel("<b>Disease</b>")
        self.disease_title.setWordWrap(True)
        lay.addWidget(self.disease_title)
        self.disease_grid = QGridLayout()
        lay.addLayout(self.disease_grid)
        self.disease_bars: list[QProgressBar] = []
        self.disease_labels: list[QLabel] = []
        self.disease_reliable = False
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        lay.addWidget(QLabel("<b>Most similar annotated nodules</b>"))
        self.similar = QListWidget()
        self.similar.setIconSize(QSize(40, 40))
        self.similar.setMaximumHeight(190)
        self.similar.setToolTip("Double-click (or Enter) opens that patient's synthetic twin "
                                "at the nodule's slice")
        self.similar.itemActivated.connect(
            lambda it: self.openSimilar.emit(*it.data(Qt.ItemDataRole.UserRole)))
        lay.addWidget(self.similar)
        lay.addWidget(QLabel("<b>Recommended slices</b> (click to jump)"))
        self.recommend = QListWidget()
        self.recommend.itemClicked.connect(
            lambda it: self.jumpToSlice.emit(int(it.data(Qt.ItemDataRole.UserRole))))
        lay.addWidget(self.recommend, 1)
        self.caveat = QLabel("")
        self.caveat.setWordWrap(True)
        self.caveat.setStyleSheet("color: #b05000; font-size: 9pt;")
        lay.addWidget(self.caveat)

    # -- painting results ------------------------------------------------------------------
    def set_engine_info(self, engine) -> None:
        names = list(engine.disease_names)
        for i, name in enumerate(names):
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setFormat("%p%")
            bar.setMaximumHeight(16)
            label = QLabel(name)
            self.disease_grid.addWidget(label, i, 0)
            self.disease_grid.addWidget(bar, i, 1)
            self.disease_bars.append(bar)
            self.disease_labels.append(label)
        a = engine.disease_assessment()
        self.disease_reliable = bool(a["reliable"])
        if self.disease_reliable:
            self.disease_title.setText(f"<b>Disease</b> ({engine.disease_source}; accuracy "
                                       f"{a['accuracy']:.2f}, base rate {a['baseline']:.2f})")
        else:  # shown greyed, no class called "most likely"
            self.disease_title.setText(f"<b>Disease</b> <span style='color:gray'>({a['why']}"
                                       f"; {engine.disease_source})</span>")
            for w in self.disease_bars + self.disease_labels:
                w.setEnabled(False)
        self.caveat.setText(engine.caveat)

    def clear_scores(self) -> None:
        """Empty bars, thumbnails and similar nodules (a new study is open)."""
        for bar in self.mal_bars + self.disease_bars:
            bar.reset()
            bar.setFormat("%p%")
        for lab in self.thumb_labels:
            lab.clear()
        self.summary.setText("")
        self.similar.clear()

    def show_pending(self, text: str = "Computing…") -> None:
        self.status.setText(text)

    def show_scores(self, res) -> None:
        for bar, p in zip(self.mal_bars, res.malignancy_probs):
            _set_bar(bar, p)
        for bar, p in zip(self.disease_bars, res.disease_probs):
            _set_bar(bar, p)
        top = int(np.argmax(res.malignancy_probs)) + 1
        dis = res.disease_names[int(np.argmax(res.disease_probs))] if len(res.disease_probs) \
            else "—"
        dis_text = (f"most likely class: <b>{dis}</b>" if self.disease_reliable else
                    "<span style='color:gray'>disease head not better than the base rate: "
                    "no class named</span>")
        prob = ("none here" if res.nodule_prob is None else f"<b>{res.nodule_prob:.0%}</b>")
        self.summary.setText(
            f"Most likely level: <b>{top} – {RATING_WORDS['malignancy'][top]}</b> "
            f"(expected {res.malignancy_expected:.2f}); {dis_text}; "
            f"nodule or mass: {prob} ({res.nodule_source})")
        self.status.setText(f"Box {res.box_mm[0]:.1f}×{res.box_mm[1]:.1f} mm — computed on "
                            f"{res.device} in {res.timings.get('total_ms', 0):.0f} ms")
        thumbs = (res.patch_binary, res.patch_grey, res.detector_patch)
        for lab, arr in zip(self.thumb_labels, thumbs):
            lab.setPixmap(_pixmap(arr))

    def show_similar(self, items) -> None:
        self.similar.clear()
        for s in items:
            it = QListWidgetItem(
                f"{s.patient_id}  nodule {s.nodule}, image {s.slice_index + 1}\n"
                f"readers' malignancy {', '.join(str(m) for m in s.malignancies)}; "
                f"Ø {s.diameter_mm:.0f} mm; distance {s.distance:.3f}")
            it.setData(Qt.ItemDataRole.UserRole, (s.patient_id, int(s.slice_index)))
            if s.thumbnail is not None:
                from PySide6.QtGui import QIcon

                it.setIcon(QIcon(_pixmap(s.thumbnail, 40)))
            self.similar.addItem(it)

    def show_recommendations(self, ranking, scores, labels) -> None:
        self.recommend.clear()
        for k in ranking[:25]:
            it = QListWidgetItem(f"image {k + 1} (index {k})  score {scores[k]:.2f}  "
                                 f"{labels[k]}")
            it.setData(Qt.ItemDataRole.UserRole, int(k))
            self.recommend.addItem(it)


class CadController(QObject):
    """Paints the session's CAD results in the panel and the heat strip, and turns the
    user's box into a scoring job. Each box gets a number; a newer box cancels the older
    job and late answers are ignored. The study scan runs in the session's own chain (after
    the lung mask); this controller only shows it as it fills."""

    scoresShown = Signal(object)  # BoxScores, once painted
    scanDone = Signal(object)  # SliceScores, the finished scan
    boxEnded = Signal()  # the current box's job ended (scored, failed or superseded)

    def __init__(self, session, bridge, run_task, device: str = "auto") -> None:
        super().__init__(bridge)
        self.session = session
        self._run_task = run_task
        self.req = 0
        self.answered = 0
        self._box_task = None
        self._live: set = set()
        self._scan = None  # every started task, kept alive until its thread ended
        self.panel = CadPanel()
        self.strip = HeatStrip()
        self.dock = None  # the window's dock that holds the panel
        bridge.event.connect(self._session_event)
        self.panel.show_pending("Loading the CAD models…")
        self._engine_task = Task(session.engine_job(device), name="cad-engine")
        self._engine_task.failed.connect(self._engine_failed)
        self._engine_task.start()

    # the session's CAD state, for the views and the tests
    @property
    def engine(self):
        return self.session.engine

    @property
    def loading(self) -> bool:
        return self._engine_task.running or self.session.engine_loading

    @property
    def error(self) -> str | None:
        return self.session.engine_error

    @property
    def scan(self):
        """The finished study scan, once shown (None before)."""
        return self._scan

    @property
    def busy(self) -> bool:
        return self.loading or self.answered < self.req

    def _session_event(self, name: str, payload) -> None:
        if name == "engine" and payload is not None:
            self.panel.set_engine_info(payload)
            self.panel.show_pending(self._ready_text())
            box = self._pending_box()
            if box is not None:
                self.request_box(*box)
        elif name == "scan":
            self._show_scan(payload)
            if payload is self.session.scan_result:
                self._scan = payload
                self.scanDone.emit(payload)

    def _pending_box(self):
        return getattr(self, "_last_box", None)

    # -- engine -----------------------------------------------------------------------------
    def _ready_text(self) -> str:
        return (f"CAD ready on {self.engine.device_name}. Press B and drag a box around a "
                "nodule." + _note(self.engine))

    def _engine_failed(self, message: str) -> None:
        self.panel.show_pending(f"CAD unavailable: {message}")

    # -- box ---------------------------------------------------------------------------------
    def request_box(self, k: int, r0: int, c0: int, r1: int, c1: int) -> None:
        if self.session.volume is None:
            return
        self.req += 1
        self._last_box = (k, r0, c0, r1, c1)
        if self._box_task is not None:
            self._box_task.cancel()  # superseded by this box
        if self.engine is None:
            if not self.loading:
                self.answered = self.req
            return  # sent again once the engine is ready
        req = self.req
        self.panel.show_pending(f"Computing box on image {k + 1}…")
        task = Task(self.session.score_box_job(int(k), (r0, c0, r1, c1)), name="cad-box")
        task.finished.connect(lambda res, r=req: self._scored(r, res))
        task.failed.connect(lambda msg, r=req: self._failed(r, msg))
        task.ended.connect(lambda r=req, t=task: (self._live.discard(t), self._box_ended(r)))
        self._box_task = task
        self._live.add(task)
        task.start()

    def _box_ended(self, req: int) -> None:
        if req == self.req:
            self.answered = max(self.answered, req)
            self.boxEnded.emit()

    def _scored(self, req: int, res) -> None:
        if req != self.req:
            return  # a newer box is on its way
        self.answered = req
        self.panel.show_scores(res)
        self.panel.status.setText(self.panel.status.text() + _note(self.engine))
        self.panel.show_similar(res.similar)
        self.scoresShown.emit(res)

    def _failed(self, req: int, message: str) -> None:
        if req == self.req:
            self.answered = req
            self.panel.show_pending(f"CAD failed: {message}")

    # -- study ------------------------------------------------------------------------------------
    def study_changing(self) -> None:
        """Another study is being opened: a box of this one still being scored must not be
        shown on the next, and its results leave the panel."""
        self.req += 1
        self.answered = self.req
        self._last_box = None
        if self._box_task is not None:
            self._box_task.cancel()
        self.panel.clear_scores()
        if self.engine is not None:
            self.panel.show_pending(self._ready_text())
        self._scan = None
        self.strip.set_scores(None)
        self.panel.recommend.clear()

    def _show_scan(self, s) -> None:
        if s is None or len(s.scores) != getattr(self.session.volume, "n_slices", -1):
            return
        self.strip.set_scores(np.where(np.isfinite(s.scores), s.scores, np.nan))
        self.panel.show_recommendations(s.ranking(), s.scores,
                                        [s.label(k) for k in range(len(s.scores))])

    def shutdown(self) -> None:
        for t in (*self._live, self._engine_task):
            t.shutdown()
