"""Follow-up reading in the viewer: the current and the prior exam side by side (axial,
each labelled with its date), scrolling linked through the registration, the crosshair
mapped, "align on this point", and the paired nodules in a table.

All the work (loading the prior, its CAD findings, registration, pairing) runs in
``session.prior_job`` on a worker thread (:class:`~lungviewer.ui.workers.Task`); the GUI
thread only maps points through a 3×4 affine map (microseconds) and shows slices.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from lungviewer.followup.registration import Grid, Registration

from .slice_view import SliceView

COLUMNS = ("status", "reader", "current (slice, Ø, volume)", "prior (slice, Ø, volume)",
           "Δ Ø mm", "volume %", "VDT days", "Lung-RADS")
#: the reader's verdict on a pair as saved (``PairResult.verdict``) -> as shown
VERDICT_WORDS = {"": "—", "confirmed": "✓ agree", "rejected": "✗ disagree"}
VERDICT_COLUMN = COLUMNS.index("reader")


def _nod(n) -> str:
    return "—" if n is None else (f"{int(round(n.slice)) + 1}: {n.diameter_mm:.1f} mm, "
                                  f"{n.volume_mm3:.0f} mm³")


class CompareView(QWidget):
    """Current | prior, linked through a :class:`Registration` (None: unlinked)."""

    registrationChanged = Signal(object)
    #: (pair row, verdict): the reader agrees ("confirmed") or disagrees ("rejected") with
    #: the pairing and change shown, or takes the verdict back ("")
    verdictRequested = Signal(int, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Follow-up: current | prior")
        self.current_view = SliceView(self)
        self.prior_view = SliceView(self)
        self.current_label = QLabel("current")
        self.prior_label = QLabel("prior")
        for lab in (self.current_label, self.prior_label):
            lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
            lab.setStyleSheet("font-weight: bold")
        self.linked = QCheckBox("Linked scrolling")
        self.linked.setChecked(True)
        self.align_button = QPushButton("Align on this point")
        self.align_button.setToolTip("Click the same spot in the current and in the prior "
                                     "exam, then align: the link is corrected to match them")
        self.align_button.clicked.connect(self.align_on_points)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.agree_button = QPushButton("Agree")
        self.agree_button.setToolTip("The selected pair and its change are right")
        self.disagree_button = QPushButton("Disagree")
        self.disagree_button.setToolTip("The selected pair or its change is wrong")
        self.agree_button.clicked.connect(lambda: self._request_verdict("confirmed"))
        self.disagree_button.clicked.connect(lambda: self._request_verdict("rejected"))
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.cellClicked.connect(lambda row, _c: self.show_pair(row))
        grid = QGridLayout()
        grid.addWidget(self.current_label, 0, 0)
        grid.addWidget(self.prior_label, 0, 1)
        grid.addWidget(self.current_view, 1, 0)
        grid.addWidget(self.prior_view, 1, 1)
        bar = QHBoxLayout()
        bar.addWidget(self.linked)
        bar.addWidget(self.align_button)
        bar.addWidget(self.status, 1)
        bar.addWidget(self.agree_button)
        bar.addWidget(self.disagree_button)
        lay = QVBoxLayout(self)
        lay.addLayout(grid, 4)
        lay.addLayout(bar)
        lay.addWidget(self.table, 1)
        self.registration: Registration | None = None
        self.comparison = None
        self.current_point: tuple[float, float, float] | None = None
        self.prior_point: tuple[float, float, float] | None = None
        self._syncing = False
        self.last_sync_s = 0.0  # GUI-thread time of the last linked update (tests, bench)
        self.current_view.sliceChanged.connect(self._current_slice)
        self.prior_view.sliceChanged.connect(self._prior_slice)
        self.current_view.clicked.connect(self._current_clicked)
        self.prior_view.clicked.connect(self._prior_clicked)

    # -- content ---------------------------------------------------------------------------
    def set_exams(self, current, prior, current_date: str = "", prior_date: str = "") -> None:
        self.current_view.set_volume(current, current.n_slices // 2)
        self.prior_view.set_volume(prior, prior.n_slices // 2)
        desc = str(getattr(prior, "description", "") or "").upper()
        tag = (" [HYBRID]" if "HYBRID" in desc else
               " [SYNTHETIC]" if getattr(prior, "is_synthetic", False) else "")
        self.current_label.setText(f"current — {current_date or 'date unknown'}")
        self.prior_label.setText(f"prior — {prior_date or 'date unknown'}{tag}")

    def set_result(self, comparison, registration: Registration | None) -> None:
        self.comparison, self.registration = comparison, registration
        reg = comparison.registration if comparison is not None else {}
        if registration is None:
            self.status.setText(f"Unlinked: {reg.get('error', 'no registration')}")
        else:
            q = reg.get("quality", {})
            self.status.setText(f"Registered in {reg.get('seconds', 0):.1f} s, lung Dice "
                                f"{q.get('lung_dice', float('nan')):.3f}")
        pairs = comparison.pairs if comparison is not None else []
        self.table.setRowCount(len(pairs))
        for i, p in enumerate(pairs):
            vals = (p.status, VERDICT_WORDS.get(p.verdict, p.verdict), _nod(p.current),
                    _nod(p.prior),
                    "" if p.diameter_change_mm is None else f"{p.diameter_change_mm:+.1f}",
                    "" if p.volume_change_pct is None else f"{p.volume_change_pct:+.0f} %",
                    ("" if p.vdt_days is None else f"{p.vdt_days:.0f}"
                     + ("" if p.vdt_trusted else " (not trusted)")),
                    f"{p.lung_rads.get('category', '')} — {p.lung_rads.get('rule', '')}")
            for j, v in enumerate(vals):
                item = QTableWidgetItem(v)
                if j == COLUMNS.index("VDT days") and p.vdt_why_not:
                    item.setToolTip("; ".join(p.vdt_why_not))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        self.current_view.set_marks([(n.slice, n.row, n.col, max(n.diameter_mm, 4.0),
                                      "accepted") for p in pairs if (n := p.current)])
        self.prior_view.set_marks([(n.slice, n.row, n.col, max(n.diameter_mm, 4.0),
                                    "accepted") for p in pairs if (n := p.prior)])
        if registration is not None:
            self._current_slice(self.current_view.index)

    def selected_pair(self) -> int:
        """The selected row of the pairs table (-1: none)."""
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else -1

    def _request_verdict(self, verdict: str) -> None:
        row = self.selected_pair()
        if self.comparison is None or not 0 <= row < len(self.comparison.pairs):
            self.status.setText("Pick a pair in the table first.")
            return
        # the same verdict again takes it back (a toggle, as the review buttons)
        now = self.comparison.pairs[row].verdict
        self.verdictRequested.emit(row, "" if now == verdict else verdict)

    def show_verdict(self, row: int, verdict: str) -> None:
        """Show the reader's verdict on pair ``row`` (kept in the shown comparison)."""
        if self.comparison is None or not 0 <= row < len(self.comparison.pairs):
            return
        self.comparison.pairs[row].verdict = verdict
        self.table.setItem(row, VERDICT_COLUMN,
                           QTableWidgetItem(VERDICT_WORDS.get(verdict, verdict)))
        self.table.resizeColumnToContents(VERDICT_COLUMN)

    def show_pair(self, row: int) -> None:
        if self.comparison is None or not 0 <= row < len(self.comparison.pairs):
            return
        p = self.comparison.pairs[row]
        self._syncing = True
        try:
            for n, view in ((p.current, self.current_view), (p.prior, self.prior_view)):
                if n is not None:
                    view.set_slice(int(round(n.slice)))
                    view.set_crosshair(n.zyx)
        finally:
            self._syncing = False

    # -- linking ---------------------------------------------------------------------------
    def _centre(self, view: SliceView) -> tuple[float, float]:
        v = view.volume
        return (v.hu.shape[1] / 2.0, v.hu.shape[2] / 2.0)

    def _link(self, source: SliceView, target: SliceView, k: int, forward: bool) -> None:
        if self._syncing or self.registration is None or not self.linked.isChecked() \
                or target.volume is None:
            return
        t0 = time.perf_counter()
        point = (self.current_point if forward else self.prior_point)
        r, c = (point[1], point[2]) if point is not None else self._centre(source)
        fn = self.registration.current_to_prior if forward else self.registration.prior_to_current
        z, rr, cc = fn(np.array([k, r, c], float))
        self._syncing = True
        try:
            target.set_slice(int(np.clip(round(z), 0, target.volume.n_slices - 1)))
            if point is not None:
                target.set_crosshair((z, rr, cc))
        finally:
            self._syncing = False
        self.last_sync_s = time.perf_counter() - t0

    def _current_slice(self, k: int) -> None:
        self._link(self.current_view, self.prior_view, k, True)

    def _prior_slice(self, k: int) -> None:
        self._link(self.prior_view, self.current_view, k, False)

    def _current_clicked(self, z: int, y: int, x: int) -> None:
        self.current_point = (float(z), float(y), float(x))
        self.current_view.set_crosshair(self.current_point)
        if self.registration is not None and self.linked.isChecked():
            q = self.registration.current_to_prior(np.array(self.current_point))
            self.prior_view.set_crosshair(tuple(q))

    def _prior_clicked(self, z: int, y: int, x: int) -> None:
        self.prior_point = (float(z), float(y), float(x))
        self.prior_view.set_crosshair(self.prior_point)

    def align_on_points(self) -> bool:
        """Correct the link so that the last clicked current point maps onto the last
        clicked prior point (from no registration: a translation-only link)."""
        if self.current_point is None or self.prior_point is None:
            self.status.setText("Click the same spot in both exams first, then align.")
            return False
        base = self.registration or Registration.identity(
            Grid.of(self.current_view.volume), Grid.of(self.prior_view.volume))
        self.registration = base.corrected(self.current_point, self.prior_point)
        self.status.setText(f"Aligned on the chosen point (manual correction "
                            f"{self.registration.corrections}).")
        self.registrationChanged.emit(self.registration)
        return True


