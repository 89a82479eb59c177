"""CAD findings: 3-D blob candidates (blobs vs tubes), the plane patches, the findings list and
the slice ranking read off it."""

from __future__ import annotations

import numpy as np
import pytest

from lungviewer.cad.findings import Finding, plane_patches, slice_ranking
from lungviewer.imaging.blobs import find_blobs

SPACING = (2.5, 0.625, 0.625)


def _phantom(pad_corner: bool = False):
    """A block of lung (−850 HU) in soft tissue with a 9 mm sphere, a 3 mm vessel along z
    and a 6 mm sphere; (z, y, x) = (40, 160, 160) at 2.5 × 0.625 × 0.625 mm."""
    rng = np.random.default_rng(0)
    shape = (40, 160, 160)
    z, y, x = np.indices(shape, dtype=float)
    zm, ym, xm = z * SPACING[0], y * SPACING[1], x * SPACING[2]
    hu = np.full(shape, 40.0)
    lung = (y > 10) & (y < 150) & (x > 10) & (x < 150) & (z > 2) & (z < 37)
    hu[lung] = -850
    sphere = (zm - 50) ** 2 + (ym - 40) ** 2 + (xm - 40) ** 2 <= 4.5 ** 2
    tube = (ym - 60) ** 2 + (xm - 30) ** 2 <= 1.5 ** 2
    small = (zm - 50) ** 2 + (ym - 70) ** 2 + (xm - 70) ** 2 <= 3.0 ** 2
    hu[sphere | small | (tube & lung)] = 30
    hu += rng.normal(0, 15, shape)
    if pad_corner:  # the reconstruction circle's padding beside the small sphere
        hu[:, 90:, 123:] = -2048
    return hu.astype(np.int16), lung


def test_blobs_find_spheres_not_tubes():
    hu, lung = _phantom()
    b = find_blobs(hu, lung, SPACING)
    assert len(b) > 0
    sp = np.asarray(SPACING)
    sphere_c = np.array([50, 40, 40]) / sp
    small_c = np.array([50, 70, 70]) / sp
    order = np.argsort(-b.dot_li)
    top2 = b.centre[order[:2]]
    d_big = np.linalg.norm((top2 - sphere_c) * sp, axis=1).min()
    d_small = np.linalg.norm((top2 - small_c) * sp, axis=1).min()
    assert d_big < 3.0 and d_small < 3.0, (top2, b.dot_li[order[:5]])
    i = np.argmin(np.linalg.norm((b.centre - sphere_c) * sp, axis=1))
    assert 5.0 < b.diameter_mm[i] < 14.0  # a 9 mm sphere
    assert b.dot[i] > 0.4
    # candidates on the vessel are tube-like: weaker dot evidence than either sphere
    on_tube = np.hypot(b.centre[:, 1] * sp[1] - 60, b.centre[:, 2] * sp[2] - 30) < 2.0
    if on_tube.any():
        assert b.dot_li[on_tube].max() < b.dot_li[order[1]]


def test_blobs_drop_the_reconstruction_circle_edge_and_bad_input():
    hu, lung = _phantom(pad_corner=True)
    b = find_blobs(hu, lung, SPACING, fov_margin_mm=8.0)
    sp = np.asarray(SPACING)
    # the padding starts 7 mm (x) from the small sphere: it must not be a candidate
    small_c = np.array([50, 70, 70]) / sp
    d = np.linalg.norm((b.centre - small_c) * sp, axis=1)
    assert (d > 3.0).all()
    sphere_c = np.array([50, 40, 40]) / sp
    assert np.linalg.norm((b.centre - sphere_c) * sp, axis=1).min() < 3.0
    with pytest.raises(ValueError, match="same"):
        find_blobs(hu, lung[:-1], SPACING)
    with pytest.raises(ValueError, match="spacing"):
        find_blobs(hu, lung, (0.0, 1.0, 1.0))
    assert len(find_blobs(hu, np.zeros_like(lung), SPACING)) == 0


def test_plane_patches_cut_the_three_planes_through_the_centre():
    vol = np.full((30, 80, 80), -1000, np.int16)
    vol[15, 40, 40:60] = 400  # a line along +x from the centre, on one slice
    vol[15:25, 40, 40] = 400  # and along +z
    p = plane_patches(vol, (2.5, 0.625, 0.625), np.array([[15, 40, 40]]))
    assert p.shape == (1, 3, 50, 50)
    ax, cor, sag = p[0]
    assert ax[25, 26:44].min() > 0.9 and ax[:20].max() < 0.01  # +x line on the axial patch
    # coronal (rows z at 0.625 mm: 4 rows a slice): the +z line goes down from the centre
    assert cor[26:40, 25].min() > 0.5 and cor[:20, 25].max() < 0.01
    assert cor[25, 30:44].min() > 0.5  # and the +x line across
    assert sag[26:40, 25].min() > 0.5 and sag[25, 30:44].max() < 0.3  # no x line there
    # off the volume: air
    q = plane_patches(vol, (2.5, 0.625, 0.625), np.array([[0, 0, 0]]))
    assert q[0, 0, :20, :20].max() == 0.0


