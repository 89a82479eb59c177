"""Real-CT evaluation: the LUNA16 matching and FROC machinery on known findings, the slice
recall, and a run on the real development scan (skipped when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lungviewer.cad.training.evaluate_real import (
    ScanTruth,
    format_real,
    froc,
    match_findings,
    slice_recall,
)

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def _truth() -> ScanTruth:
    # two nodules (radius 5 mm), the second marked by 1 reader; one non-nodule mark
    return ScanTruth(nodules_mm=np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]),
                     radius_mm=np.array([5.0, 5.0]), readers=np.array([4, 1]),
                     ignore_mm=np.array([[0.0, 50.0, 0.0]]), ignore_radius_mm=np.array([5.0]))


def test_match_findings_luna16_rules():
    pts = np.array([[1, 1, 1],      # hit nodule 0
                    [0, 2, 0],      # second finding on nodule 0: neither
                    [0, 51, 0],     # on the non-nodule mark: neither
                    [0, 0, 30],     # false positive
                    [101, 0, 0],    # hit nodule 1 (1 reader)
                    [0, 0, 5.5]])   # just outside nodule 0's radius: false positive
    scores = np.array([0.8, 0.9, 0.7, 0.6, 0.5, 0.4])
    lab, which = match_findings(pts, scores, _truth())
    # the better-scored finding on nodule 0 (index 1) takes it
    assert lab.tolist() == [-1, 1, -1, 0, 1, 0]
    assert which[1] == 0 and which[4] == 1
    # with ≥ 3 readers, nodule 1 becomes a mark that does not count
    lab3, _ = match_findings(pts, scores, _truth(), min_readers=3)
    assert lab3.tolist() == [-1, 1, -1, 0, -1, 0]
    empty, _ = match_findings(np.zeros((0, 3)), np.zeros(0), _truth())
    assert empty.size == 0


def test_froc_counts_false_positives_per_scan():
    # scan A: hit (0.9), FP (0.8), hit (0.7), FP (0.6); scan B: FP (0.95), FP (0.5), hit (0.4)
    a = (np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]), np.array([0, -1, 1, -1]))
    b = (np.array([0.95, 0.5, 0.4, 0.3]), np.array([0, 0, 1, -1]), np.array([-1, -1, 10, -1]))
    f = froc([a, b], n_nodules=4, rates=(0.5, 1, 2, 4))
    # pooled by score: FP .95, hit .9, FP .8, hit .7, FP .6, FP .5, hit .4 (ignored .3)
    assert f["0.5"] == pytest.approx(1 / 4)  # before the 2nd FP
    assert f["1"] == pytest.approx(2 / 4)  # before the 3rd FP
    assert f["2"] == pytest.approx(3 / 4)  # all 4 FPs allowed
    assert f["4"] == pytest.approx(3 / 4)  # the 4th nodule is never found
    assert f["total_fp"] == 4 and f["max_sensitivity"] == pytest.approx(3 / 4)
    assert np.isnan(froc([], 0)["1"])


def test_slice_recall_needs_the_point_on_the_nodule():
    nod = [{"slice_range": (10, 12), "centre": (11.0, 100.0, 100.0), "radius_mm": 5.0},
           {"slice_range": (30, 30), "centre": (30.0, 50.0, 50.0), "radius_mm": 5.0}]
    best = np.zeros((40, 2))
    best[11] = (103, 102)  # 3.6 px = 2.5 mm from nodule 0: on it
    best[30] = (80, 80)  # slice 30 ranked, but its point is 21 mm away from nodule 1
    ranking = np.array([30, 11, 5])
    assert slice_recall(ranking, best, nod, (2.5, 0.7, 0.7)) == [True, False]
    assert slice_recall(ranking[:1], best, nod, (2.5, 0.7, 0.7)) == [False, False]


@pytest.mark.skipif(not (REAL / "LIDC-IDRI-0006").is_dir(),
                    reason="the real development scan ../shared/data/real/LIDC-IDRI-0006 is "
                           "absent")
def test_evaluate_real_on_the_dev_scan():
    from lungviewer.cad.training.evaluate_real import evaluate_real

    res = evaluate_real(REAL / "LIDC-IDRI-0006", baseline=False)
    s = res["summary"]
    assert s["n_scans"] == 1 and not res["skipped"]
    scan = res["scans"][0]
    assert scan["n_nodules"] == 4 and scan["slices"] == 133
    for key in ("froc_1_reader", "froc_3_reader"):
        vals = [s[key][str(r)] for r in (1, 2, 4, 8)]
        assert all(0.0 <= v <= 1.0 for v in vals) and vals == sorted(vals)
    assert s["froc_1_reader"]["n_nodules"] == 4
    assert 0.0 <= s["recall_at_10"] <= 1.0
    assert s["detector_auc_axial"] > 0.6  # nodules score above non-nodule marks and lung
    assert len(s["boxes"]) == 4
    assert all(1.0 <= b["malignancy_expected"] <= 5.0 for b in s["boxes"])
    assert s["coverage.nodule_pixels_in_region"] > 0.9
    assert 2000 < s["coverage.lung_volume_ml"][0] < 8000
    assert scan["top_findings"] and {"slice", "row", "col", "diameter_mm", "probability",
                                     "shown", "kind", "measured"} <= set(scan["top_findings"][0])
    text = format_real(res)
    assert "FROC" in text and "recall@10" in text and "AUC" in text


def test_find_lidc_series_follows_links_once(tmp_path):
    from lungviewer.cad.training.evaluate_real import find_lidc_series

    a = tmp_path / "data" / "A"
    a.mkdir(parents=True)
    (a / "readers.xml").write_text('<?xml version="1.0"?>\n<LidcReadMessage></LidcReadMessage>\n')
    (a / "other.xml").write_text("<Something/>")
    links = tmp_path / "links"
    links.mkdir()
    (links / "A").symlink_to(a, target_is_directory=True)
    (links / "A2").symlink_to(a, target_is_directory=True)
    found = find_lidc_series(links)
    assert len(found) == 1 and found[0][1].name == "readers.xml"
    with pytest.raises(FileNotFoundError):
        find_lidc_series(tmp_path / "missing")
