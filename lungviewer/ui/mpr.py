"""Multi-planar reading: axial, coronal and sagittal views of one volume with a linked
crosshair, three layouts, thick slabs (MIP / MinIP / average), cine and the measurement
tools.

Layouts: ``axial`` (one axial view), ``1x3`` (axial, coronal, sagittal side by side) and
``2x2`` (the three planes plus an axial slab overview that always shows a thick slab —
the set slab mode, MIP when slabs are off — at least 20 mm thick, so that it shows more
than the axial view beside it). A left click in any view moves the crosshair
point (a voxel ``(z, y, x)``) there and the other views to the images through it;
scrolling a view moves the point along that view's axis.

:class:`MprWidget` mirrors the parts of :class:`~.slice_view.SliceView`'s API that the main
window and the panels use (``set_slice``, ``index``, ``set_mask``, ``set_polygons``,
``centre_on``, ``set_window`` …) and forwards them to every view; the CAD box lives on the
axial view (:attr:`MprWidget.axial`). Its actions (:attr:`MprWidget.actions`) carry the
keys; they work as soon as the widget is in a window, and the main window lists them in
its menus.
"""

from __future__ import annotations

import logging

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QGridLayout, QWidget

from lungviewer.imaging import planes
from lungviewer.study.volume import Volume

from . import settings
from .measure_tools import TOOLS, MeasureLayer, MeasurementPanel
from .slice_view import SLAB_MM_RANGE, SLAB_NAMES, SliceView

log = logging.getLogger(__name__)

LAYOUTS = ("axial", "1x3", "2x2")
LAYOUT_TITLES = {"axial": "One axial view", "1x3": "1×3: axial, coronal, sagittal",
                 "2x2": "2×2: axial, coronal, sagittal, axial slab"}
SLAB_STEP_MM = 2.0
OVERVIEW_MIN_MM = 20.0  # the 2×2 overview's slab is at least this thick
OVERVIEW_MS = 40  # the overview follows the axial view at most this often while it scrolls
CINE_FPS_RANGE = (1, 30)

#: the keys, for the F1 help text
KEYS = """\
L                      next layout (axial → 1×3 → 2×2)
Left click             move the crosshair (the other views follow)
C                      show/hide the crosshair
S                      thick slab on/off (MIP / MinIP / average)
Shift+S                next slab mode
[ / ]                  thinner / thicker slab (2–40 mm)
P                      cine: play/pause through the images of the last used view
, / .                  slower / faster cine
D                      ruler (mm)
E / G                  ellipse / rectangle ROI (area, HU mean, SD, min, max)
Shift+D                long and short axis
Del                    delete the selected measurement
"""


