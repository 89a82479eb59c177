"""The PACS dialogs: Query/Retrieve (File → Query PACS, Ctrl+Shift+O), the node editor and
Send reading to PACS. The work is :mod:`lungviewer.pacs` run as jobs
(:func:`lungviewer.session.call_job`) on worker threads (:class:`~.workers.Task`); the
dialogs only show results, so a slow or refusing PACS never blocks the window, and every
failure is one line in the dialog, which stays usable."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog,
                               QDialogButtonBox, QDoubleSpinBox, QFormLayout, QGridLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget,
                               QMessageBox, QProgressBar, QPushButton, QSpinBox, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from lungviewer import pacs
from lungviewer.session import call_job

from . import settings
from .workers import Task

log = logging.getLogger(__name__)

PAGE = 100
METHODS = {"get": "C-GET", "move": "C-MOVE", "wado": "WADO-RS"}


def _verify(node, progress=None, cancel=None):
    return pacs.verify(node)


def _job(fn, *args, text: str = "", **kwargs):
    return call_job(fn, *args, text=text, **kwargs)


class _Tasks:
    """The dialog's running tasks, cancelled and waited for when it closes. With a
    ``host`` (the main window) they are also in its ``tasks``, so closing the window stops
    them too."""

    def __init__(self, host=None) -> None:
        self.tasks: list[Task] = []
        self.host = host if isinstance(getattr(host, "tasks", None), list) else None

    def start(self, task: Task) -> Task:
        lists = [self.tasks] + ([self.host.tasks] if self.host is not None else [])
        task.outlives_study = True  # opening a study (the retrieved one) must not stop it
        for lst in lists:
            lst.append(task)

        def ended(t=task) -> None:
            for lst in lists:
                if t in lst:
                    lst.remove(t)
        task.ended.connect(ended)
        return task.start()

    def shutdown(self) -> None:
        for t in list(self.tasks):
            t.shutdown()


def _date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 else text


# -- nodes ------------------------------------------------------------------------------------
class NodeEditor(QDialog):
    """Add, change, verify and remove PACS nodes; saved to the nodes file (secrets apart,
    mode 0600)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PACS nodes")
        self._tasks = _Tasks()
        try:
            self.nodes = pacs.load_nodes()
        except pacs.PacsError as exc:
            self.nodes = []
            QMessageBox.warning(self, "PACS nodes", str(exc))
        self.list = QListWidget()
        self.list.currentRowChanged.connect(self._show)
        f = QFormLayout()
        self.name = QLineEdit()
        self.kind = QComboBox()
        self.kind.addItems(["dimse", "dicomweb"])
        self.host, self.aet, self.calling = QLineEdit(), QLineEdit(), QLineEdit()
        self.port, self.local_port = QSpinBox(), QSpinBox()
        self.port.setRange(1, 65535)
        self.local_port.setRange(0, 65535)
        self.tls = QCheckBox("TLS")
        self.url, self.user, self.secret = QLineEdit(), QLineEdit(), QLineEdit()
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.auth = QComboBox()
        self.auth.addItems(["none", "basic", "bearer"])
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(0.5, 600)
        self.retrieve = QComboBox()
        for k, v in METHODS.items():
            self.retrieve.addItem(v, k)
        for label, w in (("Name", self.name), ("Kind", self.kind), ("Host", self.host),
                         ("Port", self.port), ("PACS AE title", self.aet),
                         ("Viewer AE title", self.calling),
                         ("Viewer port (C-MOVE)", self.local_port), ("", self.tls),
                         ("DICOMweb URL", self.url), ("Authentication", self.auth),
                         ("User", self.user), ("Password / token", self.secret),
                         ("Timeout (s)", self.timeout), ("Retrieve by", self.retrieve)):
            f.addRow(label, w)
        self.status = QLabel()
        self.status.setWordWrap(True)
        b_add, b_del = QPushButton("Add"), QPushButton("Remove")
        self.b_verify = QPushButton("Verify")
        b_add.clicked.connect(self._add)
        b_del.clicked.connect(self._remove)
        self.b_verify.clicked.connect(self.verify)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._save)
        buttons.rejected.connect(self.reject)
        left = QVBoxLayout()
        left.addWidget(self.list)
        row = QHBoxLayout()
        row.addWidget(b_add)
        row.addWidget(b_del)
        left.addLayout(row)
        right = QVBoxLayout()
        right.addLayout(f)
        right.addWidget(self.b_verify)
        right.addWidget(self.status)
        top = QHBoxLayout()
        top.addLayout(left, 1)
        top.addLayout(right, 2)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(buttons)
        for n in self.nodes:
            self.list.addItem(n.name)
        self._current = -1
        if self.nodes:
            self.list.setCurrentRow(0)
        else:
            self._add()

    def _show(self, row: int) -> None:
        if 0 <= self._current < len(self.nodes):
            self.nodes[self._current] = self.form_node()
            self.list.item(self._current).setText(self.nodes[self._current].name)
        self._current = row
        if not 0 <= row < len(self.nodes):
            return
        n = self.nodes[row]
        self.name.setText(n.name)
        self.kind.setCurrentText(n.kind)
        self.host.setText(n.host)
        self.port.setValue(int(n.port))
        self.aet.setText(n.aet)
        self.calling.setText(n.calling_aet)
        self.local_port.setValue(int(n.local_port))
        self.tls.setChecked(bool(n.tls))
        self.url.setText(n.url)
        self.auth.setCurrentText(n.auth)
        self.user.setText(n.username)
        self.secret.setText(n.secret)
        self.timeout.setValue(float(n.timeout))
        self.retrieve.setCurrentIndex(max(self.retrieve.findData(n.retrieve), 0))

    def form_node(self) -> pacs.Node:
        return pacs.Node(
            name=self.name.text().strip(), kind=self.kind.currentText(),
            host=self.host.text().strip(), port=self.port.value(),
            aet=self.aet.text().strip(), calling_aet=self.calling.text().strip(),
            local_port=self.local_port.value(), tls=self.tls.isChecked(),
            url=self.url.text().strip(), auth=self.auth.currentText(),
            username=self.user.text(), secret=self.secret.text(),
            timeout=self.timeout.value(), retrieve=self.retrieve.currentData())

    def _add(self) -> None:
        self.nodes.append(pacs.Node(name=f"PACS {len(self.nodes) + 1}", aet="ANY-SCP",
                                    host="localhost"))
        self.list.addItem(self.nodes[-1].name)
        self.list.setCurrentRow(len(self.nodes) - 1)

    def _remove(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.nodes):
            self._current = -1
            del self.nodes[row]
            self.list.takeItem(row)

    def verify(self) -> Task | None:
        try:
            node = self.form_node().validate()
        except pacs.PacsError as exc:
            self.status.setText(f"⚠ {exc}")
            return None
        self.status.setText(f"Verifying {node.address()}…")
        self.b_verify.setEnabled(False)
        task = Task(_job(_verify, node, text="verify"), name="pacs-verify")
        task.finished.connect(lambda dt: self.status.setText(
            f"✓ {node.address()} answered in {dt * 1000:.0f} ms"))
        task.failed.connect(lambda msg: self.status.setText(f"⚠ {msg}"))
        task.ended.connect(lambda: self.b_verify.setEnabled(True))
        return self._tasks.start(task)

    def _save(self) -> None:
        if 0 <= self._current < len(self.nodes):
            self.nodes[self._current] = self.form_node()
        try:
            pacs.save_nodes(self.nodes)
        except pacs.PacsError as exc:
            self.status.setText(f"⚠ {exc}")
            return
        self.accept()

    def done(self, r: int) -> None:
        self._tasks.shutdown()
        super().done(r)


