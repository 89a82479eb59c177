"""The main window: a thin view of the :class:`~lungviewer.session.StudySession`.

It opens studies (dialog, drag and drop, recent list, command line) by starting the
session's jobs on :class:`~lungviewer.ui.workers.Task` threads (progress and Cancel in the
status bar), and paints what the session's events bring: the volume in the slice view,
the readers' outlines, the lung mask, the CAD panel (docs/ARCHITECTURE.md, "From a folder
to the first frame").
"""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QIcon, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QHBoxLayout, QLabel,
                               QMainWindow, QMessageBox, QProgressBar, QPushButton, QSlider,
                               QPlainTextEdit, QScrollArea, QWidget)

from lungviewer import __version__, paths
from lungviewer.contracts import DEMO_PATIENT
from lungviewer.imaging.window import PRESETS
from lungviewer.session import Progress, StudySession
from lungviewer.study.volume import Volume

from . import settings
from .mpr import MprWidget
from .workers import SessionBridge, Task

log = logging.getLogger(__name__)

ABOUT = (
    "<h3>lungviewer {version}</h3>"
    "<p>Chest-CT viewer with a computer-aided diagnosis (CAD) assistant.</p>"
    "<p><b>Research software — not for clinical use.</b> The CAD models are trained on "
    "synthetic images (the LIDC twin: synthetic CT rendered around the real LIDC-IDRI "
    "radiologists' annotations), on hybrid images (real CT hosting nodules drawn from other "
    "patients' contours) and, for the box's networks, on real LIDC nodule patches; they "
    "have not been validated on real patient images.</p>"
    "<p>LIDC-IDRI annotations: Armato SG III et al., Medical Physics 38(2), 2011; "
    "The Cancer Imaging Archive (CC BY 3.0).</p>"
)



OPEN_HINT = "Open a DICOM folder (Ctrl+O) or drop it here."