class MprWidget(QWidget):
    """The views of one volume on the three planes, in a layout, linked by a crosshair."""

    sliceChanged = Signal(int)  # the axial index
    hoverInfo = Signal(str)
    pointChanged = Signal(int, int, int)  # the crosshair voxel (z, y, x)
    layoutChanged = Signal(str)
    slabChanged = Signal(str, float)  # mode ('' = off), thickness mm
    cineChanged = Signal(bool)
    toolChanged = Signal(str)  # the measurement tool ('' = none)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.volume: Volume | None = None
        self.slab_cache = planes.SlabCache(max_items=64)  # ≤ 64 MB of 512² float32
        self.outline_store: dict = {}  # the readers' outlines rasterised once per study
        self.axial, self.coronal, self.sagittal, self.overview = (
            SliceView(self, plane, self.slab_cache, self.outline_store)
            for plane in ("axial", "coronal", "sagittal", "axial"))  # overview: 2×2 slab
        self.overview.title = "Axial slab overview"
        self.views: tuple[SliceView, ...] = (self.axial, self.coronal, self.sagittal,
                                             self.overview)
        self.point: tuple[int, int, int] | None = None
        self.active: SliceView = self.axial  # the view the cine and the keys act on
        self.crosshair_visible = True
        self._linking = False
        self._window_sync = False
        self.layout_name = ""
        self.slab_mode: str | None = None
        self.slab_mm = float(np.clip(float(settings.get("view/slab_mm", 10.0, float)),
                                     *SLAB_MM_RANGE))
        mode = str(settings.get("view/slab_mode", "mip"))
        self._last_mode = mode if mode in planes.SLAB_MODES else "mip"

        self.measure_panel = MeasurementPanel()
        self.layers = [MeasureLayer(v, self.measure_panel) for v in self.views]
        self.measure_panel.measurementSelected.connect(self.show_measurement)

        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(2)
        for v in self.views:
            v.setMinimumSize(160, 160)
            v.hide()
            v.sliceChanged.connect(lambda k, v=v: self._view_scrolled(v, k))
            v.clicked.connect(self.set_point)
            v.activated.connect(lambda v=v: self._activate(v))
            v.hoverInfo.connect(self.hoverInfo)
            v.windowChanged.connect(lambda lv, w, v=v: self._window_changed(v, lv, w))
        self._overview_timer = QTimer(self)
        self._overview_timer.setSingleShot(True)
        self._overview_timer.setInterval(OVERVIEW_MS)
        self._overview_timer.timeout.connect(lambda: self.overview.set_slice(self.axial.index))
        self.cine_timer = QTimer(self)
        self.cine_timer.timeout.connect(self._cine_step)
        self.cine_fps = int(np.clip(int(settings.get("cine/fps", 10, int)), *CINE_FPS_RANGE))
        self._build_actions()
        name = str(settings.get("view/layout", "axial"))
        self.set_layout(name if name in LAYOUTS else "axial", remember=False)
        self._apply_slab()

    # -- SliceView-like API (forwarded) -------------------------------------------------------
    @property
    def index(self) -> int:
        return self.axial.index

    @property
    def box(self):
        return self.axial.box

    def set_volume(self, volume: Volume, index: int | None = None) -> None:
        self.set_cine(False)
        self.volume = volume
        self.slab_cache.clear()
        for v in self.views:
            v.set_volume(volume)
        self.measure_panel.set_volume(volume)
        nz, ny, nx = volume.shape
        self.set_point(nz // 2 if index is None else index, ny // 2, nx // 2)
        self._apply_slab()

    def set_slice(self, index: int) -> None:
        self.axial.set_slice(index)

    def step(self, delta: int) -> None:
        self.active.step(delta)

    def set_mask(self, mask) -> None:
        for v in self.views:
            v.set_mask(mask)

    def set_mask_visible(self, visible: bool) -> None:
        for v in self.views:
            v.set_mask_visible(visible)

    def set_mask_opacity(self, opacity: float) -> None:
        for v in self.views:
            v.set_mask_opacity(opacity)

    def set_mask_fill(self, on: bool) -> None:
        for v in self.views:
            v.set_mask_fill(on)

    def set_polygons(self, polygons, markers=()) -> None:
        polygons, markers = list(polygons), list(markers)
        self.outline_store.clear()
        for v in self.views:
            v.set_polygons(polygons, markers)

    def set_group_visible(self, group: str, visible: bool) -> None:
        for v in self.views:
            v.set_group_visible(group, visible)

    def set_marks(self, marks) -> None:
        """CAD findings as ``(z, y, x, diameter_mm, status)`` (voxels), in every view."""
        marks = list(marks)
        for v in self.views:
            v.set_marks(marks)

    def set_segmentations(self, items) -> None:
        """Segmented nodules ``(offset (z, y, x), boolean crop mask[, colour])``, outlined in
        every view."""
        items = list(items)
        for v in self.views:
            v.set_segmentations(items)

    def set_window(self, level: float, width: float) -> None:
        for v in self.views:
            v.set_window(level, width)

    def reset_zoom(self) -> None:
        for v in self.views:
            v.reset_zoom()

    def set_box_mode(self, on: bool) -> None:
        if on:
            self.set_tool(None)
        self.axial.set_box_mode(on)

    def set_box(self, *box, emit: bool = True) -> None:
        self.axial.set_box(*box, emit=emit)

    def centre_on(self, row: float, col: float) -> None:
        """Move the crosshair to (axial image, row, col) and centre every view on it."""
        if not (np.isfinite(row) and np.isfinite(col)) or self.volume is None:
            return
        self.set_point(self.axial.index, round(row), round(col))
        z, y, x = self.point
        for v in self.views:
            _, r, c = planes.from_volume(v.plane, z, y, x)
            v.centre_on(r, c)

    def bring_into_view(self, z: float, y: float, x: float, diameter_mm: float = 0.0) -> None:
        """Pan each shown view only as far as needed for the voxel ``(z, y, x)`` and a
        ``diameter_mm`` circle around it (plus a margin) to be on screen; the zoom stays."""
        if self.volume is None:
            return
        for v in self.layout_views():
            _, r, c = planes.from_volume(v.plane, z, y, x)
            v.ensure_visible(r, c, diameter_mm / 2.0)

    # -- the crosshair -----------------------------------------------------------------------
    def set_point(self, z: int, y: int, x: int) -> None:
        """Move the crosshair to voxel ``(z, y, x)``; each view shows the image through it."""
        if self.volume is None:
            return
        hi = np.asarray(self.volume.shape) - 1
        z, y, x = (int(v) for v in np.clip([z, y, x], 0, hi))
        self.point = (z, y, x)
        self._linking = True
        try:
            for v in self.views:
                v.set_slice(int(planes.from_volume(v.plane, z, y, x)[0]))
        finally:
            self._linking = False
        self._update_crosshairs()
        self.pointChanged.emit(z, y, x)

    def set_crosshair_visible(self, on: bool) -> None:
        self.crosshair_visible = bool(on)
        self._update_crosshairs()

    def _update_crosshairs(self) -> None:
        show = self.crosshair_visible and self.layout_name != "axial"
        for v in self.views:
            v.set_crosshair(self.point if show else None)

    def _view_scrolled(self, view: SliceView, k: int) -> None:
        if self.volume is None or self.point is None:
            return
        if view is self.axial:
            self.sliceChanged.emit(k)
        if self._linking:
            return
        z, y, x = self.point
        axis = planes.AXIS[view.plane]
        p = [z, y, x]
        p[axis] = int(k)
        self.point = (p[0], p[1], p[2])
        if view is self.axial:
            # the slab overview follows at most every OVERVIEW_MS while the axial view
            # scrolls: a scroll step then costs one view, not two
            if not self._overview_timer.isActive():
                self._overview_timer.start()
        elif view is self.overview:
            self.axial.set_slice(k)
        self._update_crosshairs()
        self.pointChanged.emit(*self.point)

    def _activate(self, view: SliceView) -> None:
        self.active = view
        self._update_highlight()

    def _update_highlight(self) -> None:
        several = len(self.layout_views()) > 1
        for v in self.views:
            v.set_highlighted(several and v is self.active)

    def _window_changed(self, view: SliceView, level: float, width: float) -> None:
        if self._window_sync:
            return
        self._window_sync = True
        try:
            for v in self.views:
                if v is not view and (v.level, v.width) != (level, width):
                    v.set_window(level, width)
        finally:
            self._window_sync = False

    # -- layouts -----------------------------------------------------------------------------
    def layout_views(self, name: str | None = None) -> tuple[SliceView, ...]:
        """The views a layout shows, in reading order."""
        name = name or self.layout_name
        return {"axial": (self.axial,), "1x3": (self.axial, self.coronal, self.sagittal),
                "2x2": self.views}[name]

    def set_layout(self, name: str, remember: bool = True) -> None:
        """Show layout ``axial``, ``1x3`` or ``2x2`` (remembered for the next start)."""
        if name not in LAYOUTS:
            raise ValueError(f"unknown layout {name!r}; one of {', '.join(LAYOUTS)}")
        for v in self.views:
            self.grid.removeWidget(v)
            v.hide()
        cells = {"axial": [(0, 0)], "1x3": [(0, 0), (0, 1), (0, 2)],
                 "2x2": [(0, 0), (0, 1), (1, 0), (1, 1)]}[name]
        shown = self.layout_views(name)
        for v, (r, c) in zip(shown, cells):
            self.grid.addWidget(v, r, c)
            v.show()
        for v in self.views:  # hidden views draw their overlays once shown
            v.set_deferred(v not in shown)
        n_rows = 1 + max(r for r, _ in cells)
        n_cols = 1 + max(c for _, c in cells)
        # 1×3: the axial image, the one read, gets half the width (at 1920×1080 it is then
        # wider than its 512 matrix; equal thirds left it at about 480 px)
        col_stretch = {"1x3": (2, 1, 1)}.get(name, (1,) * n_cols)
        for i in range(3):
            self.grid.setRowStretch(i, 1 if i < n_rows else 0)
            self.grid.setColumnStretch(i, col_stretch[i] if i < n_cols else 0)
        if self.active not in shown:
            self.active = self.axial
        self.layout_name = name
        self._update_highlight()
        if name in self.layout_actions:
            self.layout_actions[name].setChecked(True)
        self._update_crosshairs()
        if remember:
            settings.put("view/layout", name)
        QTimer.singleShot(0, lambda: [v.reset_zoom() for v in shown if v.volume is not None])
        self.layoutChanged.emit(name)

    def apply_options(self, layout: str | None = None,
                      slab: tuple[str | None, float] | None = None) -> None:
        """What ``lungviewer view --layout NAME --slab MODE:MM`` asks for (None: unchanged);
        ``slab`` as :func:`lungviewer.imaging.planes.parse_slab` gives it."""
        if layout is not None:
            self.set_layout(layout)
        if slab is not None:
            self.set_slab(*slab)

    def next_layout(self) -> None:
        self.set_layout(LAYOUTS[(LAYOUTS.index(self.layout_name) + 1) % len(LAYOUTS)])

    # -- slabs -------------------------------------------------------------------------------
    def set_slab(self, mode: str | None, thickness_mm: float | None = None) -> None:
        """Thick slabs in every view: ``mip``, ``minip`` or ``avg`` over ``thickness_mm``
        (2–40 mm; the last one set when None), or single images with ``mode`` None. The
        mode and thickness are remembered."""
        if mode is not None and mode not in planes.SLAB_MODES:
            raise ValueError(f"unknown slab mode {mode!r}; one of none, "
                             f"{', '.join(planes.SLAB_MODES)}")
        if thickness_mm is not None:
            self.slab_mm = float(np.clip(float(thickness_mm), *SLAB_MM_RANGE))
            settings.put("view/slab_mm", self.slab_mm)
        self.slab_mode = mode
        if mode is not None:
            self._last_mode = mode
            settings.put("view/slab_mode", mode)
        self._apply_slab()
        self.slabChanged.emit(mode or "", self.slab_mm)

    def _apply_slab(self) -> None:
        for v in (self.axial, self.coronal, self.sagittal):
            v.set_slab(self.slab_mode, self.slab_mm)
        self.overview.set_slab(self.slab_mode or self._last_mode,
                               max(self.slab_mm, OVERVIEW_MIN_MM))
        if hasattr(self, "act_slab"):
            self.act_slab.blockSignals(True)
            self.act_slab.setChecked(self.slab_mode is not None)
            self.act_slab.setText(self._slab_text())
            self.act_slab.blockSignals(False)

    def _slab_text(self) -> str:
        return (f"Thick &slab ({SLAB_NAMES[self.slab_mode or self._last_mode]}, "
                f"{self.slab_mm:.0f} mm)")

    def toggle_slab(self) -> None:
        self.set_slab(None if self.slab_mode else self._last_mode)

    def next_slab_mode(self) -> None:
        modes = planes.SLAB_MODES
        cur = self.slab_mode or self._last_mode
        self.set_slab(modes[(modes.index(cur) + 1) % len(modes)] if self.slab_mode else cur)

    def change_slab_thickness(self, delta_mm: float) -> None:
        self.set_slab(self.slab_mode, self.slab_mm + delta_mm)

    # -- cine --------------------------------------------------------------------------------
    def set_cine(self, on: bool) -> None:
        """Play (or pause) the images of the active view at :attr:`cine_fps`, wrapping at
        the end."""
        on = bool(on) and self.volume is not None
        if on == self.cine_timer.isActive():
            return
        if on:
            self.cine_timer.start(round(1000 / self.cine_fps))
        else:
            self.cine_timer.stop()
        if hasattr(self, "act_cine"):
            self.act_cine.blockSignals(True)
            self.act_cine.setChecked(on)
            self.act_cine.blockSignals(False)
        self.cineChanged.emit(on)

    @property
    def playing(self) -> bool:
        return self.cine_timer.isActive()

    def set_cine_fps(self, fps: float) -> None:
        """Cine rate in images per second (1–30, remembered)."""
        self.cine_fps = int(np.clip(round(float(fps)), *CINE_FPS_RANGE))
        settings.put("cine/fps", self.cine_fps)
        if self.cine_timer.isActive():
            self.cine_timer.setInterval(round(1000 / self.cine_fps))
        if hasattr(self, "act_cine"):
            self.act_cine.setText(f"&Cine ({self.cine_fps} images/s)")

    def _cine_step(self) -> None:
        v = self.active
        if v.volume is None:
            return
        v.set_slice((v.index + 1) % v.n_images)

    # -- measurements ------------------------------------------------------------------------
    def set_tool(self, kind: str | None) -> None:
        """Draw measurements of ``kind`` (ruler, ellipse, rectangle, bidirectional) with the
        left mouse button in any view; None: back to panning and the crosshair."""
        if kind is not None and kind not in TOOLS:
            raise ValueError(f"unknown measurement tool {kind!r}; one of {', '.join(TOOLS)}")
        if kind is not None:
            self.axial.set_box_mode(False)
        # tools are modal: while one is active a drag only draws (the CAD box stays put)
        self.axial.set_box_movable(kind is None)
        for layer in self.layers:
            layer.set_tool(kind)
        for k, a in self.tool_actions.items():
            a.blockSignals(True)
            a.setChecked(k == kind)
            a.blockSignals(False)
        self.toolChanged.emit(kind or "")

    @property
    def tool(self) -> str | None:
        return self.layers[0].tool

    def show_measurement(self, m) -> None:
        """Show the image a measurement is on (in the view of its plane)."""
        view = {"axial": self.axial, "coronal": self.coronal, "sagittal": self.sagittal}.get(
            m.plane)
        if view is None or self.volume is None:
            return
        if view not in self.layout_views():
            self.set_layout("1x3")
        view.set_slice(int(m.index))
        self._activate(view)

    # -- actions -----------------------------------------------------------------------------
    def _action(self, text: str, key: str | None, slot, checkable: bool = False) -> QAction:
        a = QAction(text, self, checkable=checkable)
        if key:
            a.setShortcut(QKeySequence(key))
        (a.toggled if checkable else a.triggered).connect(slot)
        self.addAction(a)
        return a

    def _build_actions(self) -> None:
        self.layout_actions: dict[str, QAction] = {}
        group = QActionGroup(self)
        for name in LAYOUTS:
            a = QAction(LAYOUT_TITLES[name], self, checkable=True)
            a.triggered.connect(lambda _=False, n=name: self.set_layout(n))
            group.addAction(a)
            self.layout_actions[name] = a
        self.act_next_layout = self._action("Next &layout", "L", self.next_layout)
        self.act_crosshair = self._action("Cross&hair", "C", self.set_crosshair_visible, True)
        self.act_crosshair.setChecked(True)
        self.act_slab = self._action(self._slab_text(), "S", lambda on: self.set_slab(
            self._last_mode if on else None), True)
        self.act_slab_mode = self._action("Next slab &mode (MIP / MinIP / average)", "Shift+S",
                                          self.next_slab_mode)
        self.act_thinner = self._action("Thinner slab (−2 mm)", "[",
                                        lambda: self.change_slab_thickness(-SLAB_STEP_MM))
        self.act_thicker = self._action("Thicker slab (+2 mm)", "]",
                                        lambda: self.change_slab_thickness(SLAB_STEP_MM))
        self.act_cine = self._action(f"&Cine ({self.cine_fps} images/s)", "P", self.set_cine,
                                     True)
        self.act_slower = self._action("Slower cine", ",",
                                       lambda: self.set_cine_fps(self.cine_fps - 2))
        self.act_faster = self._action("Faster cine", ".",
                                       lambda: self.set_cine_fps(self.cine_fps + 2))
        self.tool_actions: dict[str, QAction] = {}
        for kind, (title, key) in TOOLS.items():
            self.tool_actions[kind] = self._action(
                title, key, lambda on, k=kind: self.set_tool(k if on else None), True)
        self.act_delete = self._action("&Delete the selected measurement", "Del",
                                       self.measure_panel.delete_selected)
        self.view_actions = [self.act_next_layout, *self.layout_actions.values(),
                             self.act_crosshair, self.act_slab, self.act_slab_mode,
                             self.act_thinner, self.act_thicker, self.act_cine,
                             self.act_slower, self.act_faster]
        self.measure_actions = [*self.tool_actions.values(), self.act_delete]
        for a in self.layout_actions.values():
            self.addAction(a)

    def keyPressEvent(self, ev):  # Esc ends a measurement tool
        if ev.key() == Qt.Key.Key_Escape and self.tool is not None:
            self.set_tool(None)
        else:
            super().keyPressEvent(ev)
