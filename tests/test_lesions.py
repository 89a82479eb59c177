"""One finding per lesion, sized by its own segmentation (reading/lesions.py); calibration
and operating points of the findings (cad/training/calibration.py); series the findings
refuse; the study session's operating point and the box's one probability."""

from __future__ import annotations

import numpy as np
import pytest

from lungviewer.cad.findings import CadInputError, Finding, calibrated, check_cad_input
from lungviewer.reading.lesions import MASS_MM, finding_at, size_findings
from lungviewer.study.volume import Volume

SPACING = (1.25, 0.7, 0.7)


def _chest(mass_mm: float = 50.0, seed: int = 0):
    """Lung (−850 HU, noise) in soft tissue: a lobulated mass (three overlapping balls
    spanning ``mass_mm``), two 8 mm nodules 16 mm apart, and vessels (3 mm tubes)."""
    rng = np.random.default_rng(seed)
    shape = (72, 200, 200)
    z, y, x = np.indices(shape, dtype=np.float32)
    zm, ym, xm = z * SPACING[0], y * SPACING[1], x * SPACING[2]
    lung = (y > 8) & (y < 192) & (x > 8) & (x < 192) & (z > 2) & (z < 69)
    hu = np.where(lung, -850.0, 40.0).astype(np.float32)
    r = mass_mm / 4.0
    mass = np.zeros(shape, bool)
    for dz, dy in ((-0.8, -1.0), (0.0, 0.0), (0.8, 1.0)):  # three lobes along a diagonal
        mass |= ((zm - 45 - dz * r) ** 2 + (ym - 50 - dy * r) ** 2 + (xm - 50) ** 2
                 <= (1.25 * r) ** 2)
    nod = np.zeros(shape, bool)
    for cy in (100.0, 116.0):
        nod |= (zm - 45) ** 2 + (ym - cy) ** 2 + (xm - 110) ** 2 <= 4.0 ** 2
    tube = (((ym - 30) ** 2 + (xm - 110) ** 2 <= 1.5 ** 2)
            | ((zm - 20) ** 2 + (ym - 120) ** 2 <= 1.5 ** 2))
    hu[(mass | nod | tube) & lung] = 30.0
    hu += rng.normal(0, 12, shape).astype(np.float32)
    truth = {"mass_centre": np.array([45.0, 50.0, 50.0]) / SPACING,
             "nodules": [np.array([45.0, cy, 110.0]) / SPACING for cy in (100.0, 116.0)],
             "mass_long_mm": float(np.ptp(np.argwhere(mass[36])[:, 0])) * SPACING[1]}
    return Volume(hu.astype(np.int16), SPACING, np.column_stack(
        [np.zeros(shape[0]), np.zeros(shape[0]), np.arange(shape[0]) * SPACING[0]])), lung, truth


@pytest.fixture(scope="module")
def engine():
    from lungviewer.cad.engine import CadEngine

    return CadEngine.load(device="cpu")


def test_a_mass_is_one_finding_with_its_measured_size(engine):
    """A 5 cm lobulated mass gave several marks of the blob filter's largest scale; now it
    is one finding, a mass, sized by its segmentation within 50 % of the truth; two nodules
    16 mm apart stay two findings; vessels are not enlarged into lesions."""
    vol, lung, truth = _chest()
    raw = engine.find_findings(vol, lung)
    sp = np.asarray(SPACING)

    def near(fs, c, mm):
        return [f for f in fs if np.linalg.norm((np.array([f.slice, f.row, f.col]) - c) * sp)
                < mm]

    assert len(near(raw, truth["mass_centre"], 30.0)) >= 2  # the filter splits the mass
    fs = size_findings(vol.hu, vol.spacing, lung, raw)
    on_mass = near(fs, truth["mass_centre"], 30.0)
    assert len(on_mass) == 1, [f.as_dict() for f in on_mass]
    m = on_mass[0]
    assert m.kind == "mass" and m.sized and m.merged >= 2
    assert abs(m.long_axis_mm - truth["mass_long_mm"]) <= 0.5 * truth["mass_long_mm"]
    assert m.long_axis_mm > MASS_MM and m.volume_mm3 > 10_000
    z0, z1, y0, y1, x0, x1 = m.extent
    assert z0 <= truth["mass_centre"][0] < z1 and y0 <= truth["mass_centre"][1] < y1
    for c in truth["nodules"]:
        hits = near(fs, c, 6.0)
        assert len(hits) == 1 and hits[0].kind == "nodule"
        assert 6.0 <= hits[0].diameter_mm <= 11.0  # measured, not the filter's scale
    # the findings keep their order (most likely first) and each centre lies in its extent
    assert [f.score for f in fs] == sorted((f.score for f in fs), reverse=True)
    for f in fs:
        if f.sized:
            assert f.extent[0] <= f.slice < f.extent[1]
    # a box on the mass finds that finding; one beside everything finds none
    k, r, c = m.slice, m.row, m.col
    assert finding_at(fs, k, (r - 5, c - 5, r + 5, c + 5)) is m
    assert finding_at(fs, 2, (190, 190, 195, 195)) is None