class _NodePicker(QWidget):
    """A node combo with Edit… and Verify, and a one-line status."""

    def __init__(self, tasks: _Tasks, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._tasks = tasks
        self.combo = QComboBox()
        self.combo.setMinimumWidth(200)
        self.b_edit, self.b_verify = QPushButton("Nodes…"), QPushButton("Verify")
        self.b_edit.clicked.connect(self.edit)
        self.b_verify.clicked.connect(self.verify)
        self.status = QLabel()
        self.status.setWordWrap(True)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("PACS"))
        lay.addWidget(self.combo, 1)
        lay.addWidget(self.b_edit)
        lay.addWidget(self.b_verify)
        self.reload()

    def reload(self) -> None:
        try:
            self.nodes = pacs.load_nodes()
        except pacs.PacsError as exc:
            self.nodes = []
            self.status.setText(f"⚠ {exc}")
        self.combo.clear()
        for n in self.nodes:
            self.combo.addItem(f"{n.name}  ({n.address()})", n.name)
        last = settings.get("pacs/node", "")
        if last:
            self.combo.setCurrentIndex(max(self.combo.findData(last), 0))

    def node(self) -> pacs.Node | None:
        i = self.combo.currentIndex()
        if not 0 <= i < len(self.nodes):
            self.status.setText("⚠ No PACS node: add one with Nodes…")
            return None
        settings.put("pacs/node", self.nodes[i].name)
        return self.nodes[i]

    def edit(self) -> None:
        ed = NodeEditor(self)
        if ed.exec():
            self.reload()

    def verify(self) -> Task | None:
        node = self.node()
        if node is None:
            return None
        self.status.setText(f"Verifying {node.address()}…")
        task = Task(_job(_verify, node, text="verify"), name="pacs-verify")
        task.finished.connect(lambda dt: self.status.setText(
            f"✓ {node.address()} answered in {dt * 1000:.0f} ms"))
        task.failed.connect(lambda msg: self.status.setText(f"⚠ {msg}"))
        return self._tasks.start(task)


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.verticalHeader().hide()
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    return t


