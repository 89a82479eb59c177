"""The worklist: a batch's results database (``lungviewer batch``) as a table of series
sorted by suspicion (the most likely CAD finding's probability, then the Lung-RADS
suggestion), filtered by status and study date. Double-click opens the series in the viewer
with the findings the batch stored — the CAD does not run again when the series' instances
and the installed CAD models are those the batch used (``batch.task.stored_findings``,
checked on the loading thread). A series opened is marked read; Mark read / unread writes
the flag back to its row.

The database is small and local (SQLite, WAL: a running batch may write meanwhile); its
queries take milliseconds and run in the GUI thread."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QFont
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

log = logging.getLogger(__name__)

COLUMNS = ("", "Suspicion", "Size (mm)", "Lung-RADS", "Findings", "Status", "Study date",
           "Series", "Note")
STATUS_FILTERS = ("all", "done", "failed", "skipped", "pending")


def add_worklist_action(win, menu) -> QAction:
    """File → Open worklist… in the main window ``win``."""
    act = QAction("Open &worklist… (batch results)", win)
    act.triggered.connect(lambda: _ask_and_open(win))
    menu.addAction(act)
    win.act_worklist = act
    return act


def _ask_and_open(win) -> None:
    path, _ = QFileDialog.getOpenFileName(win, "Open a batch results database", "",
                                          "Results database (*.sqlite *.db);;All files (*)")
    if path:
        open_worklist(win, path)


def open_worklist(win, path: str | Path) -> WorklistWindow:
    """Show the worklist of the database at ``path`` for the main window ``win``."""
    old = getattr(win, "worklist", None)
    if old is not None:
        old.close()
    w = WorklistWindow(win, path)
    win.worklist = w
    w.show()
    return w


class WorklistWindow(QWidget):
    """The table, its filters and the read / unread buttons."""

    rowOpened = Signal(str)  # the key of the row being opened

    def __init__(self, win, path: str | Path) -> None:
        super().__init__(win, Qt.WindowType.Window)
        from lungviewer.batch.db import ResultsDB

        self.win = win
        self.db = ResultsDB(path)
        self.rows: list[dict] = []
        self._opening: str | None = None
        self.setWindowTitle(f"Worklist — {Path(path).name}")
        self.resize(900, 420)

        self.status_box = QComboBox()
        self.status_box.addItems(STATUS_FILTERS)
        self.date_from = QLineEdit()
        self.date_from.setPlaceholderText("from YYYY-MM-DD")
        self.date_to = QLineEdit()
        self.date_to.setPlaceholderText("to YYYY-MM-DD")
        refresh = QPushButton("Refresh")
        self.read_button = QPushButton("Mark read")
        self.unread_button = QPushButton("Mark unread")
        top = QHBoxLayout()
        for w in (QLabel("Status"), self.status_box, QLabel("Study date"), self.date_from,
                  self.date_to, refresh):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(self.read_button)
        top.addWidget(self.unread_button)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(lambda r, _c: self.open_row(r))
        self.summary = QLabel()
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.summary)

        self.status_box.currentIndexChanged.connect(lambda _: self.refresh())
        self.date_from.editingFinished.connect(self.refresh)
        self.date_to.editingFinished.connect(self.refresh)
        refresh.clicked.connect(self.refresh)
        self.read_button.clicked.connect(lambda: self._set_read(True))
        self.unread_button.clicked.connect(lambda: self._set_read(False))
        win.studyLoaded.connect(self._loaded)
        win.studyFailed.connect(self._failed)
        self.refresh()

    # -- the table -------------------------------------------------------------------------------
    def refresh(self) -> None:
        status = self.status_box.currentText()
        self.rows = self.db.worklist(None if status == "all" else status,
                                     self.date_from.text().strip(), self.date_to.text().strip())
        self.table.setRowCount(len(self.rows))
        bold = QFont()
        bold.setBold(True)
        for i, r in enumerate(self.rows):
            p = r["top_probability"]
            cells = ("" if r["read"] else "●",
                     "" if p is None else f"{p:.0%}",
                     "" if r["top_size_mm"] is None else f"{r['top_size_mm']:.1f}",
                     r["lung_rads"] or "",
                     "" if r["n_shown"] is None else f"{r['n_shown']} shown",
                     r["status"], r["study_date"] or "", r["label"],
                     r["reason"] or "")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if not r["read"]:
                    item.setFont(bold)
                if j == 0:
                    item.setToolTip("unread")
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        counts = self.db.counts()
        self.summary.setText(
            f"{len(self.rows)} shown; in the database: " + ", ".join(
                f"{counts.get(s, 0)} {s}" for s in STATUS_FILTERS[1:])
            + f"; {sum(1 for r in self.rows if not r['read'])} unread")

    def selected(self) -> dict | None:
        i = self.table.currentRow()
        return self.rows[i] if 0 <= i < len(self.rows) else None

    def _set_read(self, read: bool, key: str | None = None) -> None:
        row = self.selected() if key is None else {"key": key}
        if row is None:
            return
        self.db.set_read(row["key"], read)
        current = self.table.currentRow()
        self.refresh()
        self.table.selectRow(current)

    # -- opening ---------------------------------------------------------------------------------
    def open_row(self, i: int) -> None:
        """Open row ``i`` in the viewer, with the stored findings when they still apply."""
        row = dict(self.rows[i])
        self._opening = row["key"]
        self.rowOpened.emit(row["key"])
        session = self.win.session

        def stored(volume):
            from lungviewer.batch.task import stored_findings

            findings, why = stored_findings(row, volume)
            if findings is None:
                session.emit("message", f"Worklist: the stored CAD findings are not used "
                                        f"({why}); the CAD runs again.")
                return None, ""
            return findings, "stored by the batch, not recomputed"

        self.win.open_study(row["folder"], row["series_uid"] or None, stored=stored)

    def _loaded(self, _volume) -> None:
        if self._opening is not None:
            key, self._opening = self._opening, None
            self._set_read(True, key)

    def _failed(self, _message: str) -> None:
        self._opening = None  # not read: it did not open

    def closeEvent(self, ev):  # noqa: N802
        for signal, slot in ((self.win.studyLoaded, self._loaded),
                             (self.win.studyFailed, self._failed)):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        self.db.close()
        super().closeEvent(ev)
