"""File → Find prior on PACS… (issue 26, "Open a prior"): the open study's earlier CT studies
on a PACS node (:func:`lungviewer.pacs.find_priors`: same PatientID, StudyDate before the
open study's), listed newest first; the chosen one is retrieved into the study cache with
progress and Cancel (the Query PACS dialog's retrieve, :func:`.pacs_dialog.retrieve_task`)
and opened as the prior through the follow-up controller's prior job
(``FollowupController.open_prior``: checked, registered, paired).

The lookup (which reads the open study's date from its first file) and the retrieve run
on worker threads; the patient ID goes to the PACS only, never to a log or a message.
"""

from __future__ import annotations

from PySide6.QtWidgets import (QDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                               QVBoxLayout, QWidget)

from lungviewer import pacs
from lungviewer.session import call_job

from .pacs_dialog import (_date, _fill, _NodePicker, _table, _Tasks, retrieve_method,
                          retrieved_series, start_retrieve)
from .workers import Task


def priors_of(node: pacs.Node, volume, progress=None, cancel=None) -> list:
    """The earlier CT studies of ``volume``'s patient on ``node`` (newest first; the open
    study itself left out). PacsError with one line when the open study has no patient ID
    or no StudyDate."""
    from lungviewer.followup.priors import study_info

    info = study_info(volume)
    if info.study_date is None:
        raise pacs.PacsError("the open study has no StudyDate: priors cannot be looked up")
    return pacs.find_priors(node, info.patient_id, info.study_date.strftime("%Y%m%d"),
                            exclude_study_uid=info.study_uid)


class PriorPacsDialog(QDialog):
    """The open study's priors on a node; Retrieve and compare opens the chosen one as the
    prior (``window.followup.open_prior``)."""

    def __init__(self, window, cache: pacs.StudyCache | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent or window)
        self.setWindowTitle("Find prior on PACS")
        self.resize(760, 380)
        self.main = window
        self.cache = cache or pacs.StudyCache()
        self._tasks = _Tasks(window)
        self.priors: list[pacs.StudyInfo] = []
        self.find_task: Task | None = None
        self.retrieve_task: Task | None = None
        self.prior_task: Task | None = None
        self.picker = _NodePicker(self._tasks)
        self.b_search = QPushButton("Find priors")
        self.b_search.clicked.connect(lambda: self.search())
        self.table = _table(["Date", "Description", "Modalities", "Accession", "Series",
                             "Images"])
        self.table.itemSelectionChanged.connect(self._busy)
        self.table.doubleClicked.connect(lambda _: self.retrieve())
        self.b_retrieve = QPushButton("Retrieve and compare")
        self.b_retrieve.clicked.connect(lambda: self.retrieve())
        self.b_cancel = QPushButton("Cancel")
        self.b_cancel.clicked.connect(self.cancel)
        self.bar = QProgressBar()
        self.bar.setFormat("%v / %m images")
        self.message = QLabel()
        self.message.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.picker, 1)
        top.addWidget(self.b_search)
        act = QHBoxLayout()
        act.addWidget(self.b_retrieve)
        act.addWidget(self.bar, 1)
        act.addWidget(self.b_cancel)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.picker.status)
        lay.addWidget(self.table, 1)
        lay.addLayout(act)
        lay.addWidget(self.message)
        self._busy()

    def _say(self, text: str, error: bool = False) -> None:
        self.message.setText(("⚠ " if error else "") + text)

    def _busy(self) -> None:
        finding = self.find_task is not None and self.find_task.running
        getting = self.retrieve_task is not None and self.retrieve_task.running
        self.b_search.setEnabled(not finding)
        self.b_retrieve.setEnabled(not getting and self.selected() is not None)
        self.b_cancel.setEnabled(finding or getting)
        self.bar.setVisible(getting)

    def selected(self) -> pacs.StudyInfo | None:
        rows = self.table.selectionModel().selectedRows()
        return self.priors[rows[0].row()] if rows and rows[0].row() < len(self.priors) else None

    # -- find ---------------------------------------------------------------------------------
    def search(self) -> Task | None:
        volume = self.main.session.volume
        if volume is None:
            self._say("Open the current study first.", error=True)
            return None
        node = self.picker.node()
        if node is None:
            return None
        self._say(f"Looking for earlier CT studies of this patient on {node.address()}…")
        task = Task(call_job(priors_of, node, volume, text="priors"), name="pacs-priors")
        task.finished.connect(self._found)
        task.failed.connect(lambda msg: self._say(msg, error=True))
        task.cancelled.connect(lambda: self._say("Search cancelled."))
        task.ended.connect(self._busy)
        self.find_task = task
        self._tasks.start(task)
        self._busy()
        return task

    def _found(self, priors: list) -> None:
        self.priors = list(priors)
        _fill(self.table, [[_date(s.date), s.description, s.modalities, s.accession,
                            str(s.n_series), str(s.n_instances)] for s in self.priors])
        n = len(self.priors)
        self._say(f"{n} earlier CT stud{'y' if n == 1 else 'ies'} of this patient."
                  if n else "No earlier CT study of this patient on this node.")
        if n:
            self.table.selectRow(0)  # the most recent prior, as the workstations propose
        self._busy()

    # -- retrieve and compare -----------------------------------------------------------------
    def retrieve(self) -> Task | None:
        st, node = self.selected(), self.picker.node()
        if st is None or node is None:
            self._say("Pick a prior first.", error=True)
            return None
        try:
            method = retrieve_method(node, None)
        except pacs.PacsError as exc:
            self._say(str(exc), error=True)
            return None
        self._say(f"Retrieving the prior of {_date(st.date)}…")
        return start_retrieve(self, node, st, None, method, self._retrieved)

    def _retrieved(self, entry: pacs.CachedStudy) -> None:
        try:
            path, best, n = retrieved_series(self.cache, entry)
        except pacs.PacsError as exc:
            self._say(str(exc), error=True)
            return
        self._say(f"Retrieved {n} images into the study cache; comparing with "
                  f"{best.description or 'the series'} ({best.files} images).")
        self.prior_path = str(path)
        self.prior_task = self.main.followup.open_prior(str(path))

    def cancel(self) -> None:
        for t in (self.find_task, self.retrieve_task):
            if t is not None and t.running:
                t.cancel()

    def done(self, r: int) -> None:
        self._tasks.shutdown()
        super().done(r)


def open_dialog(window) -> PriorPacsDialog | None:
    """File → Find prior on PACS…: one dialog per window; it looks up the priors at once."""
    if window.session.volume is None:
        window.statusBar().showMessage("Open the current study first.", 5000)
        return None
    dlg = getattr(window, "_prior_pacs_dialog", None)
    if dlg is None:
        dlg = PriorPacsDialog(window)
        window._prior_pacs_dialog = dlg
    dlg.show()
    dlg.raise_()
    if dlg.picker.nodes:
        dlg.search()
    return dlg