def test_a_blob_touching_a_lesion_merges_into_it():
    """A later blob beyond the segmented ones (``sized``) whose centre lies outside an
    earlier lesion's segmentation but within its own radius of it (a lobule, the rim of a
    mass) is that lesion; one farther away than its radius is a finding of its own."""
    sp = (1.0, 0.7, 0.7)
    z, y, x = np.indices((60, 120, 120), dtype=np.float32)
    d = np.sqrt(((z - 30) * sp[0]) ** 2 + ((y - 60) * sp[1]) ** 2 + ((x - 60) * sp[2]) ** 2)
    hu = np.where(d <= 12.0, 30.0, -850.0).astype(np.int16)  # a 24 mm ball
    lung = np.ones(hu.shape, bool)

    def at(mm_from_centre: float, diameter: float, score: float) -> Finding:
        return Finding(30, 60, int(round(60 + mm_from_centre / sp[2])), diameter, score)

    first, rim, apart = at(0.0, 13.1, 0.9), at(15.0, 9.3, 0.5), at(21.0, 9.3, 0.4)
    out = size_findings(hu, sp, lung, [first, rim, apart], sized=1)
    assert out[0] is first and first.sized and first.merged == 2  # itself and the rim blob
    assert rim not in out and apart in out  # 9 mm out: more than its 4.65 mm radius


def test_sized_findings_are_limited_in_number():
    """Only the first ``sized`` findings are segmented (the rest keep the filter's scale);
    nothing there: the finding stays unsized instead of failing."""
    sp = (2.5, 0.7, 0.7)
    z, y, x = np.indices((12, 40, 40), dtype=np.float32)
    ball = ((z - 5) * sp[0]) ** 2 + ((y - 20) * sp[1]) ** 2 + ((x - 20) * sp[2]) ** 2 <= 16.0
    hu = np.where(ball, 30, -850).astype(np.int16)
    lung = np.ones(hu.shape, bool)
    f = Finding(5, 20, 20, 6.0, 0.1)
    assert size_findings(hu, sp, lung, [f], sized=0) == [f] and not f.sized
    assert f.diameter_mm == 6.0
    assert size_findings(hu, sp, lung, [f]) == [f] and f.sized  # the same ball, measured
    g = Finding(5, 20, 20, 6.0, 0.1)
    empty = np.full_like(hu, -850)
    assert size_findings(empty, sp, lung, [g]) == [g] and not g.sized and g.diameter_mm == 6.0


def test_too_few_slices_or_gaps_get_no_findings(engine):
    hu = np.full((5, 64, 64), -850, np.int16)
    vol = Volume(hu, (2.5, 0.7, 0.7), np.column_stack([np.zeros(5), np.zeros(5),
                                                       np.arange(5) * 2.5]))
    with pytest.raises(CadInputError, match="too few slices"):
        engine.find_findings(vol, np.ones(hu.shape, bool))
    z = np.arange(20) * 2.5
    z[10:] += 10.0  # four slices missing
    hu = np.full((20, 64, 64), -850, np.int16)
    vol = Volume(hu, (2.5, 0.7, 0.7), np.column_stack([np.zeros(20), np.zeros(20), z]))
    with pytest.raises(CadInputError, match="gaps between slices"):
        check_cad_input(vol)