class MainWindow(QMainWindow):
    studyLoaded = Signal(object)  # the Volume
    studyFailed = Signal(str)
    maskReady = Signal(object)  # bool (z, y, x) parenchyma mask
    annotationsReady = Signal(object)  # StudyAnnotations
    busyChanged = Signal(bool)

    def __init__(self, session: StudySession | None = None) -> None:
        super().__init__()
        self.setWindowTitle("lungviewer")
        self.setAcceptDrops(True)
        self.session = session or StudySession()
        self.bridge = SessionBridge(self.session, self)
        self.bridge.event.connect(self._session_event)
        from .autosave import ReadingSaver

        self.saver = ReadingSaver(self.session, parent=self)
        self.study_path: Path | None = None
        self.tasks: list[Task] = []
        self._load_task: Task | None = None
        self._start_slice: int | None = None  # shown once the study being loaded arrives

        # axial, coronal and sagittal views in a layout; the axial one (the CAD box, the
        # slider) is slice_view
        self.mpr = MprWidget(self)
        self.slice_view = self.mpr.axial
        self.slider = QSlider(Qt.Orientation.Vertical)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(self.slice_view.set_slice)
        self.slice_view.sliceChanged.connect(self._slice_changed)
        central = QWidget()
        lay = QHBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.mpr, 1)
        self.strip_host = QHBoxLayout()  # the CAD heat strip goes beside the slider
        self.strip_host.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(self.strip_host)
        lay.addWidget(self.slider)
        self.setCentralWidget(central)

        # status bar: hover readout, progress, cancel
        self.hover_label = QLabel(OPEN_HINT)
        # the job's name in a label of its own (a long name clipped inside the bar hid the
        # percentage), the bar a real percentage from the first moment
        self.progress_label = QLabel("")
        self.progress_label.hide()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(True)
        self.progress.setFormat("%p%")
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel_work)
        self.statusBar().addWidget(self.hover_label, 1)
        self.statusBar().addPermanentWidget(self.progress_label)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_button)
        self.mpr.hoverInfo.connect(self._hover)

        # study panel
        self.study_text = QPlainTextEdit()
        self.study_text.setReadOnly(True)
        self.study_text.setMaximumBlockCount(200)
        self.study_dock = self.add_side_panel("Study", self.study_text)

        self._build_actions()
        self._warm_up = Task(_warm_up_job(), name="warm-up")
        self._warm_up.finished.connect(lambda _: gc.freeze())
        self._warm_up.start()
        from .annotations_panel import AnnotationsPanel, nodule_box

        self.annotations_panel = AnnotationsPanel(self.mpr)
        self.annotations_dock = self.add_side_panel("LIDC readers' nodules", self.annotations_panel)
        self.annotations_panel.set_visible_overlays(self.act_outlines.isChecked())
        self.act_outlines.toggled.connect(self._toggle_outlines)
        self.annotations_panel.noduleActivated.connect(
            lambda nod: (box := nodule_box(nod)) and self.slice_view.set_box(*box))
        from .cad_panel import CadController

        self.cad = CadController(self.session, self.bridge, self.run_task)
        self.strip_host.addWidget(self.cad.strip)
        self.cad.dock = self.add_side_panel("CAD assistant", self.cad.panel)
        self.slice_view.boxChanged.connect(self.cad.request_box)
        self.cad.panel.jumpToSlice.connect(self.slice_view.set_slice)
        self.cad.panel.openSimilar.connect(self.open_demo)
        from .findings_panel import ReadingController
        from .undo import History, WindowEdits

        self.history = History(self)
        self.reading_ctl = ReadingController(self.session, self.bridge, self.run_task,
                                             lambda: self.slice_view.box, self.history)
        self.reading_dock = self.add_side_panel("Reading", self.reading_ctl.panel)
        self.reading_ctl.marksChanged.connect(lambda marks: self.mpr.set_marks(
            [(m.slice, m.row, m.col, m.diameter_mm, m.status, m.extent) for m in marks]))
        self.reading_ctl.nodulesChanged.connect(lambda nodules: self.mpr.set_segmentations(
            [(n.mask.offset, n.mask.to_array()) for n in nodules if n.mask is not None]))
        self.reading_ctl.showMark.connect(self._show_mark)
        self.reading_menu.addActions(self.reading_ctl.actions)
        self.addActions(self.reading_ctl.actions)
        self.edits = WindowEdits(self, self.history)
        self.edit_menu.addActions(self.history.actions)
        self.addActions(self.history.actions)
        self.edit_menu.addSeparator()
        act_prefs = QAction("&Preferences… (keyboard shortcuts)", self)
        act_prefs.triggered.connect(self.edit_shortcuts)
        self.edit_menu.addAction(act_prefs)
        from .shortcuts import Shortcuts, menu_actions

        self.shortcuts = Shortcuts(menu_actions(self.menuBar()))
        self.shortcuts.load()
        self.measure_dock = self.add_side_panel("Measurements", self.mpr.measure_panel)
        self.mpr.measure_panel.measurementsChanged.connect(self.session.set_measurements)
        self.tabifyDockWidget(self.study_dock, self.annotations_dock)
        self.tabifyDockWidget(self.annotations_dock, self.measure_dock)
        self.tabifyDockWidget(self.cad.dock, self.reading_dock)
        self.annotations_dock.raise_()
        self.resizeDocks([self.cad.dock], [430], Qt.Orientation.Horizontal)
        from .offered_reading import install as install_offer  # issue 24 point 3

        self.offer_bar = install_offer(self)
        self._restore()

    # -- public API ---------------------------------------------------------------------------
    def add_side_panel(self, title: str, widget: QWidget) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title}")
        scroll = QScrollArea()  # panels scroll rather than force a tall window
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(widget)
        dock.setWidget(scroll)
        dock.setAllowedAreas(Qt.DockWidgetArea.LeftDockWidgetArea
                             | Qt.DockWidgetArea.RightDockWidgetArea)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        if hasattr(self, "panels_menu"):  # the Study panel is made before the menus
            self.panels_menu.addAction(dock.toggleViewAction())
        return dock

    # what this window shows of the session's state (set as its events arrive in the GUI
    # thread, so a reader of these sees what is on screen)
    volume: Volume | None = None
    mask = None
    annotations = None

    def open_study(self, path: str | Path, series_uid: str | None = None,
                   stored=None) -> None:
        """Load a DICOM folder (or file) and prepare it, in the background; ``stored``: see
        ``StudySession.opened_and_prepared_job`` (the worklist's stored findings)."""
        self._start_slice = None
        path = Path(path)
        self.study_path = path if path.is_dir() else path.parent
        self._start_load(self.session.open_job(path, series_uid), f"Loading {path.name}",
                         stored)

    def open_demo(self, patient_id: str = DEMO_PATIENT,
                  start_slice: int | None = None) -> None:
        """Generate (first time only) and open the synthetic LIDC twin of ``patient_id``,
        showing the 0-based slice ``start_slice`` once it is loaded (a similar nodule's)."""
        self._start_slice = start_slice
        self._start_load(self.session.demo_job(patient_id),
                         f"Preparing the synthetic demo study ({patient_id})")

    def set_preset(self, name: str) -> None:
        p = PRESETS[name]
        self.mpr.set_window(p.level, p.width)
        settings.put("window/preset", name)

    def cancel_work(self) -> None:
        for t in list(self.tasks):
            t.cancel()

    @property
    def busy(self) -> bool:
        """True while background work for the current study (or the CAD) is running."""
        return any(t.running for t in self.tasks) or self.cad.busy

    def request_box(self, k: int, r0: int, c0: int, r1: int, c1: int) -> None:
        """Place the CAD box (0-based slice, pixel rows/cols, end exclusive)."""
        self.slice_view.set_box(k, r0, c0, r1, c1)

    # -- loading -----------------------------------------------------------------------------
    def _start_load(self, opening, text: str, stored=None) -> None:
        # a new study: the previous one's load, annotations, segmentation and CAD scan stop
        # now instead of running to the end for nothing (a PACS dialog's query or retrieve,
        # also in self.tasks so that closing the window stops it, is not the study's work)
        for old in self.tasks:
            if not getattr(old, "outlives_study", False):
                old.cancel()
        self.cad.study_changing()
        state = {"opened": False}
        self._opening_state = state
        task = Task(self.session.opened_and_prepared_job(opening, stored=stored), name="study")
        self._load_task = task
        task.failed.connect(lambda msg: self._load_failed(msg) if not state["opened"] else
                            self.study_text.appendPlainText(f"⚠ {msg}"))
        task.cancelled.connect(lambda: self.statusBar().showMessage(
            "Cancelled." if state["opened"] else "Loading cancelled.", 5000))
        self.run_task(task, text)

    def run_task(self, task: Task, text: str) -> Task:
        """Start a background task with progress in the status bar; keeps it alive.
        After the window has closed nothing starts (a late signal, e.g. the CAD model
        finishing its load, must not leave a thread running)."""
        if getattr(self, "_closed", False):
            return task
        self.tasks.append(task)
        task.progress.connect(lambda d, n, t: self._progress(t or text, d, n))
        task.ended.connect(lambda t=task: self._task_ended(t))
        self.progress_label.setText(text)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress_label.show()
        self.progress.show()
        self.cancel_button.show()
        self.busyChanged.emit(True)
        return task.start()

    def _progress(self, text: str, done: int, total: int) -> None:
        if self.progress_label.text() != text:
            self.progress_label.setText(text)
            if total <= 0:  # a new step that has not counted yet
                self.progress.setRange(0, 100)
                self.progress.setValue(0)
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(max(done, 0), total))

    def _task_ended(self, task: Task) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        if not self.tasks:
            self.progress.hide()
            self.progress_label.hide()
            self.progress_label.setText("")
            self.cancel_button.hide()
            self.busyChanged.emit(False)

    # -- session events ---------------------------------------------------------------------
    def _session_event(self, name: str, payload) -> None:
        if getattr(self, "_closed", False):
            return  # queued before the window closed: nothing to show any more
        if name == "opened":
            self.volume, self.mask, self.annotations = payload, None, None
            self._loaded(payload)
        elif name == "annotations":
            self.annotations = payload
            self.annotations_panel.set_annotations(payload)
            self.annotationsReady.emit(payload)
        elif name == "mask":
            self.mask = payload
            self.mpr.set_mask(payload)
            self.mpr.set_mask_visible(self.act_mask.isChecked())
            self.maskReady.emit(payload)
        elif name == "message":
            self.study_text.appendPlainText(str(payload))

    def _loaded(self, volume: Volume) -> None:
        if getattr(self, "_opening_state", None) is not None:
            self._opening_state["opened"] = True
        self.study_path = self.session.folder
        self.mpr.set_volume(volume)
        reading = self.session.reading  # loaded with the study: its measurements
        if reading is not None:
            self.mpr.measure_panel.set_measurements(list(reading.measurements))
        if self._start_slice is not None:
            self.slice_view.set_slice(min(self._start_slice, volume.n_slices - 1))
            self._start_slice = None
        self.annotations_panel.set_annotations(None)
        self.slider.blockSignals(True)
        self.slider.setRange(0, volume.n_slices - 1)
        self.slider.setValue(self.slice_view.index)
        self.slider.blockSignals(False)
        self.slider.setEnabled(True)
        title = volume.description or "CT"
        self.setWindowTitle(f"lungviewer — {title}" + ("  [SYNTHETIC]" if volume.is_synthetic
                                                       else ""))
        self._describe(volume)
        self.hover_label.setText(f"{volume.n_slices} images open — move the mouse over an "
                                 "image for HU and position; F1 lists the keys.")
        if self.study_path is not None:
            self._update_recent(settings.add_recent_study(str(self.study_path)))
        self.statusBar().showMessage(
            f"Loaded {volume.n_slices} slices" + (f" — {len(volume.warnings)} warning(s), "
                                                  "see the Study panel" if volume.warnings else ""),
            8000)
        self.studyLoaded.emit(volume)

    def _load_failed(self, message: str) -> None:
        self.statusBar().showMessage("Could not open the study.", 8000)
        self.studyFailed.emit(message)
        if self.volume is None:
            self.hover_label.setText(OPEN_HINT)
        self._warn_later("Could not open the study", message)

    def _warn_later(self, title: str, message: str) -> None:
        """An error dialog shown once the job has ended, so that its progress bar and
        Cancel are gone before the dialog (its modal loop held them on screen)."""
        if not getattr(self, "quiet_errors", False):
            QTimer.singleShot(0, lambda: QMessageBox.warning(self, title, message))

    def _describe(self, v: Volume) -> None:
        lines = [
            f"{v.description or '(no description)'}",
            f"{v.n_slices} slices, {v.shape[1]}×{v.shape[2]} pixels",
            f"spacing {v.spacing[0]:.2f} mm (z) × {v.spacing[1]:.3f} × {v.spacing[2]:.3f} mm",
            f"z {v.z_positions[0]:.1f} … {v.z_positions[-1]:.1f} mm",
        ]
        if v.is_synthetic:
            lines.append("SYNTHETIC image (LIDC twin): not a patient image.")
        lines += [f"⚠ {w}" for w in v.warnings]
        self.study_text.setPlainText("\n".join(lines))

    # -- actions --------------------------------------------------------------------------------
    def _build_actions(self) -> None:
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        self.act_open = QAction("&Open DICOM folder…", self, shortcut=QKeySequence.StandardKey.Open)
        self.act_open.triggered.connect(self._open_dialog)
        fm.addAction(self.act_open)
        act_demo = QAction("Open &demo study (synthetic)", self)
        act_demo.triggered.connect(lambda: self.open_demo())
        fm.addAction(act_demo)
        from .worklist import add_worklist_action

        add_worklist_action(self, fm)
        self.recent_menu = fm.addMenu("&Recent studies")
        from .compare_view import FollowupController  # follow-up reading (issue 26)

        self.followup = FollowupController(self)
        self.act_prior = QAction("Open &prior… (follow-up comparison)", self)
        self.act_prior.triggered.connect(self.followup.open_dialog)
        fm.addAction(self.act_prior)
        from . import prior_pacs

        self.act_prior_pacs = QAction("Find prior on P&ACS… (follow-up comparison)", self)
        self.act_prior_pacs.triggered.connect(lambda: prior_pacs.open_dialog(self))
        fm.addAction(self.act_prior_pacs)
        fm.addSeparator()
        self.act_export = QAction("&Export reading… (SR, SEG, PDF)", self, shortcut="Ctrl+E")
        self.act_export.triggered.connect(self._export_dialog)
        fm.addAction(self.act_export)
        fm.addSeparator()
        from . import pacs_dialog
        self.act_pacs = QAction("&Query PACS…", self, shortcut="Ctrl+Shift+O")
        self.act_pacs.triggered.connect(lambda: pacs_dialog.open_query_dialog(self))
        fm.addAction(self.act_pacs)
        self.act_pacs_send = QAction("Send reading to &PACS…", self)
        self.act_pacs_send.triggered.connect(lambda: pacs_dialog.send_reading(self))
        fm.addAction(self.act_pacs_send)
        fm.addSeparator()
        act_quit = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        act_quit.triggered.connect(self.close)
        fm.addAction(act_quit)

        self.edit_menu = mb.addMenu("&Edit")  # undo / redo, filled once the history exists

        vm = mb.addMenu("&View")
        group = QActionGroup(self)
        self.preset_actions: dict[str, QAction] = {}
        for p in PRESETS.values():
            a = QAction(f"{p.name.capitalize()} window (L {p.level:.0f} / W {p.width:.0f})", self,
                        shortcut=p.key, checkable=True)
            a.triggered.connect(lambda _=False, n=p.name: self.set_preset(n))
            group.addAction(a)
            vm.addAction(a)
            self.preset_actions[p.name] = a
        vm.addSeparator()
        self.act_mask = QAction("Lung &parenchyma overlay", self, shortcut="M", checkable=True)
        self.act_mask.setChecked(bool(settings.get("overlay/mask", True, bool)))
        self.act_mask.toggled.connect(self._toggle_mask)
        vm.addAction(self.act_mask)
        # the lung overlay is an outline by default (as Horos and syngo draw segmentations
        # over CT): a fill hides the attenuation the reader reads; Shift+M fills it
        self.act_mask_fill = QAction("Lung parenchyma f&ill", self, shortcut="Shift+M",
                                     checkable=True)
        self.act_mask_fill.setChecked(bool(settings.get("overlay/mask_fill", False, bool)))
        self.mpr.set_mask_fill(self.act_mask_fill.isChecked())
        self.act_mask_fill.toggled.connect(self._toggle_mask_fill)
        vm.addAction(self.act_mask_fill)
        self.act_outlines = QAction("Readers' &outlines", self, shortcut="A", checkable=True)
        self.act_outlines.setChecked(bool(settings.get("overlay/outlines", True, bool)))
        vm.addAction(self.act_outlines)
        act_reset = QAction("&Reset zoom", self, shortcut="R")
        act_reset.triggered.connect(self.mpr.reset_zoom)
        vm.addAction(act_reset)
        vm.addSeparator()
        layout_menu = vm.addMenu("Layout, slab and &cine")
        layout_menu.addActions(self.mpr.view_actions)
        vm.addSeparator()
        self.panels_menu = vm.addMenu("Panels")
        self.panels_menu.addAction(self.study_dock.toggleViewAction())
        # the side panels fold away and come back in one key, leaving the screen to the
        # images (as Horos's and syngo's image-only view)
        self.act_images_only = QAction("&Images only (hide the side panels)", self,
                                       shortcut="F11", checkable=True)
        self.act_images_only.toggled.connect(self.set_images_only)
        vm.addAction(self.act_images_only)

        tm = mb.addMenu("&Tools")
        self.act_box = QAction("&Box a nodule", self, shortcut="B", checkable=True)
        self.act_box.toggled.connect(self.mpr.set_box_mode)
        tm.addAction(self.act_box)
        tm.addSeparator()
        tm.addActions(self.mpr.measure_actions)
        self.reading_menu = mb.addMenu("&Reading")  # filled by the reading controller
        self.mpr.toolChanged.connect(lambda kind: kind and self.act_box.setChecked(False))

        hm = mb.addMenu("&Help")
        act_keys = QAction("&Keyboard shortcuts", self, shortcut="F1")
        act_keys.triggered.connect(self.show_shortcuts)
        hm.addAction(act_keys)
        act_about = QAction("&About lungviewer", self)
        act_about.triggered.connect(lambda: QMessageBox.about(
            self, "About lungviewer", ABOUT.format(version=__version__)))
        hm.addAction(act_about)

        tb = self.addToolBar("Main")
        tb.setObjectName("toolbar-main")
        tb.addAction(self.act_open)
        tb.addSeparator()
        for a in self.preset_actions.values():
            tb.addAction(a)
        tb.addSeparator()
        tb.addAction(self.act_box)
        tb.addAction(self.act_mask)
        self.mask_opacity = QSlider(Qt.Orientation.Horizontal)
        self.mask_opacity.setRange(5, 100)
        self.mask_opacity.setMaximumWidth(90)
        self.mask_opacity.setToolTip("Opacity of the lung parenchyma fill (%)")
        self.mask_opacity.setValue(int(settings.get("overlay/mask_opacity", 30, int)))
        self.mpr.set_mask_opacity(self.mask_opacity.value() / 100)
        self.mask_opacity.valueChanged.connect(self._set_mask_opacity)
        self.mask_opacity.setEnabled(self.act_mask.isChecked()
                                     and self.act_mask_fill.isChecked())
        tb.addWidget(self.mask_opacity)
        tb.addAction(self.act_outlines)

    def set_images_only(self, on: bool) -> None:
        """Hide every side panel (and bring the ones that were shown back)."""
        docks = self.findChildren(QDockWidget)
        if on:
            self._docks_shown = [d for d in docks if d.isVisible()]
            for d in self._docks_shown:
                d.hide()
        else:
            for d in getattr(self, "_docks_shown", docks):
                d.show()
        if self.act_images_only.isChecked() != on:
            self.act_images_only.setChecked(on)

    def _toggle_outlines(self, on: bool) -> None:
        self.annotations_panel.set_visible_overlays(on)
        settings.put("overlay/outlines", on)

    def _toggle_mask(self, on: bool) -> None:
        self.mpr.set_mask_visible(on)
        self.mask_opacity.setEnabled(on and self.act_mask_fill.isChecked())
        settings.put("overlay/mask", on)

    def _toggle_mask_fill(self, on: bool) -> None:
        self.mpr.set_mask_fill(on)
        if on and not self.act_mask.isChecked():
            self.act_mask.setChecked(True)
        self.mask_opacity.setEnabled(on)
        settings.put("overlay/mask_fill", on)

    def _set_mask_opacity(self, percent: int) -> None:
        self.mpr.set_mask_opacity(percent / 100)
        settings.put("overlay/mask_opacity", percent)

    def _restore(self) -> None:
        name = str(settings.get("window/preset", "lung"))
        if name not in PRESETS:
            name = "lung"
        self.preset_actions[name].setChecked(True)
        self.mpr.set_window(PRESETS[name].level, PRESETS[name].width)
        geo = settings.get("window/geometry")
        if geo is None or not self.restoreGeometry(geo):
            self._fit_screen()
        state = settings.get("window/state")
        if state is not None:
            self.restoreState(state)
        self._update_recent(settings.recent_studies())

    def _fit_screen(self) -> None:
        """First start: most of the screen the window is on (the CAD panel needs height),
        maximised on screens smaller than the layout wants."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            self.resize(1400, 900)
            return
        area = screen.availableGeometry()
        if area.width() < 1400 or area.height() < 900:
            self.resize(area.width(), area.height())
            self.setWindowState(self.windowState() | Qt.WindowState.WindowMaximized)
        else:
            self.resize(int(area.width() * 0.9), int(area.height() * 0.9))
            self.move(area.center() - self.rect().center())

    # -- reading and export ---------------------------------------------------------------------
    def _show_mark(self, mark) -> None:
        """Go to a CAD finding in every view: its images, panned only as far as needed to
        show it whole, the zoom kept (as Horos and syngo step through findings)."""
        if self.volume is None:
            return
        self.mpr.set_point(int(mark.slice), int(mark.row), int(mark.col))
        self.slice_view.set_slice(int(mark.slice))
        self.mpr.bring_into_view(float(mark.slice), float(mark.row), float(mark.col),
                                 float(getattr(mark, "diameter_mm", 0.0)))

    def show_shortcuts(self) -> QMessageBox:
        """F1: the keys in use (the commands' actions, so changed keys show) and the mouse."""
        box = QMessageBox(QMessageBox.Icon.NoIcon, "Keyboard shortcuts", "", parent=self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(self.shortcuts.help_html())
        self.help_box = box
        box.open()
        return box

    def edit_shortcuts(self):
        from .shortcuts import ShortcutDialog

        dlg = ShortcutDialog(self.shortcuts, self)
        self.shortcut_dialog = dlg
        dlg.open()
        return dlg

    def _export_dialog(self) -> None:
        if self.volume is None or self.session.reading is None:
            self.statusBar().showMessage("Open a study first.", 5000)
            return
        start = settings.get("export/folder", str(Path.home()))
        folder = QFileDialog.getExistingDirectory(self, "Export the reading to a folder",
                                                  str(start))
        if folder:
            self.export_reading(folder)

    def export_reading(self, folder: str | Path, ask: bool = True) -> Task | None:
        """Write the reading as SR, SEG and a PDF into ``folder`` in the background; asks
        before replacing files that are there (``ask=False``: never replaces)."""
        out = Path(folder)
        there = [n for n in ("sr.dcm", "seg.dcm", "report.pdf") if (out / n).exists()]
        force = False
        if there:
            if not ask:
                self.statusBar().showMessage(f"{', '.join(there)} already in {out}", 8000)
                return None
            answer = QMessageBox.question(
                self, "Replace the export?", f"{', '.join(there)} already exist in {out}. "
                "Replace them?")
            if answer != QMessageBox.StandardButton.Yes:
                return None
            force = True
        settings.put("export/folder", str(out))
        task = Task(self.session.export_job(out, force=force), name="export")
        task.finished.connect(lambda files: self.statusBar().showMessage(
            "Exported " + ", ".join(Path(f).name for f in files) + f" to {out}", 10000))
        task.failed.connect(lambda msg: self._export_failed(msg))
        return self.run_task(task, "Exporting the reading")

    def _export_failed(self, message: str) -> None:
        self.statusBar().showMessage(f"Export failed: {message}", 10000)
        self._warn_later("Export failed", message)

    def _update_recent(self, items: list[str]) -> None:
        self.recent_menu.clear()
        for p in items:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, p=p: self.open_study(p))
        self.recent_menu.setEnabled(bool(items))

    def _open_dialog(self) -> None:
        start = str(self.study_path or Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a DICOM folder", start)
        if folder:
            self.open_study(folder)

    # -- events -------------------------------------------------------------------------------
    def keyPressEvent(self, ev):  # noqa: N802
        sv = self.mpr.active  # the view last scrolled or clicked
        steps = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1, Qt.Key.Key_Right: 1,
                 Qt.Key.Key_Left: -1, Qt.Key.Key_PageUp: 10, Qt.Key.Key_PageDown: -10}
        if ev.key() in steps:
            sv.step(steps[ev.key()])
        elif ev.key() == Qt.Key.Key_Home:
            sv.set_slice(0)
        elif ev.key() == Qt.Key.Key_End and sv.volume is not None:
            sv.set_slice(sv.volume.n_slices - 1)
        elif ev.key() == Qt.Key.Key_Escape:
            self.act_box.setChecked(False)
            self.mpr.set_tool(None)
        else:
            super().keyPressEvent(ev)

    def dragEnterEvent(self, ev):  # noqa: N802
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):  # noqa: N802
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_study(urls[0])

    def closeEvent(self, ev):  # noqa: N802
        if getattr(self, "_closed", False):  # closed twice (e.g. by a test and its teardown)
            super().closeEvent(ev)
            return
        self._closed = True
        settings.put("window/geometry", self.saveGeometry())
        settings.put("window/state", self.saveState())
        for t in [*self.tasks, self._warm_up]:
            t.shutdown()
        self.cad.shutdown()
        self.saver.close()  # the reading on disk before the window goes
        self.bridge.unsubscribe()
        self.session.close()
        super().closeEvent(ev)

    def _slice_changed(self, k: int) -> None:
        if self.slider.value() != k:
            self.slider.blockSignals(True)
            self.slider.setValue(k)
            self.slider.blockSignals(False)

    def _hover(self, text: str) -> None:
        if text:
            self.hover_label.setText(text)