def _fill(table: QTableWidget, rows: list[list[str]]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(str(text))
            if str(text).isdigit():
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            table.setItem(r, c, item)


# -- retrieve, shared by Query PACS and Find prior on PACS (ui/prior_pacs.py) ----------------
def retrieve_method(node: pacs.Node, method: str | None) -> str:
    """The retrieve method for ``node`` (``method`` None: the node's own); PacsError when a
    DIMSE node is asked for WADO-RS."""
    method = method or node.retrieve
    if node.kind == "dicomweb":
        return "wado"
    if method == "wado":
        raise pacs.PacsError("WADO-RS needs a DICOMweb node; this one speaks DIMSE.")
    return method


def retrieve_task(node: pacs.Node, study: pacs.StudyInfo, series: pacs.SeriesInfo | None,
                  method: str, cache: pacs.StudyCache) -> Task:
    """A (not yet started) task retrieving ``study`` (or one ``series`` of it) into the
    study cache: progress in images, cancel keeps what arrived as incomplete."""
    return Task(_job(pacs.retrieve, node, study.study_uid,
                     series.series_uid if series else None, method=method, cache=cache,
                     study=study, text="retrieve"), name="pacs-retrieve")


def start_retrieve(dlg, node: pacs.Node, study: pacs.StudyInfo,
                   series: pacs.SeriesInfo | None, method: str, done) -> Task:
    """Start :func:`retrieve_task` on a dialog's task list (``dlg``: the Query PACS or the
    Find prior dialog, with ``bar``, ``cache``, ``_tasks``, ``_say`` and ``_busy``): its
    progress in ``dlg.bar``, a failure or a cancel said in the dialog, ``done(entry)`` on
    success; kept as ``dlg.retrieve_task``."""
    bar = dlg.bar
    bar.setRange(0, max(series.n_instances if series else study.n_instances, 1))
    bar.setValue(0)

    def progress(n: int, total: int, _text: str) -> None:
        if total > 0:
            bar.setRange(0, total)
        bar.setValue(max(n, 0))

    task = retrieve_task(node, study, series, method, dlg.cache)
    task.progress.connect(progress)
    task.finished.connect(done)
    task.failed.connect(lambda msg: dlg._say(msg, error=True))
    task.cancelled.connect(lambda: dlg._say(
        "Retrieve cancelled: what arrived is kept in the cache as incomplete."))
    task.ended.connect(dlg._busy)
    dlg.retrieve_task = task
    dlg._tasks.start(task)
    dlg._busy()
    return task


def retrieved_series(cache: pacs.StudyCache, entry: pacs.CachedStudy,
                     wanted: pacs.SeriesInfo | None = None):
    """``(folder, series, images retrieved)`` of the series to open from a finished
    retrieve: the ``wanted`` one, else its largest complete CT series; PacsError when the
    retrieve brought none."""
    done = [s for s in entry.series if s.complete]
    if wanted is not None:
        done = [s for s in done if s.uid == wanted.series_uid]
    ct = [s for s in done if s.modality in ("CT", "")] or done
    if not ct:
        raise pacs.PacsError("The retrieve brought no complete series.")
    best = max(ct, key=lambda s: s.files)
    return cache.series_path(entry.uid, best.uid), best, sum(s.files for s in done)


# -- query / retrieve ---------------------------------------------------------------------------
class PacsDialog(QDialog):
    """Query/Retrieve. ``seriesReady(path, series_uid)`` is emitted when a retrieved series
    is complete in the study cache (the main window opens it)."""

    seriesReady = Signal(str, str)

    def __init__(self, parent: QWidget | None = None, cache: pacs.StudyCache | None = None):
        super().__init__(parent)
        self.setWindowTitle("Query PACS")
        self.resize(980, 640)
        self._tasks = _Tasks(parent)
        self.cache = cache or pacs.StudyCache()
        self.studies: list[pacs.StudyInfo] = []
        self.series: list[pacs.SeriesInfo] = []
        self.page = pacs.FindResult([], 0, PAGE, False)
        self.find_task: Task | None = None
        self.retrieve_task: Task | None = None
        self.last_error = ""

        self.picker = _NodePicker(self._tasks)
        form = QGridLayout()
        self.f_id, self.f_name, self.f_acc = QLineEdit(), QLineEdit(), QLineEdit()
        self.f_from, self.f_to = QLineEdit(), QLineEdit()
        for w in (self.f_from, self.f_to):
            w.setPlaceholderText("YYYYMMDD")
            w.setMaxLength(10)
        self.f_id.setPlaceholderText("e.g. LIDC-*")
        self.f_name.setPlaceholderText("e.g. DOE^J*")
        self.f_mod = QComboBox()
        self.f_mod.setEditable(True)
        self.f_mod.addItems(["CT", "", "MR", "PT", "SR", "SEG"])
        for i, (label, w) in enumerate((("Patient ID", self.f_id), ("Name", self.f_name),
                                        ("Accession", self.f_acc))):
            form.addWidget(QLabel(label), 0, 2 * i)
            form.addWidget(w, 0, 2 * i + 1)
        for i, (label, w) in enumerate((("Date from", self.f_from), ("to", self.f_to),
                                        ("Modality", self.f_mod))):
            form.addWidget(QLabel(label), 1, 2 * i)
            form.addWidget(w, 1, 2 * i + 1)
        self.b_search = QPushButton("Search")
        self.b_search.setDefault(True)
        self.b_search.clicked.connect(lambda: self.search())
        form.addWidget(self.b_search, 0, 6, 2, 1)

        self.t_studies = _table(["Date", "Patient ID", "Name", "Description", "Modalities",
                                 "Accession", "Series", "Images"])
        self.t_studies.itemSelectionChanged.connect(self._study_selected)
        self.t_series = _table(["#", "Modality", "Description", "Slices", "Thickness (mm)"])
        self.b_prev, self.b_next = QPushButton("◀ Previous"), QPushButton("Next ▶")
        self.b_prev.clicked.connect(lambda: self.search(self.page.offset - PAGE))
        self.b_next.clicked.connect(lambda: self.search(self.page.offset + PAGE))
        self.page_label = QLabel()
        paging = QHBoxLayout()
        paging.addWidget(self.page_label, 1)
        paging.addWidget(self.b_prev)
        paging.addWidget(self.b_next)

        self.method = QComboBox()
        for k, v in METHODS.items():
            self.method.addItem(v, k)
        self.b_retrieve = QPushButton("Retrieve")
        self.b_retrieve.clicked.connect(lambda: self.retrieve())
        self.b_cancel = QPushButton("Cancel")
        self.b_cancel.clicked.connect(self.cancel)
        self.bar = QProgressBar()
        self.bar.setFormat("%v / %m images")
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.b_cache = QPushButton("Local cache…")
        self.b_cache.clicked.connect(self.show_cache)
        act = QHBoxLayout()
        act.addWidget(self.b_cache)
        act.addWidget(QLabel("Retrieve by"))
        act.addWidget(self.method)
        act.addWidget(self.b_retrieve)
        act.addWidget(self.bar, 1)
        act.addWidget(self.b_cancel)

        split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.t_studies)
        tl.addLayout(paging)
        split.addWidget(top)
        split.addWidget(self.t_series)
        split.setSizes([380, 180])
        lay = QVBoxLayout(self)
        lay.addWidget(self.picker)
        lay.addWidget(self.picker.status)
        lay.addLayout(form)
        lay.addWidget(split, 1)
        lay.addLayout(act)
        lay.addWidget(self.message)
        self.picker.combo.currentIndexChanged.connect(self._node_changed)
        self._node_changed()
        self._busy()

    # -- state ----------------------------------------------------------------------------
    def _node_changed(self) -> None:
        i = self.picker.combo.currentIndex()
        if 0 <= i < len(self.picker.nodes):
            n = self.picker.nodes[i]
            self.method.setCurrentIndex(max(self.method.findData(n.retrieve), 0))

    def _busy(self) -> None:
        finding = self.find_task is not None and self.find_task.running
        getting = self.retrieve_task is not None and self.retrieve_task.running
        self.b_search.setEnabled(not finding)
        self.b_retrieve.setEnabled(not getting and bool(self._selected_study()))
        self.b_cancel.setEnabled(finding or getting)
        self.b_prev.setEnabled(not finding and self.page.offset > 0)
        self.b_next.setEnabled(not finding and self.page.more)
        self.bar.setVisible(getting)

    def _say(self, text: str, error: bool = False) -> None:
        if error:
            self.last_error = text
        self.message.setText(("⚠ " if error else "") + text)

    def _selected_study(self) -> pacs.StudyInfo | None:
        rows = self.t_studies.selectionModel().selectedRows() if self.t_studies.model() else []
        return self.studies[rows[0].row()] if rows and rows[0].row() < len(self.studies) else None

    def _selected_series(self) -> pacs.SeriesInfo | None:
        rows = self.t_series.selectionModel().selectedRows()
        return self.series[rows[0].row()] if rows and rows[0].row() < len(self.series) else None

    def query(self) -> pacs.Query:
        lo = self.f_from.text().strip()
        hi = self.f_to.text().strip()
        return pacs.Query(patient_id=self.f_id.text().strip(),
                          patient_name=self.f_name.text().strip(),
                          study_date=f"{lo}-{hi}" if (lo or hi) and lo != hi else lo,
                          modality=self.f_mod.currentText(), accession=self.f_acc.text().strip())

    # -- search -------------------------------------------------------------------------------
    def search(self, offset: int = 0) -> Task | None:
        node = self.picker.node()
        if node is None:
            return None
        try:
            q = self.query()
        except pacs.PacsError as exc:
            self._say(str(exc), error=True)
            return None
        offset = max(offset, 0)
        self._say(f"Searching {node.address()}…")
        task = Task(_job(pacs.find_studies, node, q, limit=PAGE, offset=offset,
                         text="search"), name="pacs-find")
        task.finished.connect(self._found)
        task.failed.connect(lambda msg: self._say(msg, error=True))
        task.cancelled.connect(lambda: self._say("Search cancelled."))
        task.ended.connect(self._busy)
        self.find_task = task
        self._tasks.start(task)
        self._busy()
        return task

    def _found(self, res: pacs.FindResult) -> None:
        self.page, self.studies = res, list(res.items)
        _fill(self.t_studies, [[_date(s.date), s.patient_id, s.patient_name.replace("^", " "),
                                s.description, s.modalities, s.accession, str(s.n_series),
                                str(s.n_instances)] for s in self.studies])
        self.series = []
        self.t_series.setRowCount(0)
        n = len(self.studies)
        first = res.offset + 1 if n else 0
        self.page_label.setText(f"Studies {first}–{res.offset + n}"
                                + (" (more: Next ▶)" if res.more else ""))
        self._say(f"{n} stud{'y' if n == 1 else 'ies'} found"
                  + (f"; showing {PAGE} per page" if res.more else "") + ".")
        self._busy()

    def _study_selected(self) -> None:
        self._busy()
        st, node = self._selected_study(), self.picker.node()
        if st is None or node is None:
            return
        task = Task(_job(pacs.find_series, node, st.study_uid, text="series"),
                    name="pacs-series")
        task.finished.connect(lambda res, uid=st.study_uid: self._series_found(uid, res))
        task.failed.connect(lambda msg: self._say(msg, error=True))
        self._tasks.start(task)

    def _series_found(self, study_uid: str, series: list) -> None:
        st = self._selected_study()
        if st is None or st.study_uid != study_uid:
            return  # another study was picked meanwhile
        self.series = series
        _fill(self.t_series, [[s.number, s.modality, s.description, str(s.n_instances),
                               s.thickness] for s in series])

    # -- retrieve -----------------------------------------------------------------------------
    def retrieve(self) -> Task | None:
        st, node = self._selected_study(), self.picker.node()
        if st is None or node is None:
            self._say("Pick a study first.", error=True)
            return None
        se = self._selected_series()
        try:
            method = retrieve_method(node, self.method.currentData())
        except pacs.PacsError as exc:
            self._say(str(exc), error=True)
            return None
        what = "the series" if se else "the study"
        self._say(f"Retrieving {what} by {METHODS[method]}…")
        return start_retrieve(self, node, st, se, method,
                              lambda entry, se=se: self._retrieved(entry, se))

    def _retrieved(self, entry: pacs.CachedStudy, wanted: pacs.SeriesInfo | None) -> None:
        try:
            path, best, n = retrieved_series(self.cache, entry, wanted)
        except pacs.PacsError as exc:
            self._say(str(exc), error=True)
            return
        self._say(f"Retrieved {n} images into the study cache; "
                  f"opening {best.description or 'the series'} ({best.files} images).")
        self.seriesReady.emit(str(path), best.uid)

    def show_cache(self) -> "CacheDialog":
        dlg = CacheDialog(self.cache, self)
        dlg.seriesReady.connect(self.seriesReady)
        self._cache_dialog = dlg
        dlg.show()
        return dlg

    def cancel(self) -> None:
        for t in (self.find_task, self.retrieve_task):
            if t is not None and t.running:
                t.cancel()

    def done(self, r: int) -> None:
        self._tasks.shutdown()
        super().done(r)


