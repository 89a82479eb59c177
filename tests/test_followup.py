"""Follow-up reading (lungviewer/followup/): prior checks, registration, point mapping,
nodule matching, growth, VDT, Lung-RADS v2022 follow-up rules, the compare command, on a
small SYNTHETIC twin follow-up pair with known ground truth."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lungviewer.followup.compare import (
    Comparison,
    Nodule,
    assess_pair,
    match_nodules,
    vdt_days,
    vdt_untrusted,
)
from lungviewer.followup.priors import PriorError, StudyInfo, check_prior
from lungviewer.followup.registration import Grid, Registration, RegistrationError, register
from lungviewer.reading.lungrads import lung_rads_followup

D = dt.date


def info(pid="P1", date=D(2026, 1, 10), modality="CT", part="CHEST", series="1.2"):
    return StudyInfo(pid, date, modality, part, series_uid=series)


# --------------------------------------------------------------------------- prior checks
def test_prior_checks_interval_and_errors():
    assert check_prior(info(), info(date=D(2025, 1, 10), series="1.1")) == 365
    with pytest.raises(PriorError, match="another patient"):
        check_prior(info(), info(pid="P2", date=D(2025, 1, 10), series="1.1"))
    # an explicit confirmation lets a mismatch through
    assert check_prior(info(), info(pid="P2", date=D(2025, 1, 10), series="1.1"),
                       confirm_other_patient=True) == 365
    with pytest.raises(PriorError, match="newer"):
        check_prior(info(), info(date=D(2026, 6, 1), series="1.1"))
    with pytest.raises(PriorError, match="no StudyDate"):
        check_prior(info(), info(date=None, series="1.1"))
    with pytest.raises(PriorError, match="no StudyDate"):
        check_prior(info(date=None), info(date=D(2025, 1, 10), series="1.1"))
    with pytest.raises(PriorError, match="MR series, not CT"):
        check_prior(info(), info(modality="MR", date=D(2025, 1, 10), series="1.1"))
    with pytest.raises(PriorError, match="not of the chest"):
        check_prior(info(), info(part="HEAD", date=D(2025, 1, 10), series="1.1"))
    with pytest.raises(PriorError, match="not a chest CT"):
        check_prior(info(), info(date=D(2025, 1, 10), series="1.1"), prior_lung_ml=20.0)
    with pytest.raises(PriorError, match="itself"):
        check_prior(info(), info(date=D(2025, 1, 10)))


# --------------------------------------------------------------------------- Lung-RADS
def test_lung_rads_followup_rules():
    new = [lung_rads_followup("solid", d) for d in (3.0, 5.0, 7.0, 9.0)]
    assert [r.category for r in new] == ["2", "3", "4A", "4B"]
    assert "new-nodule" in new[0].rule
    grow = lung_rads_followup("solid", 7.0, 5.0, 300)
    assert grow.category == "4A" and "growth rule" in grow.rule
    assert lung_rads_followup("solid", 9.0, 7.0, 300).category == "4B"
    slow = lung_rads_followup("solid", 6.0, 4.0, 730)
    assert slow.category == "4B" and "slow-growth" in slow.rule
    # +1.5 mm is not growth; a size-4A nodule unchanged for a year is 2
    same = lung_rads_followup("solid", 10.0, 8.5, 365)
    assert same.category == "2" and "unchanged" in same.rule
    assert lung_rads_followup("solid", 10.0, 9.8, 30).category == "4A"  # < 3 months
    assert lung_rads_followup("solid", 5.0, resolved=True).category == "1"
    assert lung_rads_followup("ground-glass", 12.0).category == "2"
    assert lung_rads_followup("part-solid", 8.0, None, None, 5.0).category == "4B"


# --------------------------------------------------------------------------- VDT, status
def test_vdt_formula_and_reasons():
    v1 = 100.0
    v2 = v1 * 2 ** (365 / 300)
    assert vdt_days(v1, v2, 365) == pytest.approx(300)
    assert vdt_days(v1, 90.0, 365) is None
    assert vdt_untrusted(v1, v2, 365, (1.0, 1.25)) == []
    why = vdt_untrusted(v1, 90.0, 20, (3.0, 1.0))
    assert len(why) == 3 and any("no growth" in w for w in why)
    assert any("30 days" in w for w in why) and any("2.5 mm" in w for w in why)
    p = assess_pair(Nodule(0, 0, 0, 9.0, v2), Nodule(0, 0, 0, 7.0, v1), 365, (1.0, 1.0))
    assert p.status == "growing" and p.vdt_trusted and p.vdt_days == pytest.approx(300)
    assert p.diameter_change_mm == 2.0 and p.lung_rads["category"] == "4B"
    p2 = assess_pair(Nodule(0, 0, 0, 6.0, 70.0), Nodule(0, 0, 0, 7.0, 100.0), 365)
    assert p2.status == "shrinking" and not p2.vdt_trusted
    assert assess_pair(Nodule(0, 0, 0, 6.0, 110.0), Nodule(0, 0, 0, 6.0, 100.0), 365).status \
        == "stable"


# --------------------------------------------------------------------------- matching
def _grid(shape=(50, 100, 100)):
    return Grid((0.0, 0.0, 0.0), (2.0, 1.0, 1.0), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)), shape)


def test_matching_one_to_one_with_gate():
    shift = np.array([5.0, 0.0, 0.0])  # prior = current + 5 mm in x (col)
    reg = Registration(np.eye(3), shift, _grid(), _grid())
    cur = [Nodule(10, 50, 50, 6.0), Nodule(10, 50, 58, 6.0), Nodule(30, 20, 20, 5.0)]
    # prior: the first two shifted by +5 cols; one far away (resolved)
    pri = [Nodule(10, 50, 63, 6.0), Nodule(10, 50, 55, 6.0), Nodule(40, 90, 90, 5.0)]
    pairs = match_nodules(cur, pri, reg)
    got = {(i, j) for i, j, _ in pairs}
    assert (0, 1) in got and (1, 0) in got  # through the transform, not the nearest voxel
    assert (2, None) in got and (None, 2) in got
    assert all(d is None or d < 1e-6 for _, _, d in pairs)
    # mapping round trip and the manual correction
    p = np.array([12.0, 40.0, 30.0])
    assert np.allclose(reg.prior_to_current(reg.current_to_prior(p)), p)
    fixed = reg.corrected((10, 50, 50), (10, 52, 50))
    assert np.allclose(fixed.current_to_prior((10, 50, 50)), (10, 52, 50))
    assert fixed.corrections == 1


# --------------------------------------------------------------------------- twin pair
@pytest.fixture(scope="module")
def pair():
    """A small SYNTHETIC follow-up pair from the LIDC-IDRI-0001 twin (36 slices, 256²)."""
    from lungviewer.followup.registration import lung_mask_of
    from lungviewer.study.volume import Volume
    from lungviewer.synth.followup import make_followup_pair
    from lungviewer.synth.twin import (
        build_model,
        find_scan,
        render_region,
        twin_positions,
        twin_spacing,
    )

    m = build_model(find_scan("LIDC-IDRI-0001"))
    ks = np.arange(50, 82)
    # the chest's middle (rows 72..440, cols 48..464) of 32 slices, every second pixel
    hu = render_region(m, (66, 256, 256), (32, 368, 416))
    hu = np.ascontiguousarray(hu[:, ::2, ::2])
    sp = twin_spacing(m.scan)
    pos = twin_positions(m.scan)[ks].copy()
    pos[:, 0] += 48 * sp[2]
    pos[:, 1] += 72 * sp[1]
    vol = Volume(hu=hu, spacing=(sp[0], sp[1] * 2, sp[2] * 2), positions=pos,
                 patient_id="LIDC-IDRI-0001")
    return make_followup_pair(vol, lung_mask_of(hu, vol.spacing), seed=3,
                              current_spacing=(2.0, 1.6, 1.6), rotation_deg=(2.0, -1.5, 3.0),
                              shift_mm=(6.0, -8.0, 12.0), lung_scale=1.10)


def test_registration_recovers_the_constructed_motion(pair):
    from lungviewer.synth.followup import landmark_errors

    reg = register(pair.current, pair.prior)
    err = landmark_errors(reg, pair)
    assert np.percentile(err, 95) <= 3.0, err.max()
    assert reg.dice > 0.9
    assert reg.scale == pytest.approx(abs(np.linalg.det(pair.truth.matrix)), rel=0.05)
    d = reg.as_dict()
    assert d["seconds"] < 30 and len(d["transform"]["matrix"]) == 4
    back = Registration.from_dict(json.loads(json.dumps(d)))
    assert np.allclose(back.current_to_prior((5, 40, 40)), reg.current_to_prior((5, 40, 40)),
                       atol=1e-3)


def test_registration_failure_is_clear(pair):
    bad = np.zeros(pair.prior.hu.shape, bool)
    bad[:4, :10, :10] = True  # a 'lung' in a corner: nothing to overlap
    with pytest.raises(RegistrationError, match="did not converge|failed"):
        register(pair.current, pair.prior, prior_mask=bad)


def _truth_nodules(pair, which, rng):
    out = []
    for n in pair.truth.nodules:
        c = n.current_zyx if which == "current" else n.prior_zyx
        if c is not None:
            out.append(Nodule(*(np.asarray(c) + rng.normal(0, 0.7, 3)), 6.0, source="test"))
    return out


def test_matching_growth_and_categories_on_the_twin_pair(pair):
    from lungviewer.followup.compare import compare

    rng = np.random.default_rng(0)
    cur, pri = _truth_nodules(pair, "current", rng), _truth_nodules(pair, "prior", rng)
    comp = compare(pair.current, pair.prior, cur, pri, pair.truth.interval_days)
    assert comp.counts().get("new") == 1 and comp.counts().get("resolved") == 1
    by_truth = {}
    for p in comp.pairs:  # each result to the nearest truth nodule
        n = p.current or p.prior
        key = "current_zyx" if p.current else "prior_zyx"
        t = min((t for t in pair.truth.nodules if getattr(t, key) is not None),
                key=lambda t: np.linalg.norm(np.subtract(getattr(t, key), n.zyx)))
        by_truth[t.name] = p
    assert set(by_truth) == {t.name for t in pair.truth.nodules}  # every one, no false pair
    for t in pair.truth.nodules:
        p = by_truth[t.name]
        assert p.status == t.status, (t.name, p.status)
        want = lung_rads_followup("solid", t.current_diameter_mm, t.prior_diameter_mm,
                                  pair.truth.interval_days, resolved=t.current_zyx is None)
        if t.status == "new":
            # the 7 mm sphere on 2 mm slices is typed part-solid by the volumetry (its
            # partial-volume caps read as a ground-glass rim), so only the rule is checked
            assert "new-nodule rule" in p.lung_rads["rule"]
            continue
        assert p.lung_rads["category"] == want.category, (t.name, p.lung_rads, want)
    big = by_truth["grow400"]
    assert big.vdt_days == pytest.approx(400, rel=0.25)
    d = Comparison.from_dict(json.loads(json.dumps(comp.as_dict()))).as_dict()
    assert d == comp.as_dict()


def test_compare_command_json(pair, tmp_path, monkeypatch, capsys):
    from lungviewer.cli import main
    from lungviewer.commands import compare as cmd
    from lungviewer.synth.followup import write_series

    write_series(pair.current, tmp_path / "cur", pair.current_date)
    write_series(pair.prior, tmp_path / "pri", pair.prior_date)
    rng = np.random.default_rng(1)
    cur, pri = _truth_nodules(pair, "current", rng), _truth_nodules(pair, "prior", rng)
    calls = []

    def fake(volume, mask, device="auto", progress=None, cancel=None):  # the CAD's stand-in
        calls.append(volume.n_slices)
        return cur if volume.n_slices == pair.current.n_slices else pri

    monkeypatch.setattr(cmd, "find_nodules", fake)
    assert main(["compare", str(tmp_path / "cur"), str(tmp_path / "pri"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(calls) == 2  # the prior's findings were run too
    assert res["interval_days"] == pair.truth.interval_days
    statuses = sorted(p["status"] for p in res["pairs"])
    assert statuses.count("new") == 1 and statuses.count("resolved") == 1
    for p in res["pairs"]:
        assert set(p) >= {"current", "prior", "volume_ratio", "vdt_days", "status", "lung_rads"}
        assert set(p["lung_rads"]) >= {"category", "rule"}
        for side in ("current", "prior"):
            if p[side] is not None:
                assert set(p[side]) >= {"slice", "row", "col", "diameter_mm", "volume_mm3"}
    r = res["registration"]
    assert {"transform", "seconds", "quality"} <= set(r) and r["quality"]["lung_dice"] > 0.9
    assert main(["compare", str(tmp_path / "cur"), str(tmp_path / "pri")]) == 0
    text = capsys.readouterr().out
    assert "365 days" in text and "Lung-RADS" in text and "resolved" in text
    # swapped: the prior is newer → one clear line, no traceback
    assert main(["compare", str(tmp_path / "pri"), str(tmp_path / "cur")]) == 1
    err = capsys.readouterr().err
    assert "newer" in err and "Traceback" not in err
    write_series(pair.prior, tmp_path / "nodate", None)
    assert main(["compare", str(tmp_path / "cur"), str(tmp_path / "nodate")]) == 1
    assert "no StudyDate" in capsys.readouterr().err
    assert math.isfinite(r["seconds"])


def test_reading_keeps_the_comparison_and_reads_old_files():
    from lungviewer.followup.compare import PairResult
    from lungviewer.reading.model import Reading

    r = Reading("1.2.3", "1.2.3.4")
    old = r.to_json()
    assert "followup" not in json.loads(old)  # nothing new written without a comparison
    assert Reading.from_json(old).followup is None
    comp = Comparison([assess_pair(Nodule(1, 2, 3, 9.0, 380.0), Nodule(1, 2, 3, 7.0, 180.0),
                                   365)], {"seconds": 1.0}, 365,
                      prior={"study_uid": "9.9", "study_date": "2025-01-01"})
    comp.pairs[0].verdict = "confirmed"
    r.set_followup(comp.as_dict())
    back = Reading.from_json(r.to_json())
    got = Comparison.from_dict(back.followup)
    assert got.prior["study_uid"] == "9.9" and got.pairs[0].verdict == "confirmed"
    assert isinstance(got.pairs[0], PairResult) and got.pairs[0].status == "growing"
    bad = json.loads(r.to_json())
    bad["followup"] = [1]
    with pytest.raises(ValueError, match="followup"):
        Reading.from_dict(bad)


def test_pdf_shows_the_comparison_table(pair, tmp_path):
    from lungviewer.reading.model import Reading
    from lungviewer.reading.report_pdf import build_report

    t = next(n for n in pair.truth.nodules if n.name == "grow400")
    comp = Comparison([assess_pair(Nodule(*t.current_zyx, 12.3, 980.0),
                                   Nodule(*t.prior_zyx, 10.0, 520.0), 365)],
                      {"seconds": 2.0, "quality": {"lung_dice": 0.97}}, 365,
                      prior={"study_date": "2025-03-04"})
    r = Reading("1.2.3", "1.2.3.4", synthetic=True)
    r.set_followup(comp.as_dict())
    out = build_report(r, pair.current, tmp_path / "r.pdf", compress=False,
                       prior_volume=pair.prior)
    data = out.read_bytes()
    assert b"Comparison with the prior" in data and b"growing" in data
    assert data.count(b"/Subtype /Image") >= 2  # the current's and the prior's key image


def test_sr_records_the_comparison(pair, tmp_path):
    import highdicom as hd

    from lungviewer.reading.export_dicom import export_sr
    from lungviewer.reading.model import Reading
    from lungviewer.study.dicom_series import load_series
    from lungviewer.synth.followup import write_series

    write_series(pair.current, tmp_path / "cur", pair.current_date)
    vol = load_series(tmp_path / "cur")
    t = next(n for n in pair.truth.nodules if n.name == "grow400")
    gone = next(n for n in pair.truth.nodules if n.name == "resolved")
    comp = Comparison([assess_pair(Nodule(*t.current_zyx, 12.3, 980.0),
                                   Nodule(*t.prior_zyx, 10.0, 520.0), 365),
                       assess_pair(None, Nodule(*gone.prior_zyx, 7.0, 180.0), 365)],
                      {"seconds": 2.0}, 365, prior={"study_date": "2025-03-04"})
    r = Reading.for_volume(vol)
    r.set_followup(comp.as_dict())
    sr = hd.sr.srread(export_sr(r, vol, tmp_path / "sr.dcm", model_version="test"))
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 1  # the resolved one has no region on the current exam
    got = {m.name.value: m.value for m in groups[0].get_measurements()}
    assert got["PRIORDIAM"] == pytest.approx(10.0) and got["PRIORVOL"] == pytest.approx(520)
    assert got["VOLCHANGE"] == pytest.approx(100 * (980 / 520 - 1), abs=0.1)
    ds = pydicom_read(tmp_path / "sr.dcm")
    assert b"growing" in ds and b"resolved since the prior" in ds


def pydicom_read(path) -> bytes:
    return path.read_bytes()


REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "LIDC-IDRI-0006"


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real/LIDC-IDRI-0006 is absent "
                                              "(the HYBRID pair needs the real development scan)")
def test_hybrid_pair_from_the_real_scan():
    """HYBRID: the real dev scan (every second pixel) resampled under a known motion, one of
    its real nodules enlarged ×1.3: registered within 3 mm, the nodule paired and growing."""
    from types import SimpleNamespace

    from lungviewer.followup.compare import compare
    from lungviewer.followup.registration import lung_mask_of
    from lungviewer.reading.lesions import _segment, lung_region
    from lungviewer.study.dicom_series import load_series
    from lungviewer.study.volume import Volume
    from lungviewer.synth.followup import landmark_errors, make_followup_pair

    full = load_series(REAL)
    vol = Volume(hu=np.ascontiguousarray(full.hu[:, ::2, ::2]),
                 spacing=(full.spacing[0], full.spacing[1] * 2, full.spacing[2] * 2),
                 positions=full.positions, orientation=full.orientation,
                 patient_id=full.patient_id)
    lm = lung_mask_of(vol.hu, vol.spacing)
    # the nodule: the readers' largest one on this scan (XML beside it), centre halved
    from lungviewer.session import read_annotations

    ann = read_annotations(full, REAL)
    n = max(ann.nodules, key=lambda n: n.diameter_mm)
    k, r, c = int(round(n.centre[0])), int(round(n.centre[1] / 2)), int(round(n.centre[2] / 2))
    seg = _segment(vol.hu, vol.spacing, lm, SimpleNamespace(slice=k, row=r, col=c,
                                                            diameter_mm=n.diameter_mm),
                   lung_region(lm, vol.spacing))
    assert seg is not None
    zs, ys, xs = np.nonzero(seg.mask)
    centre = (zs.mean() + seg.offset[0], ys.mean() + seg.offset[1], xs.mean() + seg.offset[2])
    pair = make_followup_pair(vol, lm, seed=11, nodules=(), label="HYBRID",
                              base_nodules=[("real", centre, seg.mean_diameter_mm, seg.type)],
                              enlarge=("real", centre, seg.full_mask(vol.hu.shape), 1.3),
                              current_spacing=(2.0, 1.6, 1.6), lung_scale=1.06)
    reg = register(pair.current, pair.prior)
    assert np.percentile(landmark_errors(reg, pair), 95) <= 3.0
    [t] = pair.truth.nodules
    comp = compare(pair.current, pair.prior, [Nodule(*t.current_zyx, 8.0)],
                   [Nodule(*t.prior_zyx, 8.0)], pair.truth.interval_days, reg)
    [p] = comp.pairs
    assert p.current is not None and p.prior is not None  # paired, not new + resolved
    assert p.status == "growing" and p.volume_ratio > 1.25
