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
    return np.take(vol, int(index), axis=axis)


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
    half = max(int(round(float(thickness_mm) / max(float(step_mm), 1e-6) / 2.0 - 0.5)), 0)
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
    block = np.take(vol, np.arange(lo, hi), axis=axis)
    if mode == "mip":
        return block.max(axis=axis)
    if mode == "minip":
        return block.min(axis=axis)
    return block.mean(axis=axis, dtype=np.float32)