# the warm-up job runs on a worker thread: its imports (pydicom, scipy, scikit-image, the
# LIDC database) happen there, so the GUI thread never waits for them
def _warm_up_job():
    """Import the heavy modules and read the LIDC database once, off the GUI thread, while
    the user picks a study. Afterwards the GUI thread freezes these long-lived objects out of
    the garbage collector: a full collection over the database's ~100k objects, triggered
    by any worker, would otherwise hold the interpreter for ~100 ms."""
    yield Progress(0, 0, "Starting")
    import pydicom.pixels  # noqa: F401 — pixel decoder plugins are discovered on import
    import scipy.ndimage  # noqa: F401
    import skimage.draw  # noqa: F401

    from lungviewer.study.lidc_db import get_database
    import lungviewer.study.nodules  # noqa: F401
    import lungviewer.imaging.parenchyma  # noqa: F401

    try:
        get_database()
    except Exception:  # noqa: BLE001 — reported when annotations are looked up
        pass
    return True


def application() -> QApplication:
    # worker threads run Python code too (DICOM headers, annotations): a shorter GIL
    # switch interval than the default 5 ms lets the GUI thread in between them sooner
    sys.setswitchinterval(0.001)
    app = QApplication.instance() or QApplication([])
    app.setApplicationName("lungviewer")
    app.setOrganizationName("lungviewer")
    app.setDesktopFileName("lungviewer")  # the installed .desktop entry (taskbar grouping)
    icon = paths.resources_dir() / "icon.png"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    return app
