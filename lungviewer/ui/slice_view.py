"""The slice view: one axial slice of a Volume in a pyqtgraph ViewBox, with overlays.

Mouse: wheel = next/previous slice, Ctrl+wheel = zoom, left drag = pan (or draw the CAD
box in box mode), right drag = window/level. Keys are handled by the main window.
Coordinates inside the view are pixel indices: x = column, y = row (row 0 at the top).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QCursor, QFont
from PySide6.QtWidgets import QLabel, QToolTip, QVBoxLayout, QWidget

from lungviewer.imaging.overlay import mask_rgba, polygon_hit
from lungviewer.imaging.window import PRESETS
from lungviewer.study.volume import Volume

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)


@dataclass
class Polygon:
    """An outline to draw on one slice: points ``(n, 2)`` as (row, col)."""

    slice_index: int
    points_rc: np.ndarray
    color: str
    dashed: bool = False
    closed: bool = True
    group: str = ""  # overlay layer name (for toggles)
    width: float = 1.5
    info: str = ""  # shown when the cursor is on the outline or inside it (first line too
    # in the status bar)


@dataclass
class Marker:
    """A point mark (small nodule, non-nodule) on one slice."""

    slice_index: int
    row: float
    col: float
    color: str
    symbol: str = "+"
    group: str = ""
    size: float = 12


class _ViewBox(pg.ViewBox):
    def __init__(self, owner: "SliceView") -> None:
        super().__init__(invertY=True, lockAspect=True, enableMenu=False)
        self._owner = owner

    def wheelEvent(self, ev, axis=None):  # noqa: N802 (Qt naming)
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
        else:
            self._owner.step(1 if ev.delta() > 0 else -1)
            ev.accept()

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            self._owner._window_drag(ev)
        elif ev.button() == Qt.MouseButton.LeftButton and self._owner.box_mode:
            ev.accept()
            self._owner._box_drag(ev)
        else:
            super().mouseDragEvent(ev, axis)


class SliceView(QWidget):
    """Shows ``volume.hu[k]`` with the current window; emits what the user does."""

    sliceChanged = Signal(int)
    windowChanged = Signal(float, float)  # level, width
    hoverInfo = Signal(str)  # HU and position under the cursor ('' when outside)
    boxChanged = Signal(int, int, int, int, int)  # slice, row0, col0, row1, col1

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.volume: Volume | None = None
        self.index = 0
        self.level, self.width = PRESETS["lung"].level, PRESETS["lung"].width
        self.box_mode = False
        self.box: tuple[int, int, int, int, int] | None = None
        self._mask: np.ndarray | None = None
        self._polygons: list[Polygon] = []
        self._markers: list[Marker] = []
        self._hidden_groups: set[str] = set()
        self._overlay_items: list[pg.GraphicsObject] = []
        self._drag_start: tuple[float, float] | None = None
        self._last_hover: tuple[float, float] | None = None
        self.tooltip_text = ""  # the outline description under the cursor

        self.graphics = pg.GraphicsView(background="k")
        self.view = _ViewBox(self)
        self.graphics.setCentralItem(self.view)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image)
        self.mask_item = pg.ImageItem(axisOrder="row-major")
        self.mask_opacity = 0.3  # of the fill; the outline is drawn opaque
        self.mask_item.setZValue(5)
        self.view.addItem(self.mask_item)
        self.roi: pg.RectROI | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.graphics)
        self.graphics.scene().sigMouseMoved.connect(self._mouse_moved)
        # corner texts and orientation letters, drawn over the image
        font = QFont()
        font.setPointSize(10)
        self._labels: dict[str, QLabel] = {}
        for name in ("tl", "tr", "bl", "br", "left", "right", "top", "bottom", "banner"):
            lab = QLabel(self.graphics)
            lab.setFont(font)
            lab.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            lab.setStyleSheet("color: #e8e8a0; background: transparent;")
            self._labels[name] = lab
        self._labels["banner"].setStyleSheet(
            "color: white; background: rgba(170, 20, 20, 200); padding: 2px 8px; "
            "font-weight: bold;")
        self._labels["banner"].hide()
        self.setMinimumSize(320, 320)

    # -- data -------------------------------------------------------------------------------
    def set_volume(self, volume: Volume, index: int | None = None) -> None:
        self.volume = volume
        self._mask = None
        self._polygons, self._markers = [], []
        self.clear_box()
        dy, dx = volume.spacing[1], volume.spacing[2]
        self.view.setAspectLocked(True, ratio=dx / dy)
        self.index = -1
        self.set_slice(volume.n_slices // 2 if index is None else index)
        self.view.autoRange(padding=0.0)
        labels = volume.orientation_labels()
        for side in ("left", "right", "top", "bottom"):
            self._labels[side].setText(labels[side])
        banner = self._labels["banner"]
        banner.setText("SYNTHETIC IMAGE — not a patient, not for clinical use")
        banner.setVisible(volume.is_synthetic)
        self._place_labels()

    def set_mask(self, mask: np.ndarray | None) -> None:
        """A boolean ``(z, y, x)`` overlay (the lung parenchyma), drawn in translucent green."""
        self._mask = mask
        self._update_mask()

    def set_mask_visible(self, visible: bool) -> None:
        self.mask_item.setVisible(visible)

    def set_mask_opacity(self, opacity: float) -> None:
        """Opacity (0…1) of the parenchyma fill."""
        self.mask_opacity = float(np.clip(opacity, 0.0, 1.0))
        self._update_mask()

    def set_polygons(self, polygons: list[Polygon], markers: list[Marker] = ()) -> None:
        self._polygons = list(polygons)
        self._markers = list(markers)
        self._update_overlays()

    def set_group_visible(self, group: str, visible: bool) -> None:
        (self._hidden_groups.discard if visible else self._hidden_groups.add)(group)
        self._update_overlays()

    # -- navigation ------------------------------------------------------------------------
    def set_slice(self, index: int) -> None:
        if self.volume is None:
            return
        index = int(np.clip(index, 0, self.volume.n_slices - 1))
        if index == self.index:
            return
        self.index = index
        self.image.setImage(self.volume.hu[index], autoLevels=False,
                            levels=(self.level - self.width / 2, self.level + self.width / 2))
        self._update_mask()
        self._update_overlays()
        self._update_box_visibility()
        self._update_texts()
        if self._last_hover is not None:
            self._report_hover(*self._last_hover)
        self.sliceChanged.emit(index)

    def step(self, delta: int) -> None:
        self.set_slice(self.index + delta)

    def set_window(self, level: float, width: float) -> None:
        self.level, self.width = float(level), float(max(1.0, width))
        self.image.setLevels((self.level - self.width / 2, self.level + self.width / 2))
        self._update_texts()
        self.windowChanged.emit(self.level, self.width)

    def reset_zoom(self) -> None:
        self.view.autoRange(padding=0.0)

    def centre_on(self, row: float, col: float) -> None:
        """Pan (keeping the zoom) so that pixel ``(row, col)`` is in the middle of the view."""
        if not (np.isfinite(row) and np.isfinite(col)):
            return
        (x0, x1), (y0, y1) = self.view.viewRange()
        self.view.translateBy(x=col + 0.5 - (x0 + x1) / 2, y=row + 0.5 - (y0 + y1) / 2)

    # -- box ---------------------------------------------------------------------------------
    def set_box_mode(self, on: bool) -> None:
        self.box_mode = on
        self.graphics.setCursor(Qt.CursorShape.CrossCursor if on else Qt.CursorShape.ArrowCursor)

    def set_box(self, slice_index: int, row0: int, col0: int, row1: int, col1: int,
                emit: bool = True) -> None:
        """Place the CAD box (pixel indices, end exclusive) on a slice."""
        if self.volume is None:
            return
        h, w = self.volume.shape[1:]
        row0, row1 = sorted((int(np.clip(row0, 0, h)), int(np.clip(row1, 0, h))))
        col0, col1 = sorted((int(np.clip(col0, 0, w)), int(np.clip(col1, 0, w))))
        if row1 - row0 < 2 or col1 - col0 < 2:
            return
        if self.roi is None:
            self.roi = pg.RectROI([col0, row0], [col1 - col0, row1 - row0],
                                  pen=pg.mkPen("#ffcc00", width=2), translateSnap=True,
                                  scaleSnap=True, snapSize=1.0, movable=True)
            self.roi.setZValue(20)
            self.roi.sigRegionChangeFinished.connect(self._roi_moved)
            self.view.addItem(self.roi)
        else:
            self.roi.blockSignals(True)
            self.roi.setPos([col0, row0])
            self.roi.setSize([col1 - col0, row1 - row0])
            self.roi.blockSignals(False)
        self.box = (int(slice_index), row0, col0, row1, col1)
        if slice_index != self.index:
            self.set_slice(slice_index)
        self._update_box_visibility()
        if emit:
            self.boxChanged.emit(*self.box)

    def clear_box(self) -> None:
        if self.roi is not None:
            self.view.removeItem(self.roi)
            self.roi = None
        self.box = None

    def _roi_moved(self) -> None:
        if self.roi is None or self.box is None:
            return
        x, y = self.roi.pos()
        w, h = self.roi.size()
        self.set_box(self.index, int(round(y)), int(round(x)), int(round(y + h)),
                     int(round(x + w)))

    def _box_drag(self, ev) -> None:
        p0 = self.view.mapSceneToView(ev.buttonDownScenePos())
        p1 = self.view.mapSceneToView(ev.scenePos())
        if ev.isFinish():
            self.set_box(self.index, int(np.floor(min(p0.y(), p1.y()))),
                         int(np.floor(min(p0.x(), p1.x()))), int(np.ceil(max(p0.y(), p1.y()))),
                         int(np.ceil(max(p0.x(), p1.x()))))
        elif self.roi is not None or abs(p1.x() - p0.x()) > 1:
            self.set_box(self.index, int(min(p0.y(), p1.y())), int(min(p0.x(), p1.x())),
                         int(max(p0.y(), p1.y())) + 1, int(max(p0.x(), p1.x())) + 1, emit=False)

    def _update_box_visibility(self) -> None:
        if self.roi is not None and self.box is not None:
            self.roi.setVisible(self.box[0] == self.index)

    # -- window/level drag -----------------------------------------------------------------
    def _window_drag(self, ev) -> None:
        if ev.isStart():
            self._drag_start = (self.level, self.width)
            return
        if self._drag_start is None:
            return
        d = ev.screenPos() - ev.buttonDownScreenPos()
        level0, width0 = self._drag_start
        self.set_window(level0 + 2.0 * d.y(), width0 + 4.0 * d.x())
        if ev.isFinish():
            self._drag_start = None

    # -- hover ---------------------------------------------------------------------------------
    def _mouse_moved(self, pos: QPointF) -> None:
        if self.volume is None or not self.view.sceneBoundingRect().contains(pos):
            return
        p = self.view.mapSceneToView(pos)
        self._last_hover = (p.y(), p.x())
        self._report_hover(p.y(), p.x())

    def _report_hover(self, row_f: float, col_f: float) -> None:
        self.hoverInfo.emit(self.hover_text(row_f, col_f))
        poly = self.polygon_at(row_f, col_f)
        tip = poly.info if poly is not None else ""
        if tip != self.tooltip_text:
            self.tooltip_text = tip
            if tip:
                QToolTip.showText(QCursor.pos(), tip, self.graphics)
            else:
                QToolTip.hideText()

    def polygon_at(self, row_f: float, col_f: float, tolerance: float = 2.0) -> Polygon | None:
        """The shown outline with a description nearest to the point among those it lies
        inside or within ``tolerance`` pixels of (vertices are pixel centres)."""
        best, best_d = None, float("inf")
        for p in self._polygons:
            if (p.slice_index != self.index or not p.info
                    or p.group in self._hidden_groups):
                continue
            inside, d = polygon_hit(p.points_rc, row_f - 0.5, col_f - 0.5)
            if (inside or d <= tolerance) and d < best_d:
                best, best_d = p, d
        return best

    def hover_text(self, row_f: float, col_f: float) -> str:
        """'HU … at (row, col) · x, y, z mm' for a point of the view, '' outside the image."""
        vol = self.volume
        if vol is None:
            return ""
        row, col = int(np.floor(row_f)), int(np.floor(col_f))
        if not (0 <= row < vol.shape[1] and 0 <= col < vol.shape[2]):
            return ""
        hu = int(vol.hu[self.index, row, col])
        x, y, z = vol.pixel_to_patient(self.index, row, col)
        text = (f"HU {hu:+d}   pixel (row {row}, col {col})   "
                f"x {x:.1f}  y {y:.1f}  z {z:.1f} mm")
        poly = self.polygon_at(row_f, col_f)
        if poly is not None:
            text += "   ·   " + ": ".join(poly.info.splitlines()[:2])
        return text

    # -- drawing -------------------------------------------------------------------------------
    def _update_mask(self) -> None:
        if self._mask is None or self.volume is None or self._mask.shape != self.volume.shape:
            self.mask_item.clear()
            return
        rgba = mask_rgba(self._mask[self.index], (40, 220, 90), self.mask_opacity,
                         max(0.8, self.mask_opacity))
        self.mask_item.setImage(rgba, autoLevels=False, levels=(0, 255))

    def _update_overlays(self) -> None:
        for item in self._overlay_items:
            self.view.removeItem(item)
        self._overlay_items = []
        for p in self._polygons:
            if p.slice_index != self.index or p.group in self._hidden_groups:
                continue
            pts = p.points_rc
            if p.closed and len(pts) > 2:
                pts = np.vstack([pts, pts[:1]])
            style = Qt.PenStyle.DashLine if p.dashed else Qt.PenStyle.SolidLine
            # +0.5: polygon vertices are pixel centres
            item = pg.PlotCurveItem(pts[:, 1] + 0.5, pts[:, 0] + 0.5,
                                    pen=pg.mkPen(QColor(p.color), width=p.width, style=style))
            item.setZValue(10)
            self.view.addItem(item)
            self._overlay_items.append(item)
        marks = [m for m in self._markers
                 if m.slice_index == self.index and m.group not in self._hidden_groups]
        if marks:
            item = pg.ScatterPlotItem(
                [m.col + 0.5 for m in marks], [m.row + 0.5 for m in marks],
                symbol=[m.symbol for m in marks], size=[m.size for m in marks],
                pen=[pg.mkPen(m.color, width=2) for m in marks], brush=None)
            item.setZValue(11)
            self.view.addItem(item)
            self._overlay_items.append(item)

    def _update_texts(self) -> None:
        vol = self.volume
        if vol is None:
            return
        z = vol.z_positions[self.index]
        self._labels["tl"].setText(
            f"Image {self.index + 1} / {vol.n_slices}  (index {self.index})\n"
            f"z {z:.1f} mm   slice {vol.spacing[0]:.2f} mm")
        preset = next((p.name for p in PRESETS.values()
                       if p.level == self.level and p.width == self.width), "custom")
        self._labels["tr"].setText(f"W {self.width:.0f}  L {self.level:.0f}  ({preset})")
        self._labels["bl"].setText(vol.description or "")
        for lab in self._labels.values():
            lab.adjustSize()
        self._place_labels()

    def _place_labels(self) -> None:
        w, h = self.graphics.width(), self.graphics.height()
        lab = self._labels
        for lb in lab.values():
            lb.adjustSize()
        lab["tl"].move(8, 6)
        lab["tr"].move(w - lab["tr"].width() - 8, 6)
        lab["bl"].move(8, h - lab["bl"].height() - 6)
        lab["banner"].move((w - lab["banner"].width()) // 2, lab["tl"].height() + 10)
        lab["left"].move(6, h // 2)
        lab["right"].move(w - lab["right"].width() - 6, h // 2)
        lab["top"].move(w // 2, lab["tl"].height() + 36)
        lab["bottom"].move(w // 2, h - lab["bottom"].height() - 6)

    def resizeEvent(self, ev):  # noqa: N802
        super().resizeEvent(ev)
        self._place_labels()

    def visible_rect(self) -> QRectF:
        return self.view.viewRect()
