"""Measurement tools on the slice views: ruler, ellipse and rectangle ROIs, long/short axis —
drawn with the left mouse button in any view, listed in :class:`MeasurementPanel`,
selectable, movable (drag the shape or its handles) and deletable (Del).

The figures (mm, mm², HU statistics) come from :func:`lungviewer.reading.measurements.
measure`; this module only draws. A measurement's points are ``(row, col)`` pixel
coordinates of its plane image with pixel centres at integers; the views put pixel
``(r, c)``'s centre at ``(c + 0.5, r + 0.5)``, hence the half-pixel shifts below.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from lungviewer.imaging import planes
from lungviewer.reading.measurements import Measurement, MeasurementResult, measure

log = logging.getLogger(__name__)

#: measurement kind → (menu text, key)
TOOLS: dict[str, tuple[str, str]] = {
    "ruler": ("&Ruler (mm)", "D"),
    "ellipse": ("&Ellipse ROI", "E"),
    "rectangle": ("Rectan&gle ROI", "G"),
    "bidirectional": ("&Long and short axis", "Shift+D"),
}
KIND_NAMES = {"ruler": "Ruler", "ellipse": "Ellipse", "rectangle": "Rectangle",
              "bidirectional": "Long/short axis"}
COLOUR = "#ff66cc"  # apart from the readers' colours, the CAD marks and the box
SELECTED_COLOUR = "#ffffff"
MIN_DRAG_PX = 1.0  # a shorter drag makes no measurement


def short_axis_for(p0: tuple[float, float], p1: tuple[float, float],
                   pixel_mm: tuple[float, float], ratio: float = 0.5
                   ) -> tuple[tuple[float, float], tuple[float, float]]:
    """The ends ``(row, col)`` of a short axis through the middle of the long axis
    ``p0``–``p1``, perpendicular to it in mm and ``ratio`` times as long (pixel size
    ``(row_mm, col_mm)``): where a new long/short-axis measurement starts."""
    sr, sc = pixel_mm
    a = np.array([p0[0] * sr, p0[1] * sc])
    b = np.array([p1[0] * sr, p1[1] * sc])
    mid, d = (a + b) / 2.0, b - a
    perp = np.array([-d[1], d[0]]) * ratio / 2.0
    q0, q1 = (mid - perp) / (sr, sc), (mid + perp) / (sr, sc)
    return (float(q0[0]), float(q0[1])), (float(q1[0]), float(q1[1]))


def _point(row: float, col: float) -> tuple[float, float]:
    """A (row, col) point from the mouse, rounded to 1/10000 pixel (the scene transforms
    leave 20 as 19.999999999999996, which would drop a pixel column from a ROI)."""
    return (round(float(row), 4), round(float(col), 4))


class _EllipseROI(pg.EllipseROI):
    """An axis-aligned ellipse with scale handles on two opposite corners (no rotation)."""

    def _addHandles(self):
        self.addScaleHandle([1, 1], [0, 0])
        self.addScaleHandle([0, 0], [1, 1])


class _RectROI(pg.ROI):
    def __init__(self, pos, size, **kw) -> None:
        super().__init__(pos, size, **kw)
        self.addScaleHandle([1, 1], [0, 0])
        self.addScaleHandle([0, 0], [1, 1])


class MeasurementPanel(QWidget):
    """The list of a study's measurements (the one copy of them the views draw).

    ``measurementsChanged(list)`` is emitted once a user edit is complete (a measurement
    drawn, moved, deleted) with the whole list, for saving; :meth:`set_measurements` puts a
    saved list back without emitting it."""

    measurementsChanged = Signal(list)
    measurementSelected = Signal(object)  # chosen in the list: the views show it
    listChanged = Signal()  # any change, drags included (the views redraw)
    selectionChanged = Signal(str)  # id, '' for none

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.hu: np.ndarray | None = None
        self.spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
        self._items: list[Measurement] = []
        self.selected_id = ""
        self._results: dict[tuple, MeasurementResult | None] = {}
        self.hint = QLabel("Draw with D (ruler), E (ellipse), G (rectangle) or Shift+D (long "
                           "and short axis) in any view; drag a shape or its handles to move "
                           "it; Del deletes the selected one.")
        self.hint.setWordWrap(True)
        self.list = QListWidget()
        self.list.currentRowChanged.connect(self._row_changed)
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        self.delete_button.setEnabled(False)
        lay = QVBoxLayout(self)
        lay.addWidget(self.hint)
        lay.addWidget(self.list, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.delete_button)
        lay.addLayout(row)

    # -- data ---------------------------------------------------------------------------------
    def set_volume(self, volume) -> None:
        """A new study: its HU and spacing for the figures; the list is emptied."""
        self.hu = None if volume is None else volume.hu
        self.spacing = (1.0, 1.0, 1.0) if volume is None else tuple(volume.spacing)
        self._results.clear()
        self._items = []
        self.selected_id = ""
        self._refresh_list()

    def measurements(self) -> list[Measurement]:
        return list(self._items)

    def set_measurements(self, items: list[Measurement]) -> None:
        """Show a saved list (no ``measurementsChanged``); ones off the volume are dropped
        with a warning in the log."""
        keep = []
        for m in items:
            if self.hu is not None and not 0 <= m.index < planes.plane_count(self.hu.shape,
                                                                               m.plane):
                log.warning("measurement on %s image %d is outside this series: dropped",
                            m.plane, m.index)
                continue
            keep.append(m)
        self._items = keep
        if self.selected_id not in {m.id for m in keep}:
            self.selected_id = ""
        self._refresh_list()

    def get(self, mid: str) -> Measurement | None:
        return next((m for m in self._items if m.id == mid), None)

    def add(self, m: Measurement, emit: bool = True) -> Measurement:
        self._items.append(m)
        self.selected_id = m.id
        self._refresh_list()
        if emit:
            self.measurementsChanged.emit(self.measurements())
        return m

    def update(self, m: Measurement, emit: bool = True) -> None:
        """Replace the measurement with ``m``'s id by ``m``."""
        for i, old in enumerate(self._items):
            if old.id == m.id:
                self._items[i] = m
                break
        else:
            return
        self._refresh_list()
        if emit:
            self.measurementsChanged.emit(self.measurements())

    def remove(self, mid: str, emit: bool = True) -> None:
        n = len(self._items)
        self._items = [m for m in self._items if m.id != mid]
        if len(self._items) == n:
            return
        if self.selected_id == mid:
            self.selected_id = ""
        self._refresh_list()
        if emit:
            self.measurementsChanged.emit(self.measurements())

    def delete_selected(self) -> None:
        if self.selected_id:
            self.remove(self.selected_id)

    def select(self, mid: str) -> None:
        if mid == self.selected_id:
            return
        self.selected_id = mid if self.get(mid) is not None else ""
        self._sync_current_row()
        self.delete_button.setEnabled(bool(self.selected_id))
        self.selectionChanged.emit(self.selected_id)

    def result(self, m: Measurement) -> MeasurementResult | None:
        """The figures of ``m`` (cached by its geometry); None without a volume."""
        if self.hu is None:
            return None
        key = (m.kind, m.plane, m.index, tuple(m.points))
        if key not in self._results:
            try:
                self._results[key] = measure(m, self.hu, self.spacing)
            except ValueError as exc:
                log.warning("cannot measure: %s", exc)
                self._results[key] = None
            if len(self._results) > 512:
                self._results.pop(next(iter(self._results)))
        return self._results[key]

    def text(self, m: Measurement) -> str:
        res = self.result(m)
        return res.text() if res is not None else ""

    def describe(self, m: Measurement, number: int) -> str:
        name = m.label or KIND_NAMES[m.kind]
        return f"{number}. {name} — {m.plane} image {m.index + 1}: {self.text(m)}"

    # -- list ---------------------------------------------------------------------------------
    def _refresh_list(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for i, m in enumerate(self._items):
            it = QListWidgetItem(self.describe(m, i + 1))
            it.setData(Qt.ItemDataRole.UserRole, m.id)
            self.list.addItem(it)
        self.list.blockSignals(False)
        self._sync_current_row()
        self.delete_button.setEnabled(bool(self.selected_id))
        self.listChanged.emit()

    def _sync_current_row(self) -> None:
        row = next((i for i, m in enumerate(self._items) if m.id == self.selected_id), -1)
        self.list.blockSignals(True)
        self.list.setCurrentRow(row)
        self.list.blockSignals(False)

    def _row_changed(self, row: int) -> None:
        if 0 <= row < len(self._items):
            self.select(self._items[row].id)

    def _activated(self, item: QListWidgetItem) -> None:
        m = self.get(item.data(Qt.ItemDataRole.UserRole))
        if m is not None:
            self.select(m.id)
            self.measurementSelected.emit(m)

    def keyPressEvent(self, ev):
        if ev.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.delete_selected()
        else:
            super().keyPressEvent(ev)


class _Drawn:
    """The graphics items of one measurement in one view (kept and reused for another
    measurement of the same kind when the image changes: pyqtgraph ROIs are costly to
    make)."""

    def __init__(self, kind: str, rois: list[pg.ROI], label: pg.TextItem) -> None:
        self.kind = kind
        self.m: Measurement | None = None
        self.rois = rois
        self.label = label
        self.colour = ""


class MeasureLayer(QObject):
    """Draws the panel's measurements that lie on a view's current image, turns ROI edits
    into measurement updates, and draws new ones while a tool is active."""

    def __init__(self, view, panel: MeasurementPanel) -> None:
        super().__init__(view)
        self.view = view
        self.panel = panel
        self.tool: str | None = None
        self.drawn: dict[str, _Drawn] = {}
        self._pool: dict[str, list[_Drawn]] = {}  # hidden shapes to reuse, by kind
        self._new: Measurement | None = None
        self._editing = ""  # id of the measurement whose ROI is being dragged
        view.sliceChanged.connect(lambda _k: self.refresh())
        panel.listChanged.connect(self.refresh)
        panel.selectionChanged.connect(lambda _id: self._restyle())

    # -- tool -----------------------------------------------------------------------------------
    def set_tool(self, kind: str | None) -> None:
        self.tool = kind
        self.view.tool_drag = self._drag if kind is not None else None
        self.view.graphics.setCursor(Qt.CursorShape.CrossCursor if kind is not None
                                     else Qt.CursorShape.ArrowCursor)

    def _drag(self, start_vc: tuple[float, float], now_vc: tuple[float, float],
              is_start: bool, is_finish: bool) -> None:
        """A left drag with a tool active; positions are view (row, col) coordinates."""
        if self.view.volume is None or self.tool is None:
            return
        p0 = _point(start_vc[0] - 0.5, start_vc[1] - 0.5)
        p1 = _point(now_vc[0] - 0.5, now_vc[1] - 0.5)
        pts = self._points_for(self.tool, p0, p1)
        if self._new is None or is_start:
            self._new = self.panel.add(
                Measurement(self.tool, self.view.plane, self.view.index, pts), emit=False)
            self.panel.select(self._new.id)
        else:
            self._new = Measurement(self._new.kind, self._new.plane, self._new.index, pts,
                                    self._new.id, self._new.label)
            self.panel.update(self._new, emit=False)
        if is_finish:
            m, self._new = self._new, None
            if math.hypot(p1[0] - p0[0], p1[1] - p0[1]) < MIN_DRAG_PX:
                self.panel.remove(m.id, emit=False)
            else:
                self.panel.measurementsChanged.emit(self.panel.measurements())

    def _points_for(self, kind: str, p0, p1) -> list[tuple[float, float]]:
        if kind == "bidirectional":
            q0, q1 = short_axis_for(p0, p1, self.view.pixel_mm)
            return [p0, p1, q0, q1]
        return [p0, p1]

    # -- drawing ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        v = self.view
        want = {} if v.volume is None else {
            m.id: m for m in self.panel.measurements()
            if m.plane == v.plane and m.index == v.index}
        for mid in list(self.drawn):
            d = self.drawn[mid]
            m = want.get(mid)
            if m is None or m.kind != d.kind:
                self._release(self.drawn.pop(mid))
            elif mid != self._editing and m.points != d.m.points:
                self._place(d, m)
            else:
                d.m = m
        for mid, m in want.items():
            if mid not in self.drawn:
                pool = self._pool.setdefault(m.kind, [])
                d = pool.pop() if pool else self._create(m.kind)
                self._place(d, m)
                self.drawn[mid] = d
            self._place_label(self.drawn[mid])
        self._restyle()

    def _release(self, d: _Drawn) -> None:
        for item in (*d.rois, d.label):
            item.hide()
        d.m = None
        self._pool.setdefault(d.kind, []).append(d)

    def _place(self, d: _Drawn, m: Measurement) -> None:
        """Put ``d``'s shapes on ``m``'s points (no edit signals)."""
        d.m = m
        vc = [QPointF(c + 0.5, r + 0.5) for r, c in m.points]  # view (x, y)
        for roi in d.rois:
            roi.blockSignals(True)
        try:
            if d.kind in ("ruler", "bidirectional"):
                for i, roi in enumerate(d.rois):
                    roi.setPos(QPointF(0, 0), update=False, finish=False)
                    for h, p in zip(roi.getHandles(), vc[2 * i:2 * i + 2]):
                        roi.movePoint(h, p, finish=False)
            else:
                (x0, y0), (x1, y1) = ((p.x(), p.y()) for p in vc)
                roi = d.rois[0]
                roi.setPos(QPointF(min(x0, x1), min(y0, y1)), update=False, finish=False)
                roi.setSize(QPointF(abs(x1 - x0), abs(y1 - y0)), finish=False)
        finally:
            for roi in d.rois:
                roi.blockSignals(False)
        for item in (*d.rois, d.label):
            item.show()

    def _create(self, kind: str) -> _Drawn:
        pen = pg.mkPen(COLOUR, width=2)
        hover = pg.mkPen(SELECTED_COLOUR, width=3)
        if kind in ("ruler", "bidirectional"):
            rois = [pg.LineSegmentROI([(0, 0), (1, 1)], pen=pen, hoverPen=hover)]
            if kind == "bidirectional":
                rois.append(pg.LineSegmentROI(
                    [(0, 0), (1, 1)], hoverPen=hover,
                    pen=pg.mkPen(COLOUR, width=2, style=Qt.PenStyle.DashLine)))
        else:
            cls = _EllipseROI if kind == "ellipse" else _RectROI
            rois = [cls([0, 0], [1, 1], pen=pen, hoverPen=hover)]
        label = pg.TextItem("", color=COLOUR, anchor=(0, 1))
        label.setZValue(31)
        d = _Drawn(kind, rois, label)
        for roi in rois:
            roi.setZValue(30)
            roi.setAcceptedMouseButtons(Qt.MouseButton.LeftButton)
            roi.sigClicked.connect(lambda *_a, d=d: d.m and self.panel.select(d.m.id))
            roi.sigRegionChangeStarted.connect(
                lambda *_a, d=d: d.m and self._edit_started(d.m.id))
            roi.sigRegionChangeFinished.connect(lambda *_a, d=d: d.m and self._edited(d.m.id))
            self.view.view.addItem(roi)
        self.view.view.addItem(label)
        return d

    def _restyle(self) -> None:
        for mid, d in self.drawn.items():
            colour = SELECTED_COLOUR if mid == self.panel.selected_id else COLOUR
            if colour == d.colour:
                continue
            d.colour = colour
            for i, roi in enumerate(d.rois):
                style = Qt.PenStyle.DashLine if i == 1 else Qt.PenStyle.SolidLine
                roi.setPen(pg.mkPen(colour, width=2.5 if colour == SELECTED_COLOUR else 2,
                                    style=style))
            d.label.setColor(colour)

    def _place_label(self, d: _Drawn) -> None:
        pts = np.asarray(d.m.points, dtype=float)
        d.label.setText(self.panel.text(d.m))
        # beside the shape's right end, at its upper edge on screen
        row = pts[:, 0].max() if self.view.rows_up else pts[:, 0].min()
        d.label.setPos(pts[:, 1].max() + 1.5, row + 0.5)

    # -- edits ------------------------------------------------------------------------------------
    def points_of(self, d: _Drawn) -> list[tuple[float, float]]:
        """The (row, col) points of a drawn measurement as its ROIs now stand."""
        pts: list[tuple[float, float]] = []
        if d.m.kind in ("ruler", "bidirectional"):
            for roi in d.rois:
                for h in roi.getHandles():
                    p = roi.mapToParent(h.pos())
                    pts.append(_point(p.y() - 0.5, p.x() - 0.5))
            return pts
        roi = d.rois[0]
        (x, y), (w, h) = roi.pos(), roi.size()
        return [_point(y - 0.5, x - 0.5), _point(y + h - 0.5, x + w - 0.5)]

    def _edit_started(self, mid: str) -> None:
        self._editing = mid
        self.panel.select(mid)

    def _edited(self, mid: str) -> None:
        d = self.drawn.get(mid)
        self._editing = ""
        if d is None:
            return
        pts = self.points_of(d)
        if np.allclose(pts, d.m.points):
            return
        m = Measurement(d.m.kind, d.m.plane, d.m.index, pts, d.m.id, d.m.label)
        d.m = m
        self.panel.update(m)

    def move_handle(self, mid: str, roi_index: int, handle_index: int,
                    row: float, col: float) -> None:
        """Drag handle ``handle_index`` of ROI ``roi_index`` of a drawn measurement to the
        (row, col) point, as the mouse does (for scripts and tests)."""
        d = self.drawn[mid]
        roi = d.rois[roi_index]
        h = roi.getHandles()[handle_index]
        self._edit_started(mid)
        roi.movePoint(h, QPointF(col + 0.5, row + 0.5), finish=False)
        roi.stateChangeFinished()
        self._edited(mid)

    def translate(self, mid: str, drow: float, dcol: float) -> None:
        """Move a drawn measurement by (drow, dcol) pixels, as dragging its shape does."""
        d = self.drawn[mid]
        self._edit_started(mid)
        for roi in d.rois:
            roi.translate([dcol, drow], finish=False)
        self._edited(mid)