class CacheDialog(QDialog):
    """What the local study cache holds, most recently used first: each series with its
    image count and whether it is complete; a complete one opens, an incomplete one says
    to retrieve it again; Remove drops a study."""

    seriesReady = Signal(str, str)

    def __init__(self, cache: pacs.StudyCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Local study cache")
        self.resize(760, 360)
        self.cache = cache
        self.table = _table(["Date", "Study", "Modality", "Series", "Images", "State"])
        self.table.doubleClicked.connect(lambda _: self.open_selected())
        self.summary, self.message = QLabel(), QLabel()
        b_open, b_remove = QPushButton("Open"), QPushButton("Remove study")
        b_open.clicked.connect(self.open_selected)
        b_remove.clicked.connect(self.remove_selected)
        row = QHBoxLayout()
        row.addWidget(self.summary, 1)
        row.addWidget(b_open)
        row.addWidget(b_remove)
        lay = QVBoxLayout(self)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.message)
        lay.addLayout(row)
        self.refresh()

    def refresh(self) -> None:
        self.rows: list[tuple] = []
        entries = self.cache.list()
        for e in entries:
            for x in e.series:
                self.rows.append((e, x))
        _fill(self.table, [[_date(e.date), e.description or e.uid[-12:], x.modality,
                            x.description, str(x.files),
                            "complete" if x.complete else "INCOMPLETE: retrieve again"]
                           for e, x in self.rows])
        total = sum(e.bytes for e in entries)
        self.summary.setText(f"{len(entries)} stud{'y' if len(entries) == 1 else 'ies'}, "
                             f"{total / 1e6:.0f} MB of {self.cache.limit / 1e9:.1f} GB")

    def _selected(self):
        rows = self.table.selectionModel().selectedRows()
        return self.rows[rows[0].row()] if rows and rows[0].row() < len(self.rows) else None

    def open_selected(self) -> None:
        sel = self._selected()
        if sel is None:
            return
        e, x = sel
        try:
            path = self.cache.series_path(e.uid, x.uid)
        except pacs.PacsError as exc:
            self.message.setText(f"⚠ {exc}")
            return
        self.seriesReady.emit(str(path), x.uid)

    def remove_selected(self) -> None:
        sel = self._selected()
        if sel is not None:
            self.cache.remove(sel[0].uid)
            self.refresh()


