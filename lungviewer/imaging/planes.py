"""The three orthogonal planes of a volume (axial, coronal, sagittal) and thick slabs.

Pure numpy on ``(z, y, x)`` arrays, the one place that knows how a plane's 2-D image is
cut from the volume (docs/ARCHITECTURE.md, "Views and planes"). Each plane's image has
``(row, col)`` axes:

=========  ===================  ==========================  =====================
plane      fixed axis (index)   image rows, cols            pixel size (mm)
=========  ===================  ==========================  =====================
axial      z                    y, x                        (dy, dx)
coronal    y                    z, x                        (dz, dx)
sagittal   x                    z, y                        (dz, dy)
=========  ===================  ==========================  =====================

Slabs project ``thickness_mm`` around the index along the fixed axis: maximum (MIP),
minimum (MinIP) or mean intensity.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Plane = Literal["axial", "coronal", "sagittal"]
SlabMode = Literal["mip", "minip", "avg"]
PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")
SLAB_MODES: tuple[SlabMode, ...] = ("mip", "minip", "avg")
#: volume axis held fixed by each plane
AXIS: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}


def _check(plane: str) -> int:
    if plane not in AXIS:
        raise ValueError(f"unknown plane {plane!r}; one of {', '.join(PLANES)}")
    return AXIS[plane]


def plane_count(shape: tuple[int, int, int], plane: str) -> int:
    """How many images the plane has (the length of its fixed axis)."""
    return int(shape[_check(plane)])


def plane_spacing(spacing: tuple[float, float, float], plane: str) -> tuple[float, float]:
    """Pixel size ``(row_mm, col_mm)`` of the plane's images; ``spacing`` is (z, y, x) mm."""
    axis = _check(plane)
    dz, dy, dx = (float(v) for v in spacing)
    return {0: (dy, dx), 1: (dz, dx), 2: (dz, dy)}[axis]


