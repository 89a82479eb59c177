"""Nodule type at thick slices: a small near-solid nodule whose densest voxel the slice
averages with the lung (partial volume) is typed on its core against a solid level lowered
by the contrast its size lets through; a ground-glass nodule stays ground glass."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from lungviewer.reading.volumetry import partial_volume_fraction, segment_nodule

LUNG_HU = -850.0
FINE = 10  # sub-slices per slice when rendering


def _thick_slice_sphere(diameter_mm: float, inside_hu: float, slice_mm: float = 2.5,
                        px_mm: float = 0.7, offset_mm: float = 1.0, seed: int = 0):
    """A sphere rendered finely along z and averaged over slices ``slice_mm`` thick (the
    sphere's centre ``offset_mm`` off a slice centre), blurred in plane (σ 0.8 mm) as a
    scanner's kernel does, with noise. Returns (hu int16, spacing, box)."""
    n, nz = 48, 12
    dz = slice_mm / FINE
    zz, yy, xx = np.indices((nz * FINE, n, n), dtype=np.float64)
    cz = nz * slice_mm / 2 + offset_mm
    r2 = ((zz + 0.5) * dz - cz) ** 2 + ((yy - n / 2) * px_mm) ** 2 + ((xx - n / 2) * px_mm) ** 2
    fine = np.where(r2 <= (diameter_mm / 2) ** 2, inside_hu, LUNG_HU)
    hu = fine.reshape(nz, FINE, n, n).mean(axis=1)
    hu = ndi.gaussian_filter(hu, (0, 0.8 / px_mm, 0.8 / px_mm))
    hu += np.random.default_rng(seed).normal(0, 15, hu.shape)
    k = int(cz // slice_mm)
    half = int(np.ceil(diameter_mm / 2 / px_mm)) + 3
    box = (k, n // 2 - half, n // 2 - half, n // 2 + half + 1, n // 2 + half + 1)
    return np.rint(hu).astype(np.int16), (slice_mm, px_mm, px_mm), box


def test_partial_volume_fraction():
    assert partial_volume_fraction(20.0, 2.5) == 1.0
    assert partial_volume_fraction(9.5, 2.5) == pytest.approx(1.0)
    assert partial_volume_fraction(6.0, 2.5) == pytest.approx(6.0 / 9.5)
    assert partial_volume_fraction(1.0, 2.5) == 0.5  # floor
    assert partial_volume_fraction(6.0, 1.0) == 1.0  # thin slices: no correction


def test_small_near_solid_nodule_at_thick_slices_is_solid():
    """5 mm, −150 HU (solid with some mixed texture, like the texture-4 nodules of the real
    development scan), its centre between two 2.5 mm slices: its densest voxel shows −220
    HU, the rest of it far less, so a fixed −300 HU solid level read on the whole nodule
    called it ground glass (Lung-RADS 2 instead of a solid nodule)."""
    hu, sp, box = _thick_slice_sphere(5.0, -150.0, offset_mm=0.0)
    assert hu.max() < -200  # the partial volume the old rule was blind to
    seg = segment_nodule(hu, sp, box)
    assert seg.type in ("solid", "part-solid"), seg.type


@pytest.mark.parametrize("diameter", [5.0, 9.0])
def test_ground_glass_at_thick_slices_stays_ground_glass(diameter):
    hu, sp, box = _thick_slice_sphere(diameter, -650.0)
    seg = segment_nodule(hu, sp, box)
    assert seg.type == "ground-glass", seg.type