# -- send ------------------------------------------------------------------------------------
class SendDialog(QDialog):
    """Send files (the exported SR/SEG of the reading) by C-STORE or STOW-RS; the PACS's
    answer per object, and Retry for the ones that failed."""

    def __init__(self, files: list[Path], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Send reading to PACS")
        self.resize(720, 320)
        self._tasks = _Tasks(parent)
        self.all_files = [Path(f) for f in files]
        self.results: dict[str, pacs.SendResult] = {}
        self.with_pdf = QCheckBox("Include the PDF report (Encapsulated PDF)")
        self.with_pdf.setVisible(any(f.name == "report_pdf.dcm" for f in self.all_files))
        self.with_pdf.toggled.connect(lambda _: self._show())
        self.picker = _NodePicker(self._tasks)
        self.table = _table(["File", "Result", "PACS answer"])
        self.b_send = QPushButton("Send")
        self.b_send.clicked.connect(lambda: self.send())
        self.b_retry = QPushButton("Retry failed")
        self.b_retry.clicked.connect(lambda: self.send(only_failed=True))
        self.b_retry.setEnabled(False)
        self.message = QLabel()
        self.message.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.b_send)
        row.addWidget(self.b_retry)
        row.addStretch(1)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        row.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addWidget(self.picker)
        lay.addWidget(self.picker.status)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.with_pdf)
        lay.addWidget(self.message)
        lay.addLayout(row)
        self.task: Task | None = None
        self._show()

    @property
    def files(self) -> list[Path]:
        """What Send sends: the SR and SEG, and the PDF when ticked."""
        return [f for f in self.all_files
                if f.name != "report_pdf.dcm" or self.with_pdf.isChecked()]

    def _show(self) -> None:
        rows = []
        for f in self.files:
            r = self.results.get(str(f))
            rows.append([f.name, "—" if r is None else ("stored" if r.ok else "FAILED"),
                         "" if r is None else " ".join(x for x in (r.status, r.message) if x)])
        _fill(self.table, rows)

    def send(self, only_failed: bool = False) -> Task | None:
        node = self.picker.node()
        if node is None:
            return None
        files = [f for f in self.files if not only_failed
                 or not self.results.get(str(f), pacs.SendResult("")).ok]
        if not files:
            return None
        self.b_send.setEnabled(False)
        self.b_retry.setEnabled(False)
        self.message.setText(f"Sending {len(files)} object(s) to {node.address()}…")
        node = replace(node)
        task = Task(_job(pacs.send, node, files, text="send"), name="pacs-send")
        task.finished.connect(self._sent)
        task.failed.connect(lambda msg: self.message.setText(f"⚠ {msg}"))
        task.ended.connect(self._ended)
        self.task = task
        return self._tasks.start(task)

    def _sent(self, results: list) -> None:
        for r in results:
            self.results[r.path] = r
        ok = sum(r.ok for r in results)
        self.message.setText(f"{ok} of {len(results)} object(s) stored.")
        self._show()

    def _ended(self) -> None:
        self.b_send.setEnabled(True)
        failed = any(not self.results.get(str(f), pacs.SendResult("")).ok for f in self.files)
        self.b_retry.setEnabled(failed and bool(self.results) or
                                self.message.text().startswith("⚠"))

    def done(self, r: int) -> None:
        self._tasks.shutdown()
        super().done(r)


