"""A saved reading belongs to the series *and* the images it was made on.

A folder may hold only part of a series (one slice of it, a re-export with other slices):
the SeriesInstanceUID is the same, the slice indices are not. A reading therefore keeps its
:func:`content_key` (a hash of every slice's SOPInstanceUID and position, in volume order)
and the SOPInstanceUID of each slice index (``Reading.slice_uids``).

* Same content: the reading is applied as saved.
* Other content: the reading is *offered*, not applied (``StudySession.offered_reading``);
  :func:`fit_reading` maps it onto the open volume by SOPInstanceUID, and whatever lies on
  a slice the volume lacks is left out (never drawn at a position the volume lacks).
* A reading saved before content keys existed is applied only when every item lies inside
  the volume; otherwise it is offered the same way (indices kept where they are inside).

Pure functions on the reading and the volume's UIDs, positions and shape.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

import numpy as np


def content_key(volume) -> str:
    """32 hex digits: SHA-256 of the slices' SOPInstanceUIDs and positions (0.01 mm)."""
    h = hashlib.sha256()
    uids = list(getattr(volume, "sop_uids", None) or [])
    pos = np.asarray(getattr(volume, "positions", np.zeros((0, 3))), float).reshape(-1, 3)
    h.update(f"{len(pos)}|{tuple(int(v) for v in volume.shape)}\n".encode())
    for i, p in enumerate(pos):
        uid = uids[i] if i < len(uids) else ""
        h.update(f"{uid}@{p[0]:.2f},{p[1]:.2f},{p[2]:.2f}\n".encode())
    return h.hexdigest()[:32]


def matches(reading, volume) -> bool:
    """Whether ``reading`` was made on exactly the images of ``volume``."""
    return bool(reading.content_key) and reading.content_key == content_key(volume)


def fits(reading, volume) -> bool:
    """Whether every mark, nodule, box score and axial measurement lies inside the volume."""
    n, rows, cols = (int(v) for v in volume.shape)
    return (all(0 <= m.slice < n for m in reading.cad_marks)
            and all(0 <= x.box[0] < n and x.box[3] <= rows and x.box[4] <= cols
                    and (x.mask is None or x.mask.offset[0] + x.mask.shape[0] <= n)
                    for x in reading.nodules)
            and all(0 <= s.box[0] < n for s in reading.box_scores)
            and all(m.plane != "axial" or 0 <= m.index < n for m in reading.measurements))


@dataclass
class Fitted:
    reading: object
    kept: int = 0
    dropped: list[str] = field(default_factory=list)  # what was left out, counted


def _slice_map(reading, volume) -> dict[int, int]:
    """Saved slice index -> this volume's index, by SOPInstanceUID (identity when the
    reading has no UIDs, for indices inside the volume)."""
    n = int(volume.shape[0])
    if reading.slice_uids and getattr(volume, "sop_uids", None):
        here = {u: i for i, u in enumerate(volume.sop_uids)}
        return {i: here[u] for i, u in enumerate(reading.slice_uids) if u in here}
    return {i: i for i in range(n)}


def fit_reading(reading, volume) -> Fitted:
    """A copy of ``reading`` on ``volume``: every item moved to the slice with the same
    SOPInstanceUID, items on slices the volume lacks left out (a nodule whose slices do
    not all map, consecutively, is left out whole), counted in ``dropped``."""
    from .model import Reading

    zmap = _slice_map(reading, volume)
    n, rows, cols = (int(v) for v in volume.shape)
    out = Reading.for_volume(volume)
    out.note, out.created = reading.note, reading.created
    lost = {"CAD mark(s)": 0, "nodule(s)": 0, "box score(s)": 0, "measurement(s)": 0}
    for m in reading.cad_marks:
        if m.slice in zmap:
            mm = copy.deepcopy(m)
            mm.slice = zmap[m.slice]
            if mm.extent is not None:
                shift = mm.slice - m.slice
                e = list(mm.extent)
                mm.extent = (e[0] + shift, e[1] + shift, *e[2:]) if (
                    0 <= e[0] + shift and e[1] + shift <= n) else None
            out.cad_marks.append(mm)
        else:
            lost["CAD mark(s)"] += 1
    for x in reading.nodules:
        z0 = x.mask.offset[0] if x.mask is not None else x.box[0]
        depth = x.mask.shape[0] if x.mask is not None else 1
        mapped = [zmap.get(z) for z in range(z0, z0 + depth)]
        ok = (x.box[0] in zmap and None not in mapped
              and mapped == list(range(mapped[0], mapped[0] + depth))
              and x.box[3] <= rows and x.box[4] <= cols)
        if not ok:
            lost["nodule(s)"] += 1
            continue
        xx = copy.deepcopy(x)
        shift = mapped[0] - z0
        xx.box = (x.box[0] + shift, *x.box[1:])
        if xx.axis_slice is not None:
            xx.axis_slice += shift
        if xx.mask is not None:
            xx.mask.offset = (x.mask.offset[0] + shift, *x.mask.offset[1:])
        out.nodules.append(xx)
    for s in reading.box_scores:
        if s.box[0] in zmap:
            ss = copy.deepcopy(s)
            ss.box = (zmap[s.box[0]], *s.box[1:])
            out.box_scores.append(ss)
        else:
            lost["box score(s)"] += 1
    same_z = all(zmap.get(i) == i for i in range(n)) and len(zmap) == n
    for m in reading.measurements:
        if m.plane == "axial" and m.index in zmap:
            mm = copy.deepcopy(m)
            mm.index = zmap[m.index]
            out.measurements.append(mm)
        elif m.plane != "axial" and same_z:  # a reformat's rows are slices: same slices only
            out.measurements.append(copy.deepcopy(m))
        else:
            lost["measurement(s)"] += 1
    kept = (len(out.cad_marks) + len(out.nodules) + len(out.box_scores)
            + len(out.measurements))
    return Fitted(out, kept, [f"{k} {what}" for what, k in lost.items() if k])
