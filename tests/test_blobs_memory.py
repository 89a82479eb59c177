"""find_blobs in blocks of slices (issue 27's memory target) returns exactly what the old
whole-volume find_blobs returned (tests/blobs_reference.py, kept verbatim: the fpr network
was trained on those candidates), for any block size, and its peak memory is bounded."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import blobs_reference as reference
from lungviewer.imaging import blobs

FIELDS = ("centre", "diameter_mm", "response", "dot", "dot_li", "line_li", "hu", "eig",
          "lung_shell")


def _chest(shape, spacing, seed=0, pad_corner=False):
    """A SYNTHETIC block of lung (−850 HU) in soft tissue with noise, spheres of 3–12 mm at
    random places (some on the lung's edge), and a vessel along z; HU int16, lung mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    zm, ym, xm = z * spacing[0], y * spacing[1], x * spacing[2]
    hu = np.full(shape, 40.0, np.float32)
    nz, ny, nx = shape
    lung = ((y > ny * 0.08) & (y < ny * 0.92) & (x > nx * 0.08) & (x < nx * 0.92)
            & (z > nz * 0.05) & (z < nz * 0.95))
    hu[lung] = -850
    for _ in range(6):
        c = rng.uniform(0.1, 0.9, 3) * np.array(shape) * np.array(spacing)
        r = rng.uniform(1.5, 6.0)
        hu[(zm - c[0]) ** 2 + (ym - c[1]) ** 2 + (xm - c[2]) ** 2 <= r * r] = 30
    tube = (ym - ny * spacing[1] * 0.4) ** 2 + (xm - nx * spacing[2] * 0.3) ** 2 <= 1.5 ** 2
    hu[tube & lung] = 20
    hu += rng.normal(0, 20, shape)
    if pad_corner:  # the reconstruction circle's padding
        hu[:, int(ny * 0.6):, int(nx * 0.8):] = -2048
    return np.clip(hu, -2048, 3000).astype(np.int16), lung


def _assert_same(old, new):
    assert len(old) == len(new)
    for k in FIELDS:
        a, b = getattr(old, k), getattr(new, k)
        assert a.dtype == b.dtype, k
        assert np.array_equal(a, b), k  # bit for bit, same order


@pytest.mark.parametrize("shape, spacing, pad", [
    ((40, 160, 160), (2.5, 0.625, 0.625), False),  # in-plane 2× averaging (grid 1.25 mm)
    ((37, 96, 90), (2.5, 1.5, 1.5), True),  # no averaging, the padding's edge
    ((90, 64, 72), (0.7, 1.4, 1.4), False),  # thin slices: halo and z windows of many rows
])
def test_blocks_give_bit_identical_candidates(shape, spacing, pad, monkeypatch):
    hu, lung = _chest(shape, spacing, seed=sum(shape), pad_corner=pad)
    old = reference.find_blobs(hu, lung, spacing)
    assert len(old) > 20
    monkeypatch.setattr(blobs, "MIN_BLOCK_SLICES", 1)
    for block in (None, 1, 4, 11, shape[0]):
        _assert_same(old, blobs.find_blobs(hu, lung, spacing, block_slices=block))
    # the findings' own settings (lung shell, margins) and a tight budget
    monkeypatch.setattr(blobs, "BLOCK_BYTES", 1)
    _assert_same(reference.find_blobs(hu, lung, spacing, min_lung_shell=0.4, margin_mm=6.0),
                 blobs.find_blobs(hu, lung, spacing, min_lung_shell=0.4, margin_mm=6.0))


def test_no_lung_and_no_candidates_as_before():
    hu, lung = _chest((20, 48, 48), (2.5, 1.5, 1.5))
    assert len(blobs.find_blobs(hu, np.zeros_like(lung), (2.5, 1.5, 1.5))) == 0
    flat = np.full_like(hu, -850)  # no blob at all
    assert len(blobs.find_blobs(flat, lung, (2.5, 1.5, 1.5))) == 0
    assert len(reference.find_blobs(flat, lung, (2.5, 1.5, 1.5))) == 0


def _peak(fn, *args, **kw):
    tracemalloc.start()
    try:
        out = fn(*args, **kw)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_is_bounded_by_the_block_not_the_volume(monkeypatch):
    """numpy reports its buffers to tracemalloc: the old code's peak is about 17× the int16
    volume (eight float32 Gaussians and more) and grows with it; in blocks it stays about
    the same when the slices double, so its ratio to the volume halves."""
    spacing = (2.5, 1.5, 1.5)
    monkeypatch.setattr(blobs, "BLOCK_BYTES", 3 * 2**20)
    peaks = {}
    for n in (150, 300):
        hu, lung = _chest((n, 96, 96), spacing, seed=3)
        new, peaks[n] = _peak(blobs.find_blobs, hu, lung, spacing)
        if n == 150:
            old, old_peak = _peak(reference.find_blobs, hu, lung, spacing)
            _assert_same(old, new)
            assert old_peak > 12 * hu.nbytes, old_peak / hu.nbytes
            assert peaks[n] < 0.5 * old_peak, (peaks[n], old_peak)
    assert peaks[300] < 1.2 * peaks[150], peaks  # the block's memory, not the volume's
    assert peaks[300] < 3.5 * hu.nbytes, peaks[300] / hu.nbytes
