"""CT-likeness figures (lungviewer.imaging.ctstats) on small phantoms built here: noise
spectra of white and smoothed noise, vessel calibres and fraction of drawn tubes, tissue
histograms of HU blocks, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from lungviewer.imaging import ctstats

SP = (2.0, 0.5, 0.5)  # (z, y, x) mm


def noise(sigma: float, shape=(6, 128, 128), blur_px: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    f = rng.normal(0.0, sigma, shape)
    if blur_px:
        f = ndimage.gaussian_filter(f, (0, blur_px, blur_px))
    return np.round(f).astype(np.int16), f


def tube_phantom(diameters_mm=(2.5, 2.5, 5.0, 5.0), nz: int = 6, size: int = 160):
    """A −850 HU "lung" box with tubes of ``diameters_mm`` (40 HU) along z, in air."""
    hu = np.full((nz, size, size), -1000, np.int16)
    lung = np.zeros(hu.shape, bool)
    lung[:, 20:140, 20:140] = True
    hu[lung] = -850
    yy, xx = np.mgrid[0:size, 0:size]
    drawn = np.zeros((size, size), bool)
    centres = [(50, 50), (50, 100), (100, 50), (100, 100)]
    for (cy, cx), d in zip(centres, diameters_mm):
        drawn |= np.hypot((yy - cy) * SP[1], (xx - cx) * SP[2]) <= d / 2
    hu[:, drawn] = 40
    return hu, lung, drawn


def test_white_noise_nps_is_flat_and_its_sigma_is_the_noise():
    hu, f = noise(20.0)
    body = np.ones(hu.shape, bool)
    r = ctstats.noise_power_spectrum(hu, SP, body, roi=32, n_rois=40, step=1)
    assert r["n_rois"] == 40
    assert r["sigma_hu"] == pytest.approx(f.std(), rel=0.10)
    assert r["nyquist"] == pytest.approx(1.0)  # 0.5 mm pixels
    assert 0.42 * r["nyquist"] < r["mean_freq"] < 0.6 * r["nyquist"]
    nps = np.asarray(r["nps"])[2:]  # flat: no band holds much more or less than the mean
    assert nps.min() > 0.6 * nps.mean() and nps.max() < 1.4 * nps.mean()
    # the integral of the 2-D NPS is the variance: white noise's NPS level is σ²·dx·dy
    assert nps.mean() == pytest.approx(f.var() * SP[1] * SP[2], rel=0.15)


def test_smoothed_noise_has_lower_mean_frequency_and_sigma():
    white, _ = noise(30.0)
    smooth, f = noise(60.0, blur_px=1.0)
    body = np.ones(white.shape, bool)
    rw = ctstats.noise_power_spectrum(white, SP, body, step=1)
    rs = ctstats.noise_power_spectrum(smooth, SP, body, step=1)
    assert rs["mean_freq"] < 0.6 * rw["mean_freq"]
    assert rs["peak_freq"] < rw["nyquist"] / 2
    assert rs["sigma_hu"] == pytest.approx(f.std(), rel=0.15)


def test_nps_keeps_uniform_squares_inside_the_body_only():
    hu, _ = noise(10.0, shape=(4, 128, 128))
    hu[:, :, 64:] += 400  # bone-bright half: mean outside −150..150, never kept
    hu[:, :, 32:48] -= 80  # a step edge (mean 0): structure, kept only if ranked wrongly
    hu[:, :, 48:64] += 80
    body = np.ones(hu.shape, bool)
    body[:, :32] = False  # the top rows lie outside the body
    r = ctstats.noise_power_spectrum(hu, SP, body, roi=32, n_rois=12, step=1)
    assert r["n_rois"] == 12  # 3 rows × 1 column × 4 slices of flat squares
    assert r["sigma_hu"] == pytest.approx(10.0, rel=0.15)
    none = ctstats.noise_power_spectrum(hu, SP, np.zeros(hu.shape, bool), step=1)
    assert none["n_rois"] == 0 and np.isnan(none["sigma_hu"]) and none["nps"] == []


def test_tube_calibres_fall_in_their_bins_and_fraction_matches_drawing():
    hu, lung, drawn = tube_phantom()
    r = ctstats.vessel_calibres(hu, lung, SP, step=1)
    edges = r["edges_mm"]
    assert edges[:7] == [0, 1, 2, 3, 4, 6, 10] and edges[7] == float("inf")
    assert sum(r["shares"]) == pytest.approx(1.0)
    shares = dict(zip(("0-1", "1-2", "2-3", "3-4", "4-6", "6-10", "10+"), r["shares"]))
    assert shares["2-3"] == pytest.approx(0.5, abs=0.1)
    assert shares["4-6"] == pytest.approx(0.5, abs=0.1)
    assert shares["0-1"] + shares["1-2"] + shares["6-10"] + shares["10+"] < 0.05
    # drawn share of the eroded lung (the tubes lie well inside it)
    er = ctstats.eroded_lung(lung)
    expected = drawn[er[0]].mean()
    assert ctstats.vessel_fraction(hu, lung) == pytest.approx(expected, rel=0.03)
    # tubes along z: about one ridge pixel per tube and slice
    lung_ml = lung.sum() * np.prod(SP) / 1000
    assert r["skeleton_mm_per_ml"] == pytest.approx(4 * 6 * 0.5 / lung_ml, rel=0.1)


def test_in_plane_bar_gives_its_width_and_length():
    hu = np.full((2, 200, 200), -850, np.int16)
    lung = np.ones(hu.shape, bool)
    hu[:, 98:103, 40:160] = 50  # 5 px = 2.5 mm wide, 120 px = 60 mm long
    r = ctstats.vessel_calibres(hu, lung, SP, step=1)
    assert r["median_mm"] == pytest.approx(2.5, abs=0.01)
    lung_ml = lung.sum() * np.prod(SP) / 1000
    assert r["skeleton_mm_per_ml"] * lung_ml / 2 == pytest.approx(60.0, rel=0.1)


def test_the_eroded_rim_does_not_count_as_vessel():
    hu = np.full((2, 64, 64), -850, np.int16)
    lung = np.zeros(hu.shape, bool)
    lung[:, 10:54, 10:54] = True
    hu[:, 10:12, 10:54] = 0  # a bright pleural band on the mask's edge
    assert ctstats.vessel_fraction(hu, lung) == 0.0
    assert ctstats.vessel_calibres(hu, lung, SP)["ridge_pixels"] == 0
    assert np.isnan(ctstats.vessel_calibres(hu, lung, SP)["median_mm"])


def test_tissue_histograms_put_blocks_in_their_classes():
    hu = np.full((4, 96, 96), -1000, np.int16)
    body = np.zeros(hu.shape, bool)
    body[:, 8:88, 8:88] = True
    hu[body] = 40  # muscle
    lung = np.zeros(hu.shape, bool)
    lung[:, 16:48, 16:80] = True
    hu[lung] = -850
    hu[:, 56:72, 16:40] = 700  # bone
    hu[:, 56:72, 48:80] = -100  # fat
    r = ctstats.tissue_histograms(hu, lung, body, step=1)
    json.dumps(r)  # plain Python
    c = r["classes"]
    assert c["bone"]["median_hu"] == 700 and c["fat"]["median_hu"] == -100
    assert c["lung"]["median_hu"] == -850 and c["soft tissue"]["median_hu"] == 40
    n_body = body.sum()
    assert c["bone"]["share"] == pytest.approx(4 * 16 * 24 / n_body)
    assert c["fat"]["share"] == pytest.approx(4 * 16 * 32 / n_body)
    assert c["lung"]["share"] == pytest.approx(lung.sum() / n_body)
    assert c["vessel"]["voxels"] == 0
    edges = np.asarray(r["bin_edges"])
    assert edges[0] == -1100 and edges[-1] == 1500 and np.allclose(np.diff(edges), 10)
    for name in ("lung", "soft tissue", "fat", "bone"):
        assert np.sum(np.asarray(c[name]["density"]) * 10) == pytest.approx(1.0)
    bone = np.asarray(c["bone"]["density"])
    assert edges[np.argmax(bone)] == 700
    # the default body (largest bright component, holes filled) is the drawn one here
    r2 = ctstats.tissue_histograms(hu, lung, step=1)
    assert r2["body_voxels"] == n_body


def test_histogram_distance_is_the_shift_in_hu():
    edges = ctstats.hu_bin_edges()
    a = np.zeros(len(edges) - 1)
    b = np.zeros(len(edges) - 1)
    a[50], b[58] = 1.0, 1.0  # 80 HU apart
    assert ctstats.histogram_distance(a, b, edges) == pytest.approx(80.0)
    assert ctstats.histogram_distance(a, a, edges) == 0.0
    assert np.isnan(ctstats.histogram_distance(a, np.zeros_like(a), edges))
    x = {"bin_edges": edges.tolist(), "classes": {"fat": {"density": a.tolist()}}}
    y = {"bin_edges": edges.tolist(), "classes": {"fat": {"density": b.tolist()}}}
    assert ctstats.tissue_distances(x, y) == {"fat": pytest.approx(80.0)}


def test_bad_input_raises_clear_value_errors():
    hu = np.zeros((3, 32, 32), np.int16)
    lung = np.ones(hu.shape, bool)
    with pytest.raises(ValueError, match="3-D"):
        ctstats.vessel_fraction(hu[0], lung[0])
    with pytest.raises(ValueError, match="lung_mask has shape"):
        ctstats.vessel_calibres(hu, lung[:2], SP)
    with pytest.raises(ValueError, match="body_mask has shape"):
        ctstats.tissue_histograms(hu, lung, np.ones((3, 32, 31), bool))
    with pytest.raises(ValueError, match="spacing"):
        ctstats.vessel_calibres(hu, lung, (1.0, 0.5))
    with pytest.raises(ValueError, match="spacing"):
        ctstats.noise_power_spectrum(hu, (1.0, 0.0, 0.5))
    with pytest.raises(ValueError, match="roi"):
        ctstats.noise_power_spectrum(hu, SP, roi=64)
    with pytest.raises(ValueError, match="step"):
        ctstats.tissue_histograms(hu, lung, step=0)
    with pytest.raises(ValueError, match="bins"):
        ctstats.histogram_distance([1, 2], [1, 2, 3], [0, 1, 2])
