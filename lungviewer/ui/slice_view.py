"""The slice view: one image of a Volume on one plane (axial, coronal or sagittal) in a
pyqtgraph ViewBox, with overlays.

Mouse: wheel = next/previous image, Ctrl+wheel = zoom, left drag = pan (or draw the CAD
box in box mode, or a measurement with a measurement tool), left click = move the linked
crosshair there, right drag = window/level. Keys are handled by the main window.

Coordinates inside the view are the plane image's pixel indices (x = column, y = row; see
:mod:`lungviewer.imaging.planes` for what rows and columns are on each plane). Axial images
have row 0 at the top; coronal and sagittal ones are shown head up. The aspect ratio comes
from the pixel size in mm (the ViewBox scales x and y so that 1 mm is as long on screen in
both directions). The image can be a thick slab (MIP, MinIP or average) instead of one
image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QCursor, QFont
from PySide6.QtWidgets import QLabel, QToolTip, QVBoxLayout, QWidget

from lungviewer.imaging import planes
from lungviewer.imaging.overlay import mask_rgba, polygon_hit
from lungviewer.imaging.window import PRESETS
from lungviewer.study.volume import Volume

SLAB_MM_RANGE = (2.0, 40.0)
SLAB_NAMES = {"mip": "MIP", "minip": "MinIP", "avg": "Average"}
#: colours of CAD marks by finding status (anything else: the first)
MARK_COLOURS = {"proposed": "#ff9f1a", "unreviewed": "#ff9f1a", "accepted": "#3ddc84",
                "rejected": "#8a8a8a"}
CROSSHAIR_COLOUR = "#40c8ff"
BANNER = "SYNTHETIC IMAGE — not a patient, not for clinical use"
BANNER_SHORT = "SYNTHETIC IMAGE"
NARROW_PX = 360  # views narrower than this show short corner texts
SEGMENTATION_COLOUR = "#00ffd0"

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


@dataclass
class Mark:
    """A CAD finding: volume position (z, y, x) in voxels, diameter in mm, status
    (unreviewed / accepted / rejected) and, when measured, ``extent`` — the voxel box
    ``(z0, z1, y0, y1, x0, x1)`` (end-exclusive) its own segmentation covers. Drawn as an
    ellipse around the extent on the images it covers, else where its sphere meets the
    image."""

    z: float
    y: float
    x: float
    diameter_mm: float
    status: str = "unreviewed"
    extent: tuple[int, int, int, int, int, int] | None = None


def slab_text(mode: str, n_images: int, step_mm: float) -> str:
    """What a slab covers, in one figure: ``MIP slab 12.5 mm (5 images × 2.5 mm)`` — the
    thickness shown, not the one asked for (whole images: 10 mm of 2.5 mm images centred
    on one is 5 images)."""
    return (f"{SLAB_NAMES[mode]} slab {n_images * step_mm:.1f} mm "
            f"({n_images} images × {step_mm:.3g} mm)")


class _ViewBox(pg.ViewBox):
    def __init__(self, owner: SliceView) -> None:
        super().__init__(invertY=True, lockAspect=True, enableMenu=False)
        self._owner = owner

    def wheelEvent(self, ev, axis=None):
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
        else:
            # wheel up = towards the head on axial images, whatever the slice order
            # (a feet-first series sorted along its normal runs the other way)
            d = 1 if ev.delta() > 0 else -1
            vol = self._owner.volume
            if self._owner.plane == "axial" and vol is not None:
                d *= vol.head_step
            self._owner.step(d)
            self._owner.activated.emit()
            ev.accept()

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._owner._clicked(ev.scenePos())
        else:
            super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev, axis=None):
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            self._owner._window_drag(ev)
        elif ev.button() == Qt.MouseButton.LeftButton and self._owner.box_mode:
            ev.accept()
            self._owner._box_drag(ev)
        elif (ev.button() == Qt.MouseButton.LeftButton
              and self._owner.tool_drag is not None):
            ev.accept()
            p0 = self.mapSceneToView(ev.buttonDownScenePos())
            p1 = self.mapSceneToView(ev.scenePos())
            self._owner.tool_drag((p0.y(), p0.x()), (p1.y(), p1.x()), ev.isStart(),
                                  ev.isFinish())
        else:
            super().mouseDragEvent(ev, axis)


class SliceView(QWidget):
    """Shows image ``index`` of ``volume.hu`` on ``plane`` (axial: ``hu[k]``) with the
    current window; emits what the user does. The CAD box exists on the axial plane only."""

    sliceChanged = Signal(int)
    windowChanged = Signal(float, float)  # level, width
    hoverInfo = Signal(str)  # HU and position under the cursor ('' when outside)
    boxChanged = Signal(int, int, int, int, int)  # slice, row0, col0, row1, col1
    clicked = Signal(int, int, int)  # the voxel (z, y, x) of a left click on the image
    activated = Signal()  # the user scrolled or clicked in this view

    def __init__(self, parent: QWidget | None = None, plane: str = "axial",
                 slab_cache: planes.SlabCache | None = None,
                 outline_store: dict | None = None) -> None:
        super().__init__(parent)
        planes.plane_count((1, 1, 1), plane)  # a clear error for an unknown plane
        self.plane = plane
        self.volume: Volume | None = None
        self.index = 0
        self.slab: tuple[str, float] | None = None  # (mode, thickness mm) or a single image
        self.slab_cache = slab_cache if slab_cache is not None else planes.SlabCache()
        self.tool_drag = None  # callable((row, col) start, (row, col) now, start, finish)
        self.rows_up = False  # image row 0 at the bottom (coronal, sagittal)
        self._outline_crops: dict[tuple, list] | None = None  # other planes' outline cuts
        self._cuts: dict[int, list] = {}  # image index → [(key, polylines)], this study
        # the rasterised outlines, shared by the views of one study (keyed by the polygon
        # list given to set_polygons)
        self.outline_store = outline_store if outline_store is not None else {}
        self._polygons_key = 0
        self.deferred = False  # not shown: overlays are drawn once it is shown again
        self._stale = False
        self._marks: list[Mark] = []
        self._segmentations: list[tuple[tuple[int, int, int], np.ndarray, str]] = []
        self._crosshair: tuple[float, float] | None = None
        self.title = ""  # a first line in the top-left corner text (e.g. "Axial slab")
        self.level, self.width = PRESETS["lung"].level, PRESETS["lung"].width
        self.box_mode = False
        self.box_movable = True
        self.box: tuple[int, int, int, int, int] | None = None
        self._mask: np.ndarray | None = None
        self._polygons: list[Polygon] = []
        self._markers: list[Marker] = []
        self._hidden_groups: set[str] = set()
        self._overlay_items: list[pg.GraphicsObject] = []
        self._mark_items: list = []  # the CAD marks' ellipses (redrawn on their own)
        self._drag_start: tuple[float, float] | None = None
        self._last_hover: tuple[float, float] | None = None
        self.tooltip_text = ""  # the outline description under the cursor

        self.graphics = pg.GraphicsView(background="k")
        self.view = _ViewBox(self)
        self.graphics.setCentralItem(self.view)
        # while the image is fitted (not zoomed or panned by hand) it is fitted again when
        # the view changes size: a layout's cells settle after the first fit, and the
        # aspect lock then cropped the coronal and sagittal images of the 2×2 layout
        self.fitted = True
        self.view.sigRangeChangedManually.connect(self._unfit)
        self.view.sigResized.connect(self._refit)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image)
        self.mask_item = pg.ImageItem(axisOrder="row-major")
        self.mask_opacity = 0.3  # of the fill; the outline is drawn opaque
        self.mask_fill = False  # an outline only (the attenuation stays readable)
        self.mask_item.setZValue(5)
        self.view.addItem(self.mask_item)
        pen = pg.mkPen(CROSSHAIR_COLOUR, width=1, style=Qt.PenStyle.DashLine)
        self.cross_lines = (pg.InfiniteLine(angle=90, movable=False, pen=pen),
                            pg.InfiniteLine(angle=0, movable=False, pen=pen))
        for line in self.cross_lines:
            line.setZValue(8)
            line.hide()
            self.view.addItem(line, ignoreBounds=True)
        self.roi: pg.RectROI | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.graphics)
        self._layout = lay
        self.highlighted = False
        self.graphics.scene().sigMouseMoved.connect(self._mouse_moved)
        # corner texts and orientation letters, drawn over the image
        font = QFont()
        font.setPointSize(10)
        self._labels: dict[str, QLabel] = {}
        for name in ("tl", "tr", "bl", "br", "left", "right", "top", "bottom", "banner"):
            lab = QLabel(self.graphics)
            lab.setFont(font)
            lab.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            lab.setStyleSheet("color: #e8e8a0; background: transparent;" if len(name) > 2
                              else "color: #e8e8a0; background: rgba(0, 0, 0, 110); "
                                   "padding: 1px 3px;")  # corner texts stay readable on bone
            self._labels[name] = lab
        self._labels["banner"].setStyleSheet(
            "color: white; background: rgba(170, 20, 20, 200); padding: 2px 8px; "
            "font-weight: bold;")
        self._labels["banner"].hide()
        for corner in ("tl", "tr", "bl", "br"):  # shown once they have a text
            self._labels[corner].hide()
        self.setMinimumSize(320, 320)

    # -- data -------------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        """How many images the plane has (0 without a volume)."""
        return 0 if self.volume is None else planes.plane_count(self.volume.shape, self.plane)

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """Pixel size (row mm, col mm) of the shown images."""
        if self.volume is None:
            return (1.0, 1.0)
        return planes.plane_spacing(self.volume.spacing, self.plane)

    def set_volume(self, volume: Volume, index: int | None = None) -> None:
        self.volume = volume
        self._mask = None
        self._polygons, self._markers, self._marks = [], [], []
        self._outline_crops = None
        self._cuts = {}
        self._crosshair = None
        self.slab_cache.clear()
        self.clear_box()
        row_mm, col_mm = self.pixel_mm
        labels, self.rows_up = planes.plane_orientation(volume.orientation, self.plane)
        self.view.invertY(not self.rows_up)
        # x and y scales such that a millimetre is as long across as down
        self.view.setAspectLocked(True, ratio=col_mm / row_mm)
        self.index = -1
        n = self.n_images
        self.set_slice(n // 2 if index is None else index)
        self.reset_zoom()
        self._update_crosshair()
        for side in ("left", "right", "top", "bottom"):
            if self._labels[side].text() != labels[side]:
                self._labels[side].setText(labels[side])
                self._labels[side].adjustSize()
        banner = self._labels["banner"]
        if not banner.text():
            banner.setText(BANNER)
            banner.adjustSize()
        banner.setVisible(volume.is_synthetic)
        self._place_labels(adjust=False)  # the corner texts were measured by set_slice

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

    def set_mask_fill(self, on: bool) -> None:
        """Fill the parenchyma (at :attr:`mask_opacity`) or, by default, outline it only."""
        self.mask_fill = bool(on)
        self._update_mask()

    def set_polygons(self, polygons: list[Polygon], markers: list[Marker] = ()) -> None:
        """Outlines and point marks drawn on axial slices; the coronal and sagittal views
        draw where the volume each reader's outlines enclose meets their plane."""
        self._polygons_key = id(polygons)
        self._polygons = list(polygons)
        self._markers = list(markers)
        self._outline_crops = None
        self._cuts = {}
        self._update_overlays()

    def set_marks(self, marks) -> None:
        """CAD findings: :class:`Mark` or ``(z, y, x, diameter_mm, status[, extent])``
        tuples (voxel position; an ellipse around the extent, or a circle on every image
        that cuts the finding's sphere)."""
        marks = [m if isinstance(m, Mark) else Mark(*m) for m in marks]
        if marks == self._marks:
            return  # a verdict elsewhere in the reading: nothing to redraw here
        self._marks = marks
        if self.deferred:
            self._stale = True
        else:
            self._draw_marks()  # only the marks: the outlines stay as they are

    def set_segmentations(self, items) -> None:
        """3-D objects (segmented nodules) outlined on every image they meet: ``(offset,
        mask, colour)`` with ``mask`` a boolean crop ``(z, y, x)`` whose first voxel is the
        volume voxel ``offset``; colour optional."""
        out = []
        for item in items:
            offset, mask, *rest = item
            out.append((tuple(int(v) for v in offset), np.asarray(mask, dtype=bool),
                        rest[0] if rest else SEGMENTATION_COLOUR))
        if len(out) == len(self._segmentations) and all(
                a[0] == b[0] and a[2] == b[2] and a[1].shape == b[1].shape
                and np.array_equal(a[1], b[1]) for a, b in zip(out, self._segmentations)):
            return  # the same nodules (a reading event for something else)
        self._segmentations = out
        self._update_overlays()

    def set_crosshair(self, point: tuple[float, float, float] | None) -> None:
        """Show the linked crosshair at the volume voxel ``(z, y, x)`` (None hides it)."""
        if point is None:
            self._crosshair = None
        else:
            _, row, col = planes.from_volume(self.plane, *point)
            self._crosshair = (row, col)
        self._update_crosshair()

    def set_slab(self, mode: str | None, thickness_mm: float = 10.0) -> None:
        """Show a thick slab (``mip``, ``minip`` or ``avg`` over ``thickness_mm``, clamped to
        2–40 mm, centred on the image) or, with ``mode`` None, single images."""
        if mode is not None and mode not in planes.SLAB_MODES:
            raise ValueError(f"unknown slab mode {mode!r}; one of "
                             f"{', '.join(planes.SLAB_MODES)}")
        slab = None if mode is None else (mode, float(np.clip(thickness_mm, *SLAB_MM_RANGE)))
        if slab == self.slab:
            return
        self.slab = slab
        self._update_image()
        self._update_texts()

    def image_data(self) -> np.ndarray:
        """The 2-D image shown now: the plane's image, or its slab."""
        vol = self.volume
        if self.slab is None:
            return planes.plane_image(vol.hu, self.plane, self.index)
        mode, mm = self.slab
        return self.slab_cache.get(vol.hu, self.plane, self.index, mm, mode, vol.spacing)

    def slab_images(self) -> tuple[int, int] | None:
        """The image indices ``[lo, hi)`` the slab covers (None without a slab)."""
        if self.slab is None or self.volume is None:
            return None
        step = self.volume.spacing[planes.AXIS[self.plane]]
        return planes.slab_range(self.n_images, self.index, self.slab[1], step)

    def set_group_visible(self, group: str, visible: bool) -> None:
        (self._hidden_groups.discard if visible else self._hidden_groups.add)(group)
        self._update_overlays()

    # -- navigation ------------------------------------------------------------------------
    def set_slice(self, index: int) -> None:
        if self.volume is None:
            return
        index = int(np.clip(index, 0, self.n_images - 1))
        if index == self.index:
            return
        self.index = index
        self._update_image()
        self._update_mask()
        self._update_overlays()
        self._update_box_visibility()
        self._update_texts()
        if self._last_hover is not None:
            self._report_hover(*self._last_hover)
        self.sliceChanged.emit(index)

    def step(self, delta: int) -> None:
        self.set_slice(self.index + delta)

    def _update_image(self) -> None:
        if self.volume is None or self.index < 0:
            return
        self.image.setImage(self.image_data(), autoLevels=False,
                            levels=(self.level - self.width / 2, self.level + self.width / 2))

    def set_window(self, level: float, width: float) -> None:
        self.level, self.width = float(level), float(max(1.0, width))
        self.image.setLevels((self.level - self.width / 2, self.level + self.width / 2))
        self._update_texts()
        self.windowChanged.emit(self.level, self.width)

    def reset_zoom(self) -> None:
        self.view.autoRange(padding=0.0)
        self.fitted = True

    def _unfit(self, *_a) -> None:
        self.fitted = False

    def _refit(self, *_a) -> None:
        if self.fitted and self.volume is not None:
            self.view.autoRange(padding=0.0)

    def ensure_visible(self, row: float, col: float, radius_mm: float = 0.0,
                       margin_px: float = 8.0) -> None:
        """Pan (keeping the zoom) by as little as makes pixel ``(row, col)`` and
        ``radius_mm`` around it (plus ``margin_px`` screen pixels) lie in the view; nothing
        moves when they already do."""
        if self.volume is None or not (np.isfinite(row) and np.isfinite(col)):
            return
        (x0, x1), (y0, y1) = self.view.viewRange()
        row_mm, col_mm = self.pixel_mm
        w_px = max(self.view.width(), 1.0)
        h_px = max(self.view.height(), 1.0)
        rx = radius_mm / col_mm + margin_px * (x1 - x0) / w_px
        ry = radius_mm / row_mm + margin_px * (y1 - y0) / h_px
        cx, cy = col + 0.5, row + 0.5
        # a finding larger than the view: centre it
        rx, ry = min(rx, (x1 - x0) / 2), min(ry, (y1 - y0) / 2)
        dx = min(0.0, cx - rx - x0) + max(0.0, cx + rx - x1)
        dy = min(0.0, cy - ry - y0) + max(0.0, cy + ry - y1)
        if dx or dy:
            self.view.translateBy(x=dx, y=dy)
            self.fitted = False

    def centre_on(self, row: float, col: float) -> None:
        """Pan (keeping the zoom) so that pixel ``(row, col)`` is in the middle of the view."""
        if not (np.isfinite(row) and np.isfinite(col)):
            return
        (x0, x1), (y0, y1) = self.view.viewRange()
        self.view.translateBy(x=col + 0.5 - (x0 + x1) / 2, y=row + 0.5 - (y0 + y1) / 2)
        self.fitted = False

    # -- box ---------------------------------------------------------------------------------
    def set_box_movable(self, on: bool) -> None:
        """Whether a left drag on the CAD box moves or resizes it (not while a measurement
        tool is active: tools are modal)."""
        self.box_movable = bool(on)
        if self.roi is not None:
            self._apply_box_movable()

    def _apply_box_movable(self) -> None:
        buttons = (Qt.MouseButton.LeftButton if self.box_movable
                   else Qt.MouseButton.NoButton)
        self.roi.translatable = self.box_movable
        self.roi.setAcceptedMouseButtons(buttons)
        self.roi.setAcceptHoverEvents(self.box_movable)
        for h in self.roi.getHandles():
            h.setAcceptedMouseButtons(buttons)
            h.setAcceptHoverEvents(self.box_movable)

    def set_box_mode(self, on: bool) -> None:
        on = bool(on) and self.plane == "axial"
        self.box_mode = on
        self.graphics.setCursor(Qt.CursorShape.CrossCursor if on else Qt.CursorShape.ArrowCursor)

    def set_box(self, slice_index: int, row0: int, col0: int, row1: int, col1: int,
                emit: bool = True) -> None:
        """Place the CAD box (pixel indices, end exclusive) on an axial slice."""
        if self.volume is None or self.plane != "axial":
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
            self._apply_box_movable()
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
        self.set_box(self.index, round(y), round(x), round(y + h),
                     round(x + w))

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
    def _clicked(self, scene_pos: QPointF) -> None:
        self.activated.emit()
        if self.volume is None:
            return
        p = self.view.mapSceneToView(scene_pos)
        row, col = int(np.floor(p.y())), int(np.floor(p.x()))
        h, w = planes.plane_image(self.volume.hu, self.plane, 0).shape
        if 0 <= row < h and 0 <= col < w:
            z, y, x = planes.to_volume(self.plane, self.index, row, col)
            self.clicked.emit(int(z), int(y), int(x))

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
        if self.plane != "axial":
            return None
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
        h, w = planes.plane_image(vol.hu, self.plane, 0).shape
        if not (0 <= row < h and 0 <= col < w):
            return ""
        k, r, c = (int(v) for v in planes.to_volume(self.plane, self.index, row, col))
        hu = int(vol.hu[k, r, c])
        x, y, z = vol.pixel_to_patient(k, r, c)
        where = (f"pixel (row {row}, col {col})" if self.plane == "axial"
                 else f"voxel (image {k + 1}, row {r}, col {c})")
        text = f"HU {hu:+d}   {where}   x {x:.1f}  y {y:.1f}  z {z:.1f} mm"
        if self.slab is not None:
            text += f"   ({SLAB_NAMES[self.slab[0]]} {int(self.image_data()[row, col]):+d})"
        poly = self.polygon_at(row_f, col_f)
        if poly is not None:
            text += "   ·   " + ": ".join(poly.info.splitlines()[:2])
        return text

    # -- drawing -------------------------------------------------------------------------------
    def _update_mask(self) -> None:
        if self._mask is None or self.volume is None or self._mask.shape != self.volume.shape:
            self.mask_item.clear()
            return
        rgba = mask_rgba(planes.plane_image(self._mask, self.plane, self.index), (40, 220, 90),
                         self.mask_opacity if self.mask_fill else 0.0,
                         max(0.8, self.mask_opacity))
        self.mask_item.setImage(rgba, autoLevels=False, levels=(0, 255))

    def _curve(self, pts: np.ndarray, color: str, width: float, dashed: bool) -> None:
        style = Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine
        # +0.5: vertices are pixel centres
        item = pg.PlotCurveItem(pts[:, 1] + 0.5, pts[:, 0] + 0.5,
                                pen=pg.mkPen(QColor(color), width=width, style=style))
        item.setZValue(10)
        self.view.addItem(item)
        self._overlay_items.append(item)

    def _crops(self) -> dict[tuple, list]:
        """The readers' outlines rasterised per slice, one list of crops per (reader group,
        colour, line width) — what the coronal and sagittal views cut."""
        if self._outline_crops is None:
            shared = self.outline_store.get(self._polygons_key)
            if shared is not None and shared[0] is self.volume:
                self._outline_crops = shared[1]
                return shared[1]
            shape = self.volume.shape[1:]
            crops: dict[tuple, list] = {}
            for p in self._polygons:
                if not p.closed or len(p.points_rc) < 3:
                    continue
                crop = planes.rasterise_outline(p.points_rc, shape)
                if crop is not None:
                    crops.setdefault((p.group, p.color, p.width), []).append(
                        (p.slice_index, *crop, not p.dashed))
            self._outline_crops = crops
            self.outline_store[self._polygons_key] = (self.volume, crops)
        return self._outline_crops

    def set_deferred(self, on: bool) -> None:
        """While deferred (the view is not shown), overlay changes are only noted; they are
        drawn when it stops being deferred."""
        self.deferred = bool(on)
        if not self.deferred and self._stale:
            self._update_overlays()

    def _update_overlays(self) -> None:
        if self.deferred:
            self._stale = True
            return
        self._stale = False
        for item in self._overlay_items:
            self.view.removeItem(item)
        self._overlay_items = []
        if self.volume is None:
            self._draw_marks()  # clears them
            return
        if self.plane == "axial":
            for p in self._polygons:
                if p.slice_index != self.index or p.group in self._hidden_groups:
                    continue
                pts = p.points_rc
                if p.closed and len(pts) > 2:
                    pts = np.vstack([pts, pts[:1]])
                self._curve(pts, p.color, p.width, p.dashed)
        else:
            cuts = self._cuts.get(self.index)
            if cuts is None:
                cuts = [(key, planes.cut_outlines(crops, self.plane, self.index))
                        for key, crops in self._crops().items()]
                if len(self._cuts) > 256:
                    self._cuts.clear()
                self._cuts[self.index] = cuts
            for (group, color, width), lines in cuts:
                if group in self._hidden_groups:
                    continue
                for line in lines:
                    self._curve(line, color, width, False)
        for offset, mask, colour in self._segmentations:
            for line in planes.mask_cut_outlines(mask, offset, self.plane, self.index):
                self._curve(line, colour, 2.0, False)
        marks = []
        for m in self._markers:
            if m.group in self._hidden_groups:
                continue
            k, r, c = planes.from_volume(self.plane, m.slice_index, m.row, m.col)
            if round(k) == self.index:
                marks.append((r, c, m))
        if marks:
            item = pg.ScatterPlotItem(
                [c + 0.5 for r, c, m in marks], [r + 0.5 for r, c, m in marks],
                symbol=[m.symbol for *_, m in marks], size=[m.size for *_, m in marks],
                pen=[pg.mkPen(m.color, width=2) for *_, m in marks], brush=None)
            item.setZValue(11)
            self.view.addItem(item)
            self._overlay_items.append(item)
        self._draw_marks()

    def mark_circles(self) -> list[tuple[float, float, float, float, Mark]]:
        """The CAD marks cut by the shown image: (row, col, row radius, col radius in
        pixels, mark) of each circle drawn; a mark's circle is 2 mm wider than its sphere's
        cut so that it surrounds the nodule."""
        if self.volume is None:
            return []
        row_mm, col_mm = self.pixel_mm
        step = self.volume.spacing[planes.AXIS[self.plane]]
        out = []
        for m in self._marks:
            if m.extent is not None:
                z0, z1, y0, y1, x0, x1 = m.extent
                lo = planes.from_volume(self.plane, z0, y0, x0)
                hi = planes.from_volume(self.plane, z1 - 1, y1 - 1, x1 - 1)
                if not lo[0] <= self.index <= hi[0]:
                    continue
                margin = 2.0  # mm around the lesion's box
                out.append(((lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2,
                            (hi[1] - lo[1] + 1) / 2 + margin / row_mm,
                            (hi[2] - lo[2] + 1) / 2 + margin / col_mm, m))
                continue
            k, r, c = planes.from_volume(self.plane, m.z, m.y, m.x)
            radius = max(float(m.diameter_mm), 1.0) / 2.0
            d = abs(k - self.index) * step
            if d > radius:
                continue
            cut = float(np.sqrt(radius * radius - d * d)) + 2.0
            out.append((r, c, cut / row_mm, cut / col_mm, m))
        return out

    def _draw_marks(self) -> None:
        from PySide6.QtWidgets import QGraphicsEllipseItem

        for item in self._mark_items:
            self.view.removeItem(item)
        self._mark_items = []
        if self.volume is None:
            return
        for r, c, rr, rc, m in self.mark_circles():
            item = QGraphicsEllipseItem(c + 0.5 - rc, r + 0.5 - rr, 2 * rc, 2 * rr)
            colour = MARK_COLOURS.get(m.status, MARK_COLOURS["proposed"])
            style = Qt.PenStyle.DashLine if m.status == "rejected" else Qt.PenStyle.SolidLine
            item.setPen(pg.mkPen(colour, width=2, style=style))
            item.setZValue(12)
            self.view.addItem(item)
            self._mark_items.append(item)

    def _update_crosshair(self) -> None:
        vline, hline = self.cross_lines
        if self._crosshair is None or self.volume is None:
            vline.hide()
            hline.hide()
            return
        row, col = self._crosshair
        vline.setPos(col + 0.5)
        hline.setPos(row + 0.5)
        vline.show()
        hline.show()

    def _update_texts(self) -> None:
        vol = self.volume
        if vol is None:
            return
        if self.plane == "axial":
            z = vol.z_positions[self.index]
            text = (f"Image {self.index + 1} / {vol.n_slices}  (index {self.index})\n"
                    f"z {z:.1f} mm   slice {vol.spacing[0]:.2f} mm")
        else:
            row_mm, col_mm = self.pixel_mm
            step = vol.spacing[planes.AXIS[self.plane]]
            text = (f"{self.plane.capitalize()} {self.index + 1} / {self.n_images}  "
                    f"(index {self.index})\n"
                    f"{self.index * step:.1f} mm   pixel {row_mm:.2f} × {col_mm:.2f} mm")
        if self.title:
            text = f"{self.title}\n{text}"
        span = self.slab_images()
        if span is not None:
            step = vol.spacing[planes.AXIS[self.plane]]
            text += "\n" + slab_text(self.slab[0], span[1] - span[0], step)
        preset = next((p.name for p in PRESETS.values()
                       if p.level == self.level and p.width == self.width), "custom")
        tr = f"W {self.width:.0f}  L {self.level:.0f}  ({preset})"
        if self.graphics.width() < NARROW_PX:  # a small cell of a layout: the essentials
            lines = text.splitlines()
            text = "\n".join(lines[:1] + [ln for ln in lines[1:] if " slab " in ln])
        narrow = self.graphics.width() < NARROW_PX  # the series name would be cut there
        texts = {"tl": text, "tr": tr, "bl": "" if narrow else vol.description or ""}
        changed = False
        for name, value in texts.items():
            lab = self._labels[name]
            if lab.text() != value:  # only re-measure what changed
                lab.setText(value)
                lab.adjustSize()
                lab.setVisible(bool(value))  # no empty dark box in the corner
                changed = True
        if changed:
            self._place_labels(adjust=False)

    def _place_labels(self, adjust: bool = True) -> None:
        w, h = self.graphics.width(), self.graphics.height()
        lab = self._labels
        if adjust:
            for lb in lab.values():
                lb.adjustSize()
        lab["tl"].move(8, 6)
        lab["tr"].move(w - lab["tr"].width() - 8, 6)
        # the window text gives way to the image text when both do not fit
        lab["tr"].setVisible(bool(lab["tr"].text())
                             and lab["tl"].width() + lab["tr"].width() + 24 <= w)
        lab["bl"].move(8, h - lab["bl"].height() - 6)
        banner = lab["banner"]
        if banner.text():  # a narrow cell of a layout gets the short banner, never a cut one
            want = BANNER if banner.fontMetrics().horizontalAdvance(BANNER) + 24 <= w \
                else BANNER_SHORT
            if banner.text() != want:
                banner.setText(want)
                banner.adjustSize()
        banner.move((w - banner.width()) // 2, lab["tl"].height() + 10)
        lab["left"].move(6, h // 2)
        lab["right"].move(w - lab["right"].width() - 6, h // 2)
        lab["top"].move(w // 2, lab["tl"].height() + 36)
        lab["bottom"].move(w // 2, h - lab["bottom"].height() - 6)

    def set_highlighted(self, on: bool) -> None:
        """A thin frame around the view (the view the keys and the cine act on, when
        several are shown)."""
        self.highlighted = bool(on)
        m = 2 if on else 0
        self._layout.setContentsMargins(m, m, m, m)
        self.update()

    def paintEvent(self, ev):
        super().paintEvent(ev)
        if self.highlighted:
            from PySide6.QtGui import QPainter

            p = QPainter(self)
            p.fillRect(self.rect(), QColor(CROSSHAIR_COLOUR))
            p.end()

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        self._update_texts()  # the short form in a narrow view
        self._place_labels()
