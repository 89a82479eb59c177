"""The reading panel: the CAD findings to review (accept / reject), the segmented nodules
with their size, type and Lung-RADS suggestion, and the reader's note.

A view of the session's reading (docs/ARCHITECTURE.md, "The reading"): it lists what the
session's ``reading`` event brings and sends the reader's decisions back to the session,
which saves them with the study. Nothing here computes; segmentation runs as a session job.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPlainTextEdit, QPushButton, QVBoxLayout, QWidget)

from lungviewer.session import DEFAULT_OPERATING_POINT, OPERATING_POINTS

from . import settings
from .workers import Task

log = logging.getLogger(__name__)

#: the keys, for the F1 help text
KEYS = """\
F                      CAD marks on/off
N / Shift+N            next / previous CAD finding (jumps to it)
Y / X / U              accept / reject / un-review the selected finding (stays on it)
Ctrl+Z / Ctrl+Shift+Z  undo / redo (box, measurements, verdicts, segmentations)
V                      segment the boxed nodule (volume, axes, type, Lung-RADS)
"""

STATUS_WORDS = {"unreviewed": "to review", "accepted": "accepted", "rejected": "rejected"}
#: the verdict first in a line, so that a narrow panel cuts the figures, not the verdict
STATUS_SIGNS = {"unreviewed": "○", "accepted": "✓", "rejected": "✗"}
REJECTED_GREY = QColor(140, 140, 140)


SENSITIVITY_TEXTS = {1: "1 FP / scan (specific)", 2: "2 FP / scan", 4: "4 FP / scan (sensitive)"}


def mark_text(number: int, m, shown: bool = True) -> str:
    """One line of the findings list: its kind ("mass" for a mass), image, size, probability;
    the malignancy level only for a finding at or above the operating point (``shown``)."""
    kind = "mass" if m.cls == "mass" else "nodule"
    text = f"#{number} {kind}  im {m.slice + 1}  {m.diameter_mm:.1f} mm  p {m.score:.2f}"
    if shown and getattr(m, "malignancy", 0.0):
        text += f"  malignancy {m.malignancy:.1f}"
    if not shown:
        text += "  (below the operating point)"
    return f"{STATUS_SIGNS.get(m.status, '?')} {text}"


def nodule_text(n) -> str:
    rads = n.lung_rads or {}
    rule = f"Lung-RADS {rads.get('category', '?')} suggested ({rads.get('rule', '')})" \
        if rads else "no Lung-RADS suggestion"
    return (f"{n.type}, {n.volume_mm3:.0f} mm³, long {n.long_axis_mm:.1f} / short "
            f"{n.short_axis_mm:.1f} mm (mean {n.mean_diameter_mm:.1f} mm), "
            f"{n.mean_hu:.0f} HU — {rule}")


class ReadingPanel(QWidget):
    """Findings list with accept/reject, nodules, note (see the module docstring)."""

    markActivated = Signal(object)  # the CadMark to show
    noteEdited = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        self.title = QLabel("<b>CAD findings</b> (Y accept, X reject; N next)")
        self.title.setToolTip("○ to review, ✓ accepted, ✗ rejected")
        self.title.setWordWrap(True)
        lay.addWidget(self.title)
        sens = QHBoxLayout()
        sens.addWidget(QLabel("Sensitivity:"))
        self.sensitivity = QComboBox()
        for fp in OPERATING_POINTS:
            self.sensitivity.addItem(SENSITIVITY_TEXTS.get(fp, f"{fp} FP / scan"), fp)
        self.sensitivity.setToolTip("How many false positive findings per scan the list may "
                                    "hold on average (more: more nodules found, more to "
                                    "reject). Remembered.")
        sens.addWidget(self.sensitivity)
        sens.addStretch(1)
        lay.addLayout(sens)
        self.marks = QListWidget()
        self.marks.setToolTip("Click to show a finding; Y accepts, X rejects, U resets it. "
                              "Rejected findings stay in the list, greyed out.")
        self.marks.setUniformItemSizes(True)  # a list of 100 findings lays out at once
        self.marks.currentItemChanged.connect(self._current_changed)
        lay.addWidget(self.marks, 2)
        row = QHBoxLayout()
        self.accept_button = QPushButton("Accept (Y)")
        self.reject_button = QPushButton("Reject (X)")
        row.addWidget(self.accept_button)
        row.addWidget(self.reject_button)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(QLabel("<b>Segmented nodules</b> (box a nodule, then V)"))
        self.nodules = QListWidget()
        self.nodules.setWordWrap(True)
        lay.addWidget(self.nodules, 1)
        self.lung_rads_note = QLabel("Lung-RADS categories are a suggestion from size and "
                                     "type only, not a diagnosis.")
        self.lung_rads_note.setWordWrap(True)
        self.lung_rads_note.setStyleSheet("color: #b05000; font-size: 9pt;")
        lay.addWidget(self.lung_rads_note)
        lay.addWidget(QLabel("<b>Note</b> (saved with the study)"))
        self.note = QPlainTextEdit()
        self.note.setMaximumHeight(80)
        self.note.setPlaceholderText("The reader's free text for this study")
        lay.addWidget(self.note)
        self._note_timer = QTimer(self, singleShot=True, interval=800)
        self._note_timer.timeout.connect(lambda: self.noteEdited.emit(self.note.toPlainText()))
        self.note.textChanged.connect(self._note_timer.start)
        self._marks: list = []

    def show_reading(self, reading, is_shown=None, operating_point: int | None = None,
                     calibrated: bool = True) -> None:
        """List the reading's CAD marks at or above the operating point (``is_shown(mark)``;
        None: every mark) and the ones the reader accepted below it."""
        current = self.current_mark()
        self.marks.blockSignals(True)
        self.marks.clear()
        every = list(reading.cad_marks) if reading is not None else []
        shown = [bool(is_shown(m)) if is_shown is not None else True for m in every]
        self._marks = [m for m, s in zip(every, shown) if s or m.status == "accepted"]
        flags = [s for m, s in zip(every, shown) if s or m.status == "accepted"]
        for i, (m, flag) in enumerate(zip(self._marks, flags)):
            it = QListWidgetItem(mark_text(i + 1, m, flag))
            it.setToolTip(f"{mark_text(i + 1, m, flag)[2:]} — {STATUS_WORDS.get(m.status)}")
            it.setData(Qt.ItemDataRole.UserRole, m.id)
            if m.status == "rejected":
                it.setForeground(REJECTED_GREY)
                f = it.font()
                f.setStrikeOut(True)
                it.setFont(f)
            elif m.status == "accepted":
                f = it.font()
                f.setBold(True)
                it.setFont(f)
            self.marks.addItem(it)
            if current is not None and m.id == current.id:
                self.marks.setCurrentItem(it)
        self.marks.blockSignals(False)
        self.nodules.clear()
        for n in (reading.nodules if reading is not None else []):
            self.nodules.addItem(QListWidgetItem(nodule_text(n)))
        note = reading.note if reading is not None else ""
        if note != self.note.toPlainText():
            self.note.blockSignals(True)
            self.note.setPlainText(note)
            self.note.blockSignals(False)
        n_acc = sum(m.status == "accepted" for m in self._marks)
        n_rej = sum(m.status == "rejected" for m in self._marks)
        n_shown = sum(shown)
        at = f" at {operating_point} FP / scan" if operating_point else ""
        if not calibrated:
            at = " (uncalibrated CAD weights: no operating point, every finding listed)"
        self.title.setText(f"<b>CAD findings</b>: {n_shown} shown{at}, "
                           f"{len(every) - n_shown} below ({n_acc} accepted, {n_rej} "
                           "rejected) — Y accept, X reject, N next")

    def current_mark(self):
        row = self.marks.currentRow()
        return self._marks[row] if 0 <= row < len(self._marks) else None

    def step(self, delta: int) -> None:
        if not self._marks:
            return
        row = self.marks.currentRow()
        row = 0 if row < 0 else (row + delta) % len(self._marks)
        self.marks.setCurrentRow(row)

    def select_mark(self, mark_id: str) -> None:
        """Make the listed mark ``mark_id`` the current one (it is shown)."""
        for i, m in enumerate(self._marks):
            if m.id == mark_id:
                if self.marks.currentRow() != i:
                    self.marks.setCurrentRow(i)
                return

    def _current_changed(self, item, _previous=None) -> None:
        m = self.current_mark()
        if m is not None:
            self.markActivated.emit(m)


class ReadingController(QObject):
    """Connects the reading panel, the session and the views' CAD marks."""

    marksChanged = Signal(object)  # list of CadMark, for the views
    nodulesChanged = Signal(object)  # list of NoduleRecord, for the views
    showMark = Signal(object)  # CadMark: the views jump there

    def __init__(self, session, bridge, run_task, box_source, history=None) -> None:
        super().__init__(bridge)
        self.session = session
        self._run_task = run_task
        self._box_source = box_source  # () -> (slice, r0, c0, r1, c1) or None
        self.history = history  # lungviewer.ui.undo.History: verdicts, segmentations
        self.panel = ReadingPanel()
        op = int(settings.get("cad/operating_point", DEFAULT_OPERATING_POINT, int))
        if op in OPERATING_POINTS:
            session.set_operating_point(op)
        self.panel.sensitivity.setCurrentIndex(
            OPERATING_POINTS.index(session.operating_point))
        self.panel.sensitivity.currentIndexChanged.connect(
            lambda i: self.set_operating_point(self.panel.sensitivity.itemData(i)))
        bridge.event.connect(self._session_event)
        self.panel.markActivated.connect(self.showMark)
        self.panel.noteEdited.connect(self.session.set_note)
        self.panel.accept_button.clicked.connect(lambda: self.set_status("accepted"))
        self.panel.reject_button.clicked.connect(lambda: self.set_status("rejected"))
        self.act_marks = QAction("CAD &marks", self, shortcut="F", checkable=True)
        self.act_marks.setChecked(True)
        self.act_next = QAction("&Next CAD finding", self, shortcut="N")
        self.act_next.triggered.connect(lambda: self.panel.step(1))
        self.act_prev = QAction("&Previous CAD finding", self, shortcut="Shift+N")
        self.act_prev.triggered.connect(lambda: self.panel.step(-1))
        self.act_accept = QAction("&Accept the finding", self, shortcut="Y")
        self.act_accept.triggered.connect(lambda: self.set_status("accepted"))
        self.act_reject = QAction("&Reject the finding", self, shortcut="X")
        self.act_reject.triggered.connect(lambda: self.set_status("rejected"))
        self.act_unreview = QAction("&Un-review the finding", self, shortcut="U")
        self.act_unreview.triggered.connect(lambda: self.set_status("unreviewed"))
        self.act_segment = QAction("&Segment the boxed nodule", self, shortcut="V")
        self.act_segment.triggered.connect(self.segment_box)
        # Horos, Weasis and syngo keep the finding on screen after a verdict; moving on is
        # the reader's choice (N) unless auto-advance is on
        self.act_auto_advance = QAction("Move to the next finding after Y / X", self,
                                        checkable=True)
        self.act_auto_advance.setChecked(bool(settings.get("review/auto_advance", False,
                                                           bool)))
        self.act_auto_advance.toggled.connect(lambda on: settings.put("review/auto_advance",
                                                                      on))
        self.actions = [self.act_marks, self.act_next, self.act_prev, self.act_accept,
                        self.act_reject, self.act_unreview, self.act_segment,
                        self.act_auto_advance]
        self.act_marks.toggled.connect(lambda _on: self._publish())

    def _session_event(self, name: str, payload) -> None:
        if name == "reading":
            self._show(payload)
            self._publish()
        elif name == "opened":
            self._show(None)
            self._publish()

    def _show(self, reading) -> None:
        s = self.session
        calibrated = s.engine is None or s.threshold is not None
        self.panel.show_reading(reading, s.is_shown, s.operating_point, calibrated)

    @property
    def auto_advance(self) -> bool:
        return self.act_auto_advance.isChecked()

    def set_operating_point(self, fp_per_scan: int) -> None:
        """Show the findings at ``fp_per_scan`` false positives per scan (remembered)."""
        fp = int(fp_per_scan)
        if fp not in OPERATING_POINTS:
            return
        settings.put("cad/operating_point", fp)
        i = OPERATING_POINTS.index(fp)
        if self.panel.sensitivity.currentIndex() != i:
            self.panel.sensitivity.setCurrentIndex(i)  # comes back here once
            return
        self.session.set_operating_point(fp)
        self._show(self.session.reading)
        self._publish()

    def _publish(self) -> None:
        r = self.session.reading
        marks = list(self.panel._marks) if r is not None and self.act_marks.isChecked() else []
        self.marksChanged.emit(marks)
        self.nodulesChanged.emit(list(r.nodules) if r is not None else [])

    def set_status(self, status: str) -> None:
        """The reader's verdict on the selected finding; the selection stays on it unless
        auto-advance is on (undoable)."""
        m = self.panel.current_mark()
        if m is None or self.session.reading is None:
            return
        old = m.status
        if old == status:
            return
        mid = m.id
        self.session.set_mark_status(mid, status)
        if self.history is not None:
            self.history.push(f"{STATUS_WORDS.get(status, status)} finding",
                              lambda: self._restore_status(mid, old),
                              lambda: self._restore_status(mid, status))
        if status != "unreviewed" and self.auto_advance:
            self.panel.step(1)  # the next finding to review

    def _restore_status(self, mark_id: str, status: str) -> None:
        if self.session.reading is None:
            return
        try:
            self.session.set_mark_status(mark_id, status)
        except KeyError:  # the mark went with a re-scan
            return
        self.panel.select_mark(mark_id)

    def segment_box(self) -> Task | None:
        box = self._box_source()
        if box is None or self.session.volume is None:
            return None
        k, r0, c0, r1, c1 = box
        reading = self.session.reading
        before = list(reading.nodules) if reading is not None else []
        task = Task(self.session.segment_nodule_job(k, (r0, c0, r1, c1)), name="volumetry")
        task.failed.connect(lambda msg: self.panel.lung_rads_note.setText(
            f"The nodule could not be segmented: {msg}"))
        task.finished.connect(lambda _seg, r=reading: self._segmented(r, before))
        return self._run_task(task, "Segmenting the nodule")

    def _segmented(self, reading, before: list) -> None:
        if self.history is None or reading is None or reading is not self.session.reading:
            return
        after = list(reading.nodules)
        self.history.push("Segment the nodule",
                          lambda: self.session.set_nodules(before),
                          lambda: self.session.set_nodules(after))