def test_slice_ranking_is_read_off_the_findings():
    fs = [Finding(10, 50, 60, 8.0, 0.9), Finding(30, 70, 80, 35.0, 0.6, "mass",
                                                  extent=(28, 33, 60, 80, 70, 90)),
          Finding(11, 52, 61, 4.0, 0.7)]
    r = slice_ranking(fs, 40, (2.5, 0.7, 0.7))
    assert r.scores[10] == pytest.approx(0.9)
    assert r.scores[9] < 0.9 and r.scores[9] > 0.8  # within the 8 mm nodule's extent
    assert r.scores[11] > 0.8  # the better finding covers slice 11 too
    assert r.scores[30] == pytest.approx(0.6) and r.scores[0] == 0.0
    # a measured finding covers the slices of its segmentation (28..32), not its diameter's
    assert r.scores[28] > 0 and r.scores[32] > 0 and r.scores[27] == 0 and r.scores[33] == 0
    assert r.label(10) == "nodule" and r.label(30) == "mass" and r.label(0) == "no finding"
    assert tuple(r.best[10]) == (50, 60) and tuple(r.best[30]) == (70, 80)
    order = r.ranking()
    assert order[0] == 10 and order[1] == 30  # distinct findings first
    assert slice_ranking([], 5, (1, 1, 1)).scores.sum() == 0


def test_finding_as_dict():
    d = Finding(3, 4, 5, 6.04, 0.123456).as_dict(0.2)
    assert d == {"slice": 3, "row": 4, "col": 5, "diameter_mm": 6.0, "probability": 0.1235,
                 "shown": False, "kind": "nodule", "measured": False}
    f = Finding(3, 4, 5, 31.0, 0.9, "mass", long_axis_mm=40.0, short_axis_mm=22.0,
                volume_mm3=9000.0, extent=(1, 6, 0, 9, 0, 9), merged=4, malignancy=4.2)
    d = f.as_dict(0.2)
    assert d["shown"] and d["measured"] and d["kind"] == "mass" and d["candidates"] == 4
    assert d["long_axis_mm"] == 40.0 and d["extent"] == [1, 6, 0, 9, 0, 9]
    assert d["malignancy_expected"] == 4.2
    assert Finding(0, 0, 0, 1.0, 0.01).as_dict(None)["shown"]  # no operating point: all


@pytest.fixture(scope="module")
def engine():
    from lungviewer.cad.engine import CadEngine

    return CadEngine.load(device="cpu")


def test_find_findings_on_the_twin(twin_0001, engine):
    """On the whole demo twin, as the viewer scans it: ranked findings with valid fields,
    the twin's nodule among the top three, progress to the end, cancel raises Cancelled."""
    from lungviewer.cad.findings import find_findings
    from lungviewer.cancel import Cancelled
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.study.volume import Volume

    kc, rc, cc = twin_0001.nodules[0].centre
    hu = twin_0001.hu
    sub = Volume(hu, twin_0001.spacing, np.asarray(twin_0001.positions))
    mask = segment_lungs(hu).mask
    calls = []
    fs = find_findings(sub, mask, engine.models, progress=lambda d, t: calls.append((d, t)),
                       max_findings=20)
    assert 0 < len(fs) <= 20
    assert calls and calls[-1][0] == calls[-1][1]
    scores = [f.score for f in fs]
    assert scores == sorted(scores, reverse=True)
    for f in fs:
        assert 0 <= f.slice < hu.shape[0] and 0 <= f.row < hu.shape[1] and 0 <= f.col < hu.shape[2]
        assert 0.0 <= f.score <= 1.0 and f.kind == "nodule" and f.diameter_mm > 0
    # the twin's nodule is among the top findings
    sp = np.asarray(twin_0001.spacing)
    d = [np.linalg.norm((np.array([f.slice, f.row, f.col]) - (kc, rc, cc)) * sp)
         for f in fs[:3]]
    assert min(d) < 10.0, d
    with pytest.raises(Cancelled):
        find_findings(sub, mask, engine.models, cancel=lambda: True)
    with pytest.raises(ValueError, match="does not match"):
        find_findings(sub, mask[:-1], engine.models)


def test_one_blob_is_one_finding(engine):
    """A small blob on two slices gives one finding, not one per slice; no lungs, none."""
    from lungviewer.cad.findings import find_findings
    from lungviewer.study.volume import Volume

    hu = np.full((12, 64, 64), -900, np.int16)
    hu[5:7, 30:35, 30:35] = 40
    vol = Volume(hu, (2.5, 0.7, 0.7), np.zeros((12, 3)))
    lungs = np.ones(hu.shape, bool)
    fs = find_findings(vol, lungs, engine.models)
    sp = np.asarray(vol.spacing)
    pts = np.array([[f.slice, f.row, f.col] for f in fs], float) * sp
    assert len(fs) >= 1
    near = np.linalg.norm(pts - np.array([5.5, 32, 32]) * sp, axis=1) < 5.0
    assert near.sum() == 1
    assert find_findings(vol, np.zeros(hu.shape, bool), engine.models) == []


def test_strong_findings_keep_their_order_and_distinct_scores():
    """With the network's logit weighted up (mix 1, 2: evidence up to ±100 and more), the
    score no longer saturates at 1.0 — the old squash gave equal scores above an evidence
    of 60 and the findings' order among them fell back to the candidates' order."""
    from lungviewer.cad.findings import combine, squash

    n = 5
    head = np.zeros((n, 3))
    head[:, 1] = 3.0  # "some nodule"
    fpr = np.array([8.0, 12.0, 10.0, 14.0, -5.0])
    ev, score = combine(head, np.zeros((n, 1)), np.zeros(n), fpr, (1.0, 2.0))
    assert (ev[:4] > 60).all()  # the old score: all four 0.9999997
    assert len(set(np.round(squash(ev[:4]), 12))) == 1
    assert list(np.argsort(-score, kind="stable")) == [3, 1, 2, 0, 4]
    assert len(set(score.tolist())) == n and (score < 1.0).all() and score[4] < 0.5
    # without the network the score is the hand-set evidence squashed, as before
    ev0, score0 = combine(head, np.zeros((n, 1)), np.zeros(n))
    np.testing.assert_allclose(score0, squash(ev0))
