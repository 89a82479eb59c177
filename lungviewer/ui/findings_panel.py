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
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPlainTextEdit, QPushButton, QVBoxLayout, QWidget)

from .workers import Task

log = logging.getLogger(__name__)

#: the keys, for the F1 help text
KEYS = """\
F                      CAD marks on/off
N / Shift+N            next / previous CAD finding (jumps to it)
Y / X / U              accept / reject / un-review the selected finding
V                      segment the boxed nodule (volume, axes, type, Lung-RADS)
"""

STATUS_WORDS = {"unreviewed": "to review", "accepted": "accepted", "rejected": "rejected"}
REJECTED_GREY = QColor(140, 140, 140)


def mark_text(number: int, m) -> str:
    return (f"#{number}  image {m.slice + 1}  Ø {m.diameter_mm:.1f} mm  score {m.score:.2f}  "
            f"{m.cls} — {STATUS_WORDS.get(m.status, m.status)}")


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
        lay.addWidget(self.title)
        self.marks = QListWidget()
        self.marks.setToolTip("Click to show a finding; Y accepts, X rejects, U resets it. "
                              "Rejected findings stay in the list, greyed out.")
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

    def show_reading(self, reading) -> None:
        current = self.current_mark()
        self.marks.blockSignals(True)
        self.marks.clear()
        self._marks = list(reading.cad_marks) if reading is not None else []
        for i, m in enumerate(self._marks):
            it = QListWidgetItem(mark_text(i + 1, m))
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
        self.title.setText(f"<b>CAD findings</b>: {len(self._marks)} ({n_acc} accepted, "
                           f"{n_rej} rejected) — Y accept, X reject, N next")

    def current_mark(self):
        row = self.marks.currentRow()
        return self._marks[row] if 0 <= row < len(self._marks) else None

    def step(self, delta: int) -> None:
        if not self._marks:
            return
        row = self.marks.currentRow()
        row = 0 if row < 0 else (row + delta) % len(self._marks)
        self.marks.setCurrentRow(row)

    def _current_changed(self, item, _previous=None) -> None:
        m = self.current_mark()
        if m is not None:
            self.markActivated.emit(m)


class ReadingController(QObject):
    """Connects the reading panel, the session and the views' CAD marks."""

    marksChanged = Signal(object)  # list of CadMark, for the views
    nodulesChanged = Signal(object)  # list of NoduleRecord, for the views
    showMark = Signal(object)  # CadMark: the views jump there

    def __init__(self, session, bridge, run_task, box_source) -> None:
        super().__init__(bridge)
        self.session = session
        self._run_task = run_task
        self._box_source = box_source  # () -> (slice, r0, c0, r1, c1) or None
        self.panel = ReadingPanel()
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
        self.actions = [self.act_marks, self.act_next, self.act_prev, self.act_accept,
                        self.act_reject, self.act_unreview, self.act_segment]
        self.act_marks.toggled.connect(lambda _on: self._publish())

    def _session_event(self, name: str, payload) -> None:
        if name == "reading":
            self.panel.show_reading(payload)
            self._publish()
        elif name == "opened":
            self.panel.show_reading(None)
            self._publish()

    def _publish(self) -> None:
        r = self.session.reading
        marks = list(r.cad_marks) if r is not None and self.act_marks.isChecked() else []
        self.marksChanged.emit(marks)
        self.nodulesChanged.emit(list(r.nodules) if r is not None else [])

    def set_status(self, status: str) -> None:
        m = self.panel.current_mark()
        if m is None or self.session.reading is None:
            return
        self.session.set_mark_status(m.id, status)
        if status != "unreviewed":
            self.panel.step(1)  # the next finding to review

    def segment_box(self) -> Task | None:
        box = self._box_source()
        if box is None or self.session.volume is None:
            return None
        k, r0, c0, r1, c1 = box
        task = Task(self.session.segment_nodule_job(k, (r0, c0, r1, c1)), name="volumetry")
        task.failed.connect(lambda msg: self.panel.lung_rads_note.setText(
            f"The nodule could not be segmented: {msg}"))
        return self._run_task(task, "Segmenting the nodule")