def test_calibration_fits_and_finds_operating_points():
    """Platt scaling recovers a known calibration; the ECE of calibrated probabilities is
    small and of overconfident ones large; the operating points leave about r false
    positives per scan."""
    from lungviewer.cad.training.calibration import (FindingTable, calibrate, ece, fit_platt,
                                                     operating_points, platt)

    rng = np.random.default_rng(0)
    ev = rng.normal(0, 3, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.8 * ev - 1.0)))).astype(int)
    a, b = fit_platt(ev, y)
    assert a == pytest.approx(0.8, abs=0.05) and b == pytest.approx(-1.0, abs=0.08)
    assert ece(platt(ev, a, b), y) < 0.02
    assert ece(platt(ev, 3 * a, b + 3), y) > 0.1
    p = platt(ev, a, b)
    ops = operating_points(p, y, n_scans=1000)
    for r in ("1", "2", "4"):
        assert abs(int(((p >= ops[r]) & (y == 0)).sum()) - 1000 * int(r)) <= 1
    assert ops["1"] > ops["2"] > ops["4"]
    with pytest.raises(ValueError):
        fit_platt(ev, np.ones_like(y))
    # the whole calibration on a table of two kinds of volumes, cross-fitted by fold
    g = np.array([f"hybrid-H{i % 3}-{i % 6}" if i % 2 else f"realistic-P{i % 4}"
                  for i in range(20000)])
    nod = np.where(y == 1, np.arange(20000), -1)
    t = FindingTable(g, ev, y, nod, {k: int(((g == k) & (y == 1)).sum()) for k in set(g)})
    folds = [[k for k in set(g) if k.startswith(f"hybrid-H{h}")] for h in range(3)] + [
        [k for k in set(g) if k.startswith("realistic")]]
    cal = calibrate(t, folds)
    assert cal["method"] == "platt" and cal["ece_cross_fitted"] < 0.03
    assert set(cal["per_kind"]) == {"hybrid-H0", "hybrid-H1", "hybrid-H2", "realistic"}
    assert cal["operating_points"]["1"] > cal["operating_points"]["4"]
    # the Platt fit and the thresholds are the real-CT (hybrid) volumes' alone
    hyb = np.char.startswith(g, "hybrid")
    assert (cal["a"], cal["b"]) == fit_platt(ev[hyb], y[hyb])
    assert cal["fit_on"] == "hybrid" and cal["scans"] == len(set(g[hyb]))
    assert cal["operating_points"] == operating_points(platt(ev[hyb], cal["a"], cal["b"]),
                                                       y[hyb], n_scans=len(set(g[hyb])))
    assert calibrated(np.array([0.0]), {"method": "platt", "a": a, "b": b})[0] == \
        pytest.approx(platt(np.array([0.0]), a, b)[0])
    with pytest.raises(ValueError):
        calibrated(np.array([0.0]), {"method": "isotonic"})


class _Engine:
    operating_points = {1: 0.8, 2: 0.6, 4: 0.3}


def test_the_session_shows_findings_at_its_operating_point():
    from lungviewer.session import DEFAULT_OPERATING_POINT, StudySession

    s = StudySession(autosave=False)
    assert s.operating_point == DEFAULT_OPERATING_POINT == 2 and s.threshold is None
    s.engine = _Engine()
    s.findings = [Finding(1, 1, 1, 5.0, p) for p in (0.9, 0.7, 0.5, 0.2)]
    assert s.threshold == 0.6 and s.finding_counts() == (2, 2)
    s.set_operating_point(4)
    assert s.finding_counts() == (3, 1) and s.is_shown(s.findings[2])
    with pytest.raises(ValueError, match="not one of"):
        s.set_operating_point(3)


def test_a_box_shows_the_probability_of_the_finding_it_lies_on():
    from lungviewer.session import StudySession

    class Res:
        nodule_prob = 0.99
        nodule_source = ""

    s = StudySession(autosave=False)
    res = Res()
    s._fuse_box(res, 5, (0, 0, 10, 10))
    assert res.nodule_prob is None and "not computed" in res.nodule_source
    s.engine = _Engine()
    s.findings = [Finding(5, 20, 20, 8.0, 0.42, extent=(4, 7, 15, 26, 15, 26))]
    s._fuse_box(res, 5, (16, 16, 24, 24))
    assert res.nodule_prob == pytest.approx(0.42) and "below the operating point" in \
        res.nodule_source
    s._fuse_box(res, 5, (100, 100, 110, 110))
    assert res.nodule_prob is None and res.nodule_source == "no CAD finding here"


def test_the_disease_head_is_named_only_where_it_beats_the_base_rate():
    from lungviewer.cad.engine import CadEngine

    def assess(acc, lo, base):
        e = CadEngine.__new__(CadEngine)
        e.manifest = {"metrics": {"disease.accuracy": {"value": acc, "ci95": [lo, acc + 0.05],
                                                       "n": 200},
                                  "disease.majority_baseline": {"value": base}}}
        return e.disease_assessment()

    weak = assess(0.58, 0.517, 0.551)  # the shipped head: the baseline inside the CI
    assert not weak["reliable"] and "not better than the base rate" in weak["why"]
    assert assess(0.80, 0.72, 0.55)["reliable"]
    assert not CadEngine.disease_assessment(type("E", (), {"manifest": {}})())["reliable"]
