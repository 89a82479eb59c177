"""Nodule patches and detector patches (the detector's 50×50 input), pure numpy/scikit-image
(docs/ARCHITECTURE.md, "The methods and their sources").

The same functions serve training (``lungviewer.cad.training.datasets``) and the viewer's
box, so what the network sees in use is exactly what it saw in training.

Nodule patch: the ROI's bounding box on its slice → crop → Otsu binarisation → remove objects
smaller than 10 px → centre-pad (or centre-crop) to 32×32. A grey-level patch (HU
windowed −1000…400 → 0…1) is made the same way beside the binary one, and the box size in
mm is kept, because a nodule wider than 32 px loses its size in a 32×32 crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_objects

PATCH = 32
DETECTOR = 50
GREY_LO, GREY_HI = -1000.0, 400.0
MIN_OBJECT_PX = 10

Box = tuple[int, int, int, int]  # row0, col0, row1, col1 (end exclusive), pixel indices


@dataclass
class NodulePatch:
    binary: np.ndarray  # (32, 32) float32 0/1
    grey: np.ndarray  # (32, 32) float32 0..1
    box_mm: tuple[float, float]  # height, width of the box in mm (pixels when unknown)
    otsu_hu: float  # the Otsu threshold of the crop

    def stacked(self) -> np.ndarray:
        """(2, 32, 32) float32: the network input (binary, grey)."""
        return np.stack([self.binary, self.grey]).astype(np.float32)


def grey_level(hu: np.ndarray) -> np.ndarray:
    return np.clip((np.asarray(hu, np.float32) - GREY_LO) / (GREY_HI - GREY_LO), 0, 1)


def centre_fit(a: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    """Centre-pad (with ``fill``) or centre-crop a 2-D array to ``size``×``size``."""
    out = np.full((size, size), fill, dtype=a.dtype)
    h, w = a.shape
    sh, sw = min(h, size), min(w, size)
    ah, aw = (h - sh) // 2, (w - sw) // 2  # crop offsets in a
    oh, ow = (size - sh) // 2, (size - sw) // 2  # pad offsets in out
    out[oh:oh + sh, ow:ow + sw] = a[ah:ah + sh, aw:aw + sw]
    return out


def clip_box(box: Box, shape: tuple[int, int]) -> Box:
    r0, c0, r1, c1 = (int(v) for v in box)
    r0, r1 = sorted((max(0, min(r0, shape[0])), max(0, min(r1, shape[0]))))
    c0, c1 = sorted((max(0, min(c0, shape[1])), max(0, min(c1, shape[1]))))
    if r1 - r0 < 2 or c1 - c0 < 2:
        raise ValueError(f"box {box} is smaller than 2×2 pixels inside a {shape} slice")
    return r0, c0, r1, c1


def polygon_box(points_xy: np.ndarray, pad: int = 0) -> Box:
    """Bounding box (row0, col0, row1, col1) of a LIDC polygon given as (x=col, y=row)."""
    p = np.asarray(points_xy)
    return (int(p[:, 1].min()) - pad, int(p[:, 0].min()) - pad,
            int(p[:, 1].max()) + 1 + pad, int(p[:, 0].max()) + 1 + pad)


def nodule_patch(slice_hu: np.ndarray, box: Box,
                 pixel_spacing: tuple[float, float] | None = None) -> NodulePatch:
    """Nodule patch of the region ``box`` of one slice (``slice_hu`` (y, x) HU)."""
    r0, c0, r1, c1 = clip_box(box, slice_hu.shape)
    crop = np.asarray(slice_hu[r0:r1, c0:c1], dtype=np.float32)
    if float(crop.max()) > float(crop.min()):
        t = float(threshold_otsu(crop))
        binary = crop > t
        binary = remove_small_objects(binary, max_size=MIN_OBJECT_PX - 1)  # drops < 10 px
    else:
        t, binary = float(crop.min()), np.zeros(crop.shape, dtype=bool)
    sy, sx = pixel_spacing if pixel_spacing is not None else (1.0, 1.0)
    return NodulePatch(
        binary=centre_fit(binary.astype(np.float32), PATCH),
        grey=centre_fit(grey_level(crop), PATCH),
        box_mm=((r1 - r0) * sy, (c1 - c0) * sx),
        otsu_hu=t,
    )


def keep_context(patches: np.ndarray, context: int | None) -> np.ndarray:
    """Grey patches (…, size, size) with everything beyond their central
    ``context``×``context`` set to air (0): the input of a detector trained on 32×32 real
    patches centred in its 50×50 field (``context`` None: unchanged)."""
    if context is None:
        return patches
    out = np.zeros_like(patches)
    size = patches.shape[-1]
    a = size // 2 - context // 2
    out[..., a:a + context, a:a + context] = patches[..., a:a + context, a:a + context]
    return out


def detector_patch(slice_hu: np.ndarray, centre_rc: tuple[float, float],
                   size: int = DETECTOR, context: int | None = None) -> np.ndarray:
    """``size``×``size`` grey patch (0..1) centred on (row, col); outside the image is air,
    and beyond the central ``context``×``context`` too where given (:func:`keep_context`)."""
    r, c = int(round(centre_rc[0])), int(round(centre_rc[1]))
    h, w = slice_hu.shape
    out = np.full((size, size), GREY_LO, dtype=np.float32)
    r0, c0 = r - size // 2, c - size // 2
    a0, b0 = max(0, r0), max(0, c0)
    a1, b1 = min(h, r0 + size), min(w, c0 + size)
    if a0 < a1 and b0 < b1:
        out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = slice_hu[a0:a1, b0:b1]
    return keep_context(grey_level(out), context)


def detector_patches(slice_hu: np.ndarray, centres_rc: np.ndarray,
                     size: int = DETECTOR) -> np.ndarray:
    """(n, size, size) patches at many centres of one slice, by one padded gather."""
    pts = np.round(np.asarray(centres_rc, dtype=float)).astype(int).reshape(-1, 2)
    half = size // 2
    padded = np.pad(np.asarray(slice_hu, np.float32), half + 1, constant_values=GREY_LO)
    off = np.arange(size) - half
    rows = pts[:, 0, None, None] + off[None, :, None] + half + 1
    cols = pts[:, 1, None, None] + off[None, None, :] + half + 1
    rows = np.clip(rows, 0, padded.shape[0] - 1)
    cols = np.clip(cols, 0, padded.shape[1] - 1)
    return grey_level(padded[rows, cols])