# -- main-window hooks ----------------------------------------------------------------------------
def open_query_dialog(window) -> PacsDialog:
    """File → Query PACS: one dialog per window, kept; a complete series opens in it."""
    dlg = getattr(window, "_pacs_dialog", None)
    if dlg is None:
        dlg = PacsDialog(window)
        dlg.seriesReady.connect(lambda path, uid: window.open_study(path, uid))
        window._pacs_dialog = dlg
    dlg.show()
    dlg.raise_()
    return dlg


def reading_for_pacs_job(session, out: Path):
    """Export the reading's SR, SEG and PDF into ``out`` and wrap the PDF as an
    Encapsulated PDF (a job: runs on a worker thread); returns the DICOM files."""
    from lungviewer.pacs.docs import encapsulate_pdf

    files = yield from session.export_job(out, pdf=True, force=True)
    dicom = [Path(f) for f in files if Path(f).suffix == ".dcm"]
    pdf = next((Path(f) for f in files if Path(f).suffix == ".pdf"), None)
    if pdf is not None:
        volume = session.volume

        def wrap(progress=None, cancel=None):
            return encapsulate_pdf(pdf, volume, out / "report_pdf.dcm")
        dicom.append((yield from call_job(wrap, text="Encapsulated PDF")))
    return dicom


def send_reading(window) -> Task | None:
    """File → Send reading to PACS: export the SR, SEG and the PDF (as Encapsulated PDF)
    into the outbox (the user's data folder), then the send dialog."""
    from lungviewer import paths

    if window.volume is None or window.session.reading is None:
        window.statusBar().showMessage("Open a study first.", 5000)
        return None
    out = paths.data_dir() / "pacs-outbox" / (window.volume.series_uid or "study")
    task = Task(reading_for_pacs_job(window.session, out), name="export")

    def ready(files) -> None:
        dlg = SendDialog([Path(f) for f in files], window)
        window._pacs_send_dialog = dlg
        dlg.show()
    task.finished.connect(ready)
    task.failed.connect(lambda msg: window._export_failed(msg))
    return window.run_task(task, "Exporting the reading for the PACS")