class FollowupController:
    """File → Open prior…: runs ``session.prior_job`` on a worker and shows the result in a
    :class:`CompareView` window."""

    def __init__(self, window) -> None:
        self.window = window
        self.view: CompareView | None = None
        self.task = None

    def open_dialog(self) -> None:
        w = self.window
        if w.session.volume is None:
            w.statusBar().showMessage("Open the current study first.", 5000)
            return
        folder = QFileDialog.getExistingDirectory(w, "Open the prior CT (DICOM folder)")
        if folder:
            self.open_prior(folder)

    def open_prior(self, path, confirm_other_patient: bool = False, prior_volume=None):
        from .workers import Task

        w = self.window
        self.task = Task(w.session.prior_job(path, confirm_other_patient, prior_volume),
                         name="prior")
        self.task.finished.connect(self._done)
        self.task.failed.connect(lambda msg: self._failed(msg, path))
        return w.run_task(self.task, "Comparing with the prior")

    def set_verdict(self, row: int, verdict: str) -> None:
        """The reader's verdict on pair ``row``, saved with the reading's follow-up pairs
        (``session.set_pair_verdict``) and undoable (the window's history)."""
        view = self.view
        if view is None or view.comparison is None:
            return
        comp = view.comparison
        if not 0 <= row < len(comp.pairs):
            return
        old = comp.pairs[row].verdict
        if old == verdict or not self._put_verdict(comp, row, verdict):
            return
        history = getattr(self.window, "history", None)
        if history is not None:
            words = VERDICT_WORDS.get(verdict, verdict).split()[-1]
            history.push(f"Pair verdict: {words}",
                         lambda: self._put_verdict(comp, row, old),
                         lambda: self._put_verdict(comp, row, verdict))

    def _put_verdict(self, comp, row: int, verdict: str) -> bool:
        """Save and show ``verdict`` for pair ``row`` of ``comp`` (nothing when another
        comparison is on screen now)."""
        view = self.view
        if view is None or view.comparison is not comp:
            return False
        try:
            self.window.session.set_pair_verdict(row, verdict)
        except (ValueError, IndexError) as exc:
            view.status.setText(f"Verdict not saved: {exc}")
            return False
        view.show_verdict(row, verdict)
        view.table.selectRow(row)
        return True

    def _failed(self, message: str, path) -> None:
        w = self.window
        quiet = getattr(w, "quiet_errors", False)
        if "another patient" in message and not quiet:
            ans = QMessageBox.question(w, "Another patient?", message + "\n\nCompare anyway?")
            if ans == QMessageBox.StandardButton.Yes:
                self.open_prior(path, confirm_other_patient=True)
                return
        w.statusBar().showMessage(f"Prior not compared: {message}", 10000)
        if not quiet:
            QMessageBox.warning(w, "Prior not compared", message)

    def _done(self, result) -> None:
        prior, comp, reg = result
        vol = self.window.session.volume
        if self.view is None:
            self.view = CompareView()
            self.view.resize(1300, 800)
            self.view.verdictRequested.connect(self.set_verdict)
            history = getattr(self.window, "history", None)
            if history is not None:  # Ctrl+Z / Ctrl+Shift+Z work in this window too
                self.view.addActions(history.actions)
        self.view.set_exams(vol, prior, comp.current.get("study_date") or "",
                            comp.prior.get("study_date") or "")
        self.view.set_result(comp, reg)
        self.view.show()
        self.view.raise_()
        for m in comp.messages:
            self.window.study_text.appendPlainText(f"Follow-up: {m}")
