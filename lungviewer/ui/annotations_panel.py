"""The LIDC readers' marks: overlay polygons on the slice view and the nodule list.

Each reader has a colour; inclusion outlines are solid, exclusion outlines dashed; small
nodules (< 3 mm, a single point) are drawn as circles and non-nodules as crosses. Layers
and readers can be switched off in the legend; selecting a nodule jumps to its central
slice, double-clicking it also places the CAD box on it.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QCheckBox, QGridLayout, QGroupBox, QLabel, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from lungviewer.study.annotations import ReaderMark, StudyAnnotations, describe_rating

from .slice_view import Marker, Polygon, SliceView

READER_COLOURS = ("#ff5a5a", "#4fb3ff", "#ffd23f", "#c77dff", "#7dff9a", "#ff9f40")
LAYERS = {"nodule": "Nodule outlines (≥ 3 mm)", "small_nodule": "Small nodules (< 3 mm)",
          "non_nodule": "Non-nodules"}


#: the readers' outlines: thin and a little translucent, so that where several readers
#: outlined the same small nodule its edge still shows between their lines
OUTLINE_WIDTH = 1.0
OUTLINE_ALPHA = 170


def reader_colour(readers: list[str], reader: str) -> str:
    i = readers.index(reader) if reader in readers else len(readers)
    return READER_COLOURS[i % len(READER_COLOURS)]


def reader_label(readers: list[str], reader: str) -> str:
    """"Reader 1" … in the order of the study's readers (the XML's reader IDs are numbers
    such as "-17698129" that say nothing to a radiologist)."""
    i = readers.index(reader) if reader in readers else len(readers)
    return f"Reader {i + 1}"


def _translucent(colour: str) -> str:
    c = QColor(colour)
    return f"#{OUTLINE_ALPHA:02x}{c.red():02x}{c.green():02x}{c.blue():02x}"


def overlay_items(ann: StudyAnnotations, readers_off: set[str] = frozenset(),
                  layers_off: set[str] = frozenset()) -> tuple[list[Polygon], list[Marker]]:
    """Polygons and markers of every mapped ROI, filtered by reader and layer."""
    readers = ann.readers
    polys: list[Polygon] = []
    marks: list[Marker] = []
    for m in ann.marks:
        if m.reader in readers_off or m.kind in layers_off:
            continue
        colour = reader_colour(readers, m.reader)
        info = _mark_info(m, readers)
        for roi in m.rois:
            if roi.slice_index is None or len(roi.points) == 0:
                continue
            pts = np.asarray(roi.points, dtype=float)
            if m.kind == "nodule" and len(pts) > 1:
                polys.append(Polygon(roi.slice_index, pts[:, ::-1], _translucent(colour),
                                     dashed=not roi.inclusion, group=m.reader,
                                     width=OUTLINE_WIDTH,
                                     info=info if roi.inclusion else info + "\n(exclusion)"))
            else:
                r, c = pts[:, 1].mean(), pts[:, 0].mean()
                marks.append(Marker(roi.slice_index, r, c, colour,
                                    symbol="o" if m.kind != "non_nodule" else "x",
                                    group=m.reader, size=10 if m.kind != "non_nodule" else 12))
    return polys, marks


def nodule_box(nodule, pad: int = 4) -> tuple[int, int, int, int, int] | None:
    """CAD box (slice, row0, col0, row1, col1) around a nodule's outlines on the slice
    nearest its centre that has outlines."""
    rois = [r for m in nodule.marks for r in m.rois
            if r.slice_index is not None and r.inclusion and len(r.points)]
    if not rois:
        return None
    k0 = nodule.centre[0] if np.isfinite(nodule.centre[0]) else rois[0].slice_index
    k = min({r.slice_index for r in rois}, key=lambda s: abs(s - k0))
    pts = np.concatenate([np.asarray(r.points) for r in rois if r.slice_index == k])
    c0, r0 = pts.min(axis=0) - pad
    c1, r1 = pts.max(axis=0) + pad + 1
    return int(k), int(r0), int(c0), int(r1), int(c1)


def _mark_info(m: ReaderMark, readers: list[str] = ()) -> str:
    """The reader, then malignancy and the other eight ratings in words, one per line."""
    lines = [reader_label(list(readers), m.reader) if readers else m.reader]
    if m.characteristics is not None:
        words = m.characteristics.describe()
        lines += sorted(words, key=lambda w: not w.startswith("malignancy"))
    return "\n".join(lines)


def _mark_summary(m: ReaderMark, readers: list[str]) -> str:
    who = reader_label(readers, m.reader)
    if m.characteristics is None:
        return f"{who}: {m.kind.replace('_', ' ')}"
    c = m.characteristics
    return (f"{who}: {describe_rating('malignancy', c.malignancy)}; "
            f"texture {c.texture}, spiculation {c.spiculation}, calcification "
            f"{c.calcification}")


class AnnotationsPanel(QWidget):
    """Nodule list + legend; keeps the slice view's outlines in step with the filters."""

    noduleSelected = Signal(object)  # Nodule: jump to it
    noduleActivated = Signal(object)  # Nodule: box it

    def __init__(self, slice_view: SliceView, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.slice_view = slice_view
        self.annotations: StudyAnnotations | None = None
        self.readers_off: set[str] = set()
        self.layers_off: set[str] = set()
        self.visible = True
        self.source = QLabel("No annotations.")
        self.source.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Nodule", "Readers", "Malign.", "Ø mm", "Images"])
        self.tree.headerItem().setToolTip(2, "Median of the readers' malignancy ratings "
                                             "(1 highly unlikely … 5 highly suspicious)")
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(30)
        self.tree.setRootIsDecorated(True)
        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemDoubleClicked.connect(self._double_clicked)
        self.legend_box = QGroupBox("Show")
        self.legend = QGridLayout(self.legend_box)
        lay = QVBoxLayout(self)
        lay.addWidget(self.source)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.legend_box)

    def set_annotations(self, ann: StudyAnnotations | None) -> None:
        self.annotations = ann
        self.readers_off.clear()
        self.layers_off.clear()
        self.tree.clear()
        while self.legend.count():
            w = self.legend.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        if ann is None:
            self.source.setText("No annotations.")
            self.refresh()
            return
        large = [n for n in ann.nodules if not n.is_small]
        small = [n for n in ann.nodules if n.is_small]
        text = (f"Source: {ann.source}. {len(large)} nodule(s) ≥ 3 mm, {len(small)} small "
                f"nodule(s) < 3 mm, {len(ann.non_nodules)} non-nodule mark(s), "
                f"{len(ann.readers)} reader(s).")
        if ann.unmatched_rois:
            text += f" {ann.unmatched_rois} outline(s) match no slice of this series."
        self.source.setText(text)
        for nod in large:
            self.tree.addTopLevelItem(self._nodule_item(ann, nod, f"Nodule {nod.index}"))
        if small:
            group = QTreeWidgetItem([f"Small < 3 mm ({len(small)})"])
            group.setFirstColumnSpanned(True)
            group.setToolTip(0, "Nodules the readers marked as a point (< 3 mm): no outline, "
                                "no malignancy rating.")
            for nod in small:
                group.addChild(self._nodule_item(ann, nod, f"Small {nod.index}"))
            self.tree.addTopLevelItem(group)
        for i in range(self.tree.columnCount()):  # once, not per item: no cell cut
            self.tree.resizeColumnToContents(i)
        row = 0
        for key, label in LAYERS.items():
            cb = QCheckBox(label)
            cb.setChecked(True)
            cb.toggled.connect(lambda on, k=key: self._toggle(self.layers_off, k, on))
            self.legend.addWidget(cb, row, 0, 1, 2)
            row += 1
        for reader in ann.readers:
            cb = QCheckBox(reader_label(ann.readers, reader))
            cb.setChecked(True)
            cb.setStyleSheet(f"QCheckBox {{ color: {reader_colour(ann.readers, reader)}; "
                             "font-weight: bold; }")
            cb.toggled.connect(lambda on, r=reader: self._toggle(self.readers_off, r, on))
            self.legend.addWidget(cb, row, 0, 1, 2)
            row += 1
        self.refresh()

    def _nodule_item(self, ann: StudyAnnotations, nod, name: str) -> QTreeWidgetItem:
        med = nod.median_malignancy
        lo, hi = nod.slice_range or (0, 0)
        item = QTreeWidgetItem([
            name, str(len(nod.readers)), f"{med:.1f}" if med is not None else "—",
            f"{nod.diameter_mm:.1f}" if not nod.is_small else "< 3",
            f"{lo + 1}–{hi + 1}" if lo != hi else f"{lo + 1}"])
        if med is not None:
            item.setToolTip(2, describe_rating("malignancy", round(med)))
        item.setData(0, Qt.ItemDataRole.UserRole, nod)
        for m in nod.marks:
            child = QTreeWidgetItem([_mark_summary(m, ann.readers)])
            child.setForeground(0, QColor(reader_colour(ann.readers, m.reader)))
            child.setFirstColumnSpanned(True)
            child.setData(0, Qt.ItemDataRole.UserRole, nod)
            item.addChild(child)
        return item

    def set_visible_overlays(self, on: bool) -> None:
        self.visible = on
        self.refresh()

    def refresh(self) -> None:
        if self.annotations is None or not self.visible:
            self.slice_view.set_polygons([], [])
            return
        self.slice_view.set_polygons(*overlay_items(self.annotations, self.readers_off,
                                                    self.layers_off))

    def _toggle(self, off: set[str], key: str, on: bool) -> None:
        (off.discard if on else off.add)(key)
        self.refresh()

    def _clicked(self, item: QTreeWidgetItem) -> None:
        nod = item.data(0, Qt.ItemDataRole.UserRole)
        if nod is not None and nod.slice_range is not None:  # None: on no slice of this series
            k, r, c = int(round(nod.centre[0])), nod.centre[1], nod.centre[2]
            if np.isfinite(r) and np.isfinite(c) and hasattr(self.slice_view, "bring_into_view"):
                self.slice_view.set_point(k, round(r), round(c))
                self.slice_view.bring_into_view(k, r, c, nod.diameter_mm)
            else:
                self.slice_view.set_slice(k)
            self.noduleSelected.emit(nod)

    def _double_clicked(self, item: QTreeWidgetItem) -> None:
        nod = item.data(0, Qt.ItemDataRole.UserRole)
        if nod is not None:
            self.noduleActivated.emit(nod)
