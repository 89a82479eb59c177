"""M1 lung parenchyma segmentation: the method's steps on phantoms and on the twin."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dicomgen import write_ct_series
from lungviewer.cli import main as cli_main
from lungviewer.imaging.parenchyma import (ParenchymaParams, dice, evaluate_against,
                                           iterative_threshold, segment_lungs, segment_slice)


def phantom(size=256, seed=0):
    """Air, body ellipse (40 HU), two lung ellipses (−850 HU), trachea (−1000 HU, < 1000 px),
    a vessel dot in a lung, a table under the body; returns (hu, true lung mask)."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[:size, :size]
    hu = np.full((size, size), -1000.0)
    body = ((c - 128) / 110) ** 2 + ((r - 120) / 80) ** 2 < 1
    hu[body] = 40
    lungs = (((c - 80) / 35) ** 2 + ((r - 120) / 55) ** 2 < 1) | \
            (((c - 176) / 35) ** 2 + ((r - 120) / 55) ** 2 < 1)
    hu[lungs] = -850
    hu[(c - 128) ** 2 + (r - 95) ** 2 < 7 ** 2] = -1000  # trachea, ~150 px
    hu[(c - 80) ** 2 + (r - 120) ** 2 < 3 ** 2] = 40  # vessel inside the left lung
    hu[(r > 210) & (r < 216) & (np.abs(c - 128) < 120)] = 150  # table
    hu += rng.normal(0, 15, hu.shape)
    return hu.astype(np.int16), lungs


def test_iterative_threshold_converges_between_lung_and_tissue():
    hu, _ = phantom()
    t = iterative_threshold(hu)
    assert -850 < t < 40
    # the definition: T is the mean of the two class means (within the tolerance)
    lo, hi = hu[hu <= t].mean(), hu[hu > t].mean()
    assert abs(t - (lo + hi) / 2) < 1.0


def test_slice_mask_matches_lungs_and_drops_air_trachea_and_holes():
    hu, lungs = phantom()
    mask, t = segment_slice(hu, ParenchymaParams())
    assert dice(mask, lungs) > 0.97
    assert not mask[95, 128]  # trachea removed (< 1000 px)
    assert not mask[5, 5] and not mask[230, 128]  # outside air, under the table
    assert mask[120, 80]  # the vessel hole is closed by the radius-5 closing


def test_min_component_and_closing_parameters_matter():
    hu, lungs = phantom()
    small = segment_slice(hu, ParenchymaParams(min_component_px=10))[0]
    assert small[95, 128]  # with a tiny minimum the trachea survives
    no_close = segment_slice(hu, ParenchymaParams(closing_radius=0))[0]
    assert not no_close[120, 80]  # without closing the vessel stays a hole


def test_volume_empty_slices_and_bad_input():
    hu, lungs = phantom()
    vol = np.stack([hu, np.full_like(hu, -1000), hu])
    seen = []
    res = segment_lungs(vol, progress=lambda i, n: seen.append(i))
    assert res.mask.shape == vol.shape and res.mask.dtype == bool
    assert not res.mask[1].any()  # all-air slice: empty, no error
    assert dice(res.mask[0], lungs) > 0.97 and len(res.thresholds) == 3
    assert seen[-1] == 3
    with pytest.raises(ValueError, match="3-D"):
        segment_lungs(hu)
    with pytest.raises(ValueError, match="2-D"):
        segment_slice(vol)
    with pytest.raises(InterruptedError):
        segment_lungs(vol, cancel=lambda: True)


def test_twin_lungs_are_found(twin_0001):
    """Against the twin's ground-truth lung mask (synthetic images)."""
    ks = np.arange(20, 125, 8)
    res = segment_lungs(twin_0001.hu[ks])
    scores = evaluate_against(twin_0001.lung_mask[ks], res.mask)
    assert scores["dice"] > 0.95, scores
    assert (res.thresholds > -800).all() and (res.thresholds < -200).all()


def test_segment_command_writes_npy_and_nifti(tmp_path, capsys):
    import nibabel as nib

    write_ct_series(tmp_path / "s", n_slices=4, rows=64, cols=64)
    out = tmp_path / "mask.npy"
    assert cli_main(["segment", str(tmp_path / "s"), "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    m = np.load(out, allow_pickle=False)
    assert m.shape == (4, 64, 64) and m.dtype == bool
    assert info["slices"] == 4 and len(info["thresholds_hu"]) == 4
    nii = tmp_path / "mask.nii.gz"
    assert cli_main(["segment", str(tmp_path / "s"), "--out", str(nii)]) == 0
    img = nib.load(str(nii))
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0).astype(bool), m)
    assert img.header.get_zooms() == pytest.approx((0.7, 0.7, 2.5))
    assert cli_main(["segment", str(tmp_path / "s"), "--out", str(tmp_path / "m.txt")]) == 1


@pytest.mark.parametrize("radius", [1, 2, 3, 5])
def test_separable_closing_equals_the_disk_closing(radius):
    from scipy import ndimage

    from lungviewer.imaging.parenchyma import closing_disk, disk

    rng = np.random.default_rng(radius)
    m = rng.random((3, 48, 40)) < 0.55
    q = 2 * radius + 1
    ref = np.stack([ndimage.binary_closing(np.pad(x, q, mode="edge"), structure=disk(radius))
                    [q:-q, q:-q] for x in m])
    np.testing.assert_array_equal(closing_disk(m, radius), ref)


def test_whole_volume_equals_per_slice(twin_0001):
    hu = twin_0001.hu[40:75]
    res = segment_lungs(hu, chunk=8)
    for k in range(0, len(hu), 3):
        mask, t = segment_slice(hu[k])
        np.testing.assert_array_equal(res.mask[k], mask)
        assert res.thresholds[k] == pytest.approx(t)