def plane_image(vol: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2-D image ``(row, col)`` of ``vol`` (z, y, x) at ``index`` along the plane's
    fixed axis (a view, not a copy)."""
    axis = _check(plane)
    n = vol.shape[axis]
    i = int(index)
    if not -n <= i < n:
        raise IndexError(f"{plane} image {i} is outside 0..{n - 1}")
    return vol[(slice(None),) * axis + (i,)]  # basic indexing: a view (np.take copies)


def to_volume(plane: str, index: float, row: float, col: float) -> tuple[float, float, float]:
    """Volume coordinates ``(z, y, x)`` of pixel ``(row, col)`` on image ``index``."""
    axis = _check(plane)
    if axis == 0:
        return (float(index), float(row), float(col))
    if axis == 1:
        return (float(row), float(index), float(col))
    return (float(row), float(col), float(index))


def from_volume(plane: str, z: float, y: float, x: float) -> tuple[float, float, float]:
    """``(index, row, col)`` on ``plane`` of the volume point ``(z, y, x)``."""
    axis = _check(plane)
    if axis == 0:
        return (float(z), float(y), float(x))
    if axis == 1:
        return (float(y), float(z), float(x))
    return (float(x), float(z), float(y))


def slab_range(n: int, index: int, thickness_mm: float, step_mm: float) -> tuple[int, int]:
    """The image indices ``[lo, hi)`` a slab of ``thickness_mm`` centred on ``index``
    covers along an axis of ``n`` images ``step_mm`` apart (at least the image itself)."""
    half = max(round(float(thickness_mm) / max(float(step_mm), 1e-6) / 2.0 - 0.5), 0)
    lo, hi = max(int(index) - half, 0), min(int(index) + half + 1, int(n))
    return lo, max(hi, lo + 1)


def slab_image(vol: np.ndarray, plane: str, index: int, thickness_mm: float,
               mode: str, spacing: tuple[float, float, float]) -> np.ndarray:
    """A thick-slab projection ``(row, col)`` of ``vol`` (z, y, x): ``mode`` is ``mip``,
    ``minip`` or ``avg`` over ``thickness_mm`` centred on ``index`` along the plane's axis.
    ``avg`` returns float32; the others keep the volume's dtype."""
    axis = _check(plane)
    if mode not in SLAB_MODES:
        raise ValueError(f"unknown slab mode {mode!r}; one of {', '.join(SLAB_MODES)}")
    lo, hi = slab_range(vol.shape[axis], index, thickness_mm, float(spacing[axis]))
    # reduce a view of the block (no copy: gathering a sagittal block across x first costs
    # more than the projection itself)
    block = vol[(slice(None),) * axis + (slice(lo, hi),)]
    if mode == "mip":
        return block.max(axis=axis)
    if mode == "minip":
        return block.min(axis=axis)
    return block.mean(axis=axis, dtype=np.float32)


# -- a cache of slab images ------------------------------------------------------------------
class SlabCache:
    """The last ``max_items`` slab images of one volume, keyed by
    ``(plane, index, thickness_mm, mode)``: scrolling back and forth over a thick slab costs
    one projection per image. A different volume (by identity) empties the cache."""

    def __init__(self, max_items: int = 48) -> None:
        self.max_items = int(max_items)
        self._vol_id: int | None = None
        self._items: dict[tuple, np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._items.clear()
        self._vol_id = None

    def get(self, vol: np.ndarray, plane: str, index: int, thickness_mm: float, mode: str,
            spacing: tuple[float, float, float]) -> np.ndarray:
        """:func:`slab_image` of ``vol`` (z, y, x), from the cache when it was made before."""
        if self._vol_id != id(vol):
            self._items.clear()
            self._vol_id = id(vol)
        key = (plane, int(index), round(float(thickness_mm), 3), mode)
        img = self._items.pop(key, None)
        if img is None:
            self.misses += 1
            img = slab_image(vol, plane, index, thickness_mm, mode, spacing)
            img.flags.writeable = False
        else:
            self.hits += 1
        self._items[key] = img  # most recently used last
        while len(self._items) > self.max_items:
            self._items.pop(next(iter(self._items)))
        return img


# -- orientation letters of each plane ---------------------------------------------------------
def plane_orientation(orientation: np.ndarray, plane: str) -> tuple[dict[str, str], bool]:
    """Patient-orientation letters at the image edges of ``plane`` (keys left/right/top/
    bottom) and whether its rows run upwards on screen (image row 0 at the bottom).

    ``orientation`` is ImageOrientationPatient (row cosines, column cosines); the slice
    index runs along their cross product. Axial images have row 0 at the top; coronal and
    sagittal images (rows = slices) are shown with the head up."""
    from lungviewer.study.volume import direction_letters as letters

    axis = _check(plane)
    o = np.asarray(orientation, dtype=float).reshape(6)
    r, c = o[:3], o[3:]
    n = np.cross(r, c)
    n = n / (np.linalg.norm(n) or 1.0)
    if axis == 0:
        col_dir, row_dir, up = r, c, False
    else:
        col_dir = r if axis == 1 else c
        row_dir = n
        up = bool(n[2] >= 0)  # slice index towards the head: rows run upwards
    top, bottom = (row_dir, -row_dir) if up else (-row_dir, row_dir)
    return ({"left": letters(-col_dir), "right": letters(col_dir), "top": letters(top),
             "bottom": letters(bottom)}, up)


# -- outlines drawn on one axial slice, cut by the other planes ---------------------------------
def fill_polygon(points_rc: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean image of ``shape`` with the pixels whose centres (integer coordinates) lie
    inside the closed polygon ``points_rc`` ``(n, 2)`` (row, col), by the even-odd rule:
    each edge toggles the pixels of the rows it crosses from its crossing point rightwards
    (vectorised over rows × edges)."""
    h, w = int(shape[0]), int(shape[1])
    a = np.asarray(points_rc, dtype=float).reshape(-1, 2)
    if len(a) < 3 or h <= 0 or w <= 0:
        return np.zeros((max(h, 0), max(w, 0)), dtype=bool)
    b = np.roll(a, -1, axis=0)
    rows = np.arange(h, dtype=float)[:, None]
    crosses = (a[None, :, 0] <= rows) != (b[None, :, 0] <= rows)  # half-open in rows
    ri, ei = np.nonzero(crosses)
    ra, ca, rb, cb = a[ei, 0], a[ei, 1], b[ei, 0], b[ei, 1]
    x = ca + (ri - ra) * (cb - ca) / (rb - ra)
    start = np.clip(np.ceil(x), 0, w).astype(np.intp)  # first pixel centre at or right of x
    toggles = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(toggles, (ri, start), 1)
    return (np.cumsum(toggles, axis=1)[:, :w] & 1).astype(bool)


def rasterise_outline(points_rc: np.ndarray, shape_yx: tuple[int, int]
                      ) -> tuple[int, int, np.ndarray] | None:
    """The pixels inside a closed outline on an axial slice (vertices ``(n, 2)`` (row, col)
    at pixel centres; the vertices' own pixels count as inside, so an outline of one or two
    points covers those pixels): ``(row0, col0, mask)`` with ``mask`` the boolean crop of
    its bounding box, None when it is off the image."""
    p = np.asarray(points_rc, dtype=float).reshape(-1, 2)
    if len(p) == 0:
        return None
    h, w = int(shape_yx[0]), int(shape_yx[1])
    lo = np.maximum(np.floor(p.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(p.max(axis=0)).astype(int) + 1, (h, w))
    if np.any(hi <= lo):
        return None
    q = p - lo
    shape = tuple(int(v) for v in hi - lo)
    mask = fill_polygon(q, shape)
    # the vertices' own pixels (the readers' outlines are chains of neighbouring pixels):
    # a thin outline keeps its slice
    v = np.clip(np.round(q).astype(int), 0, np.array(shape) - 1)
    mask[v[:, 0], v[:, 1]] = True
    return int(lo[0]), int(lo[1]), mask


def cut_outlines(crops: list[tuple[int, int, int, np.ndarray, bool]], plane: str,
                 index: int) -> list[np.ndarray]:
    """Where the volume the outlines enclose meets a plane, as closed polylines ``(n, 2)``
    of (row, col) on that plane's image (pixel centres).

    ``crops`` are ``(slice, row0, col0, mask, inclusion)`` from :func:`rasterise_outline`
    of one object's outlines (one per slice); exclusion crops are cut out of the union of
    the inclusion ones."""
    axis = _check(plane)
    pieces = []  # (row0, col0, 2-D piece, inclusion) on the plane's image
    for k, r0, c0, mask, inclusion in crops:
        if axis == 0:
            if k == index:
                pieces.append((r0, c0, mask, inclusion))
        elif axis == 1:
            if r0 <= index < r0 + mask.shape[0]:
                pieces.append((k, c0, mask[index - r0][None, :], inclusion))
        elif c0 <= index < c0 + mask.shape[1]:
            pieces.append((k, r0, mask[:, index - c0][None, :], inclusion))
    if not any(p[3] for p in pieces):
        return []
    r_lo = min(p[0] for p in pieces) - 1
    c_lo = min(p[1] for p in pieces) - 1
    r_hi = max(p[0] + p[2].shape[0] for p in pieces) + 1
    c_hi = max(p[1] + p[2].shape[1] for p in pieces) + 1
    grid = np.zeros((r_hi - r_lo, c_hi - c_lo), dtype=bool)
    for inclusion in (True, False):
        for r0, c0, piece, inc in pieces:
            if inc == inclusion:
                sub = grid[r0 - r_lo:r0 - r_lo + piece.shape[0],
                           c0 - c_lo:c0 - c_lo + piece.shape[1]]
                if inclusion:
                    sub |= piece
                else:
                    sub &= ~piece
    return _contours(grid, r_lo, c_lo)


def _contours(grid: np.ndarray, row0: int, col0: int) -> list[np.ndarray]:
    """Closed outlines (the 0.5 level between inside and outside pixel centres) of a 2-D
    boolean ``grid`` whose pixel (0, 0) is image pixel ``(row0, col0)``; the grid should
    have an empty border so that every outline closes."""
    from skimage.measure import find_contours

    return [c + (row0, col0) for c in find_contours(grid.astype(np.float32), 0.5)
            if len(c) > 2]


def mask_cut_outlines(mask: np.ndarray, offset: tuple[int, int, int], plane: str,
                      index: int) -> list[np.ndarray]:
    """Where a 3-D object meets image ``index`` of ``plane``, as closed polylines ``(n, 2)``
    of (row, col) on that image (pixel centres). ``mask`` is the object's boolean crop
    ``(z, y, x)`` and ``offset`` the volume voxel of its first voxel."""
    axis = _check(plane)
    i0, r0, c0 = (int(v) for v in from_volume(plane, *offset))
    local = int(index) - i0
    if not 0 <= local < mask.shape[axis]:
        return []
    cut = np.asarray(plane_image(mask, plane, local), dtype=bool)
    if not cut.any():
        return []
    return _contours(np.pad(cut, 1), r0 - 1, c0 - 1)


def parse_slab(text: str) -> tuple[str | None, float]:
    """``"none"``, ``"mip"``, ``"mip:10"``, ``"minip:5"``, ``"avg:20"`` → (mode or None,
    thickness mm; 10 mm when not given). Raises ValueError naming the problem."""
    mode, _, mm = str(text).strip().lower().partition(":")
    if mode in ("", "none", "off"):
        return None, float(mm) if mm else 10.0
    if mode not in SLAB_MODES:
        raise ValueError(f"unknown slab mode {mode!r}; one of none, {', '.join(SLAB_MODES)}")
    try:
        thickness = float(mm) if mm else 10.0
    except ValueError:
        raise ValueError(f"slab thickness {mm!r} is not a number of mm") from None
    if not np.isfinite(thickness) or thickness <= 0:
        raise ValueError(f"slab thickness must be a positive number of mm, not {mm!r}")
    return mode, thickness
