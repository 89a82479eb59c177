"""CAD training side: patient split without leaks, sample building on a few scans, training
lowers the loss, checkpoints resume, and ``evaluate`` runs end to end on tiny weights.

The tiny fixture uses three small LIDC scans (twin images): two training patients and one
held-out test patient of the committed list.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from lungviewer.cad.training import splits

TRAIN_SCANS = (698, 769)  # LIDC-IDRI-0957 (65 slices), LIDC-IDRI-0886 (95 slices)
TEST_SCAN = 1  # LIDC-IDRI-0078 (87 slices, 13 annotations), on the held-out list


@pytest.fixture(scope="module")
def tiny_samples():
    from lungviewer.cad.training.datasets import build_samples

    return build_samples([*TRAIN_SCANS, TEST_SCAN], workers=1)


# -- split ------------------------------------------------------------------------------------
def test_split_is_by_patient_without_leak():
    sp = splits.make_split()
    assert not (sp.train & sp.test) and not (sp.val & sp.test) and not (sp.train & sp.val)
    patients = splits.annotated_patients()
    assert sp.train | sp.val | sp.test == set(patients)
    assert sp.test == splits.test_patients()  # the committed list, untouched by seeds
    assert 0.18 < len(sp.test) / len(patients) < 0.22
    diagnosed = set(splits.disease_labels().labels) & set(patients)
    share = len(diagnosed & sp.test) / len(diagnosed)
    assert 0.15 < share < 0.25
    assert diagnosed & sp.val, "validation needs some diagnosed patients for model selection"
    # another seed moves validation patients, never test ones
    other = splits.make_split(seed=splits.SPLIT_SEED + 7)
    assert other.test == sp.test and other.val != sp.val


def test_committed_test_list_is_reproducible():
    again = splits.choose_test_patients(splits.annotated_patients(),
                                        set(splits.disease_labels().labels))
    assert set(again) == splits.test_patients()


def test_disease_labels_tcia_and_csv(tmp_path):
    dl = splits.disease_labels()
    assert dl.names == ("benign", "primary lung cancer", "metastatic")
    annotated = set(splits.annotated_patients())
    counts = np.bincount([v for p, v in dl.labels.items() if p in annotated], minlength=3)
    assert counts.tolist() == [31, 41, 46]  # the data README's counts
    assert dl.of("LIDC-IDRI-0001") == -1 or "LIDC-IDRI-0001" in dl.labels
    f = tmp_path / "labels.csv"
    f.write_text("patient_id,label\nLIDC-IDRI-0001,b\nLIDC-IDRI-0002,a\n")
    user = splits.disease_labels(f)
    assert user.names == ("a", "b") and user.of("LIDC-IDRI-0001") == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("id,diagnosis\nx,1\n")
    with pytest.raises(splits.LabelFileError, match="bad.csv"):
        splits.disease_labels(bad)


def test_samples_carry_patients_and_split_masks_do_not_leak(tiny_samples):
    from lungviewer.cad.training.train import split_masks

    nod, det = tiny_samples
    for s in (nod, det):
        tr, va, te = split_masks(s["patient"])
        assert not (tr & te).any() and not (va & te).any() and not (tr & va).any()
        assert (tr | va | te).all()
        assert set(s["patient"][te]) <= splits.test_patients()
        assert not set(s["patient"][tr | va]) & splits.test_patients()


# -- data sets --------------------------------------------------------------------------------
def test_samples_of_three_scans(tiny_samples):
    from lungviewer.study.lidc_db import get_database

    nod, det = tiny_samples
    db = get_database()
    n_ann = sum(len(db.annotations(i)) for i in (*TRAIN_SCANS, TEST_SCAN))
    assert len(nod) == n_ann  # one sample per reader annotation
    assert nod["x"].shape == (n_ann, 2, 32, 32)
    assert set(np.unique(nod["x"][:, 0])) <= {0.0, 1.0}  # M2 binary patch
    assert nod["x"][:, 0].reshape(n_ann, -1).sum(1).min() > 0  # the nodule survives Otsu
    assert ((nod["malignancy"] >= 1) & (nod["malignancy"] <= 5)).all()
    assert (nod["box_mm"] > 0).all()
    assert nod["det"].shape == (n_ann, 50, 50)
    assert set(np.unique(nod["patient"])) == {db.scan(i).patient_id
                                             for i in (*TRAIN_SCANS, TEST_SCAN)}
    assert set(np.unique(det["label"])) == {0, 1}
    neg = det["det"][det["label"] == 0].astype(np.float32)
    pos = det["det"][det["label"] == 1].astype(np.float32)
    assert neg.shape[1:] == (50, 50) and len(neg) >= 2 * len(TRAIN_SCANS)
    # a nodule centre is denser than plain parenchyma negatives on average
    assert pos[:, 20:30, 20:30].mean() > neg[:, 20:30, 20:30].mean()


def test_large_nodule_keeps_its_size():
    """A nodule wider than 32 px is centre-cropped in the patch, but box_mm keeps its size."""
    from lungviewer.cad.training.datasets import scan_samples
    from lungviewer.study.lidc_db import get_database

    db = get_database()
    scan = db.scan(TEST_SCAN)
    nod, _ = scan_samples(TEST_SCAN)
    widths = np.array(nod["box_mm"]).max(1) / scan.pixel_spacing
    assert widths.max() > 0  # sanity
    big = widths > 32
    if not big.any():  # LIDC-IDRI-0078 has no nodule that large: check the patch function
        from lungviewer.imaging.patches import nodule_patch

        img = np.full((128, 128), -850, np.int16)
        rr, cc = np.mgrid[:128, :128]
        img[(rr - 64) ** 2 + (cc - 64) ** 2 < 25 ** 2] = 30
        p = nodule_patch(img, (36, 36, 92, 92), (0.7, 0.7))
        assert p.binary.shape == (32, 32) and p.binary.all()  # cropped: fills the patch
        assert p.box_mm == pytest.approx((56 * 0.7, 56 * 0.7))
    else:
        assert (np.array(nod["box_mm"])[big].max(1) > 32 * scan.pixel_spacing).all()


# -- training ---------------------------------------------------------------------------------
def _tiny_task(nod, second="texture"):
    from lungviewer.cad.training.train import multitask_data

    data, names, _ = multitask_data(nod, second)
    return data, names


@pytest.mark.slow
def test_multitask_training_lowers_loss(tiny_samples):
    from lungviewer.cad.training.train import train_multitask

    data, names = _tiny_task(tiny_samples[0])
    for scheme in ("partial", "soft"):
        _, hist = train_multitask(data, scheme, (5, len(names)), epochs=6, seed=0)
        losses = [h["loss"] for h in hist]
        assert losses[-1] < losses[0], (scheme, losses)


@pytest.mark.slow
def test_detector_training_lowers_loss_and_resumes(tiny_samples, tmp_path):
    from lungviewer.cad.training.train import train_detector

    _, det = tiny_samples
    x, y = det["det"], det["label"]
    ckpt = tmp_path / "ck" / "detector.safetensors"
    _, hist = train_detector(x, y, epochs=4, seed=0, ckpt=ckpt)
    losses = [h["loss"] for h in hist]
    assert losses[-1] < losses[0], losses
    state = json.loads(ckpt.with_suffix(".json").read_text())
    assert state["epoch"] == 4 and len(state["history"]) == 4
    # resume: continues at epoch 5 from the checkpointed weights, keeps the history
    _, hist2 = train_detector(x, y, epochs=6, seed=0, ckpt=ckpt, resume=True)
    assert [h["epoch"] for h in hist2] == [1, 2, 3, 4, 5, 6]
    assert hist2[:4] == hist
    assert hist2[4]["loss"] < losses[0]  # did not restart from random weights


def test_slice_head_shape_and_training_lowers_loss():
    """M5: (n, 512) detector features -> (n, 3) logits; a few seeded Adam steps on a tiny
    fixed random set lower its loss, the same way twice, and leave the detector alone."""
    import torch

    from lungviewer.cad.networks import NoduleDetector, SliceHead
    from lungviewer.cad.training.train import train_slice_head

    torch.manual_seed(0)
    head = SliceHead().eval()
    with torch.no_grad():
        out = head(torch.randn(7, 512))
    assert out.shape == (7, 3) and out.dtype == torch.float32
    assert torch.isfinite(out).all()

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 48)
    feats = np.maximum(rng.normal(size=(48, 512)), 0).astype(np.float32)  # ReLU'd like embed()
    detector = NoduleDetector()
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    trained, hist = train_slice_head(detector, feats, y, epochs=6, seed=0)
    losses = [h["loss"] for h in hist]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    assert not trained.training
    assert all(torch.equal(v, detector.state_dict()[k]) for k, v in before.items())
    _, again = train_slice_head(detector, feats, y, epochs=6, seed=0)
    assert again == hist  # seeded: the same run twice
    with torch.no_grad():
        logits = trained(torch.from_numpy(feats))
    ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()
    untrained, _ = train_slice_head(detector, feats, y, epochs=0, seed=0)  # seeded init only
    with torch.no_grad():
        ce0 = torch.nn.functional.cross_entropy(untrained(torch.from_numpy(feats)),
                                                torch.from_numpy(y)).item()
    assert ce < ce0  # the trained head fits the set better than its seeded initial weights


def test_checkpoints_are_safetensors_not_pickle(tiny_samples, tmp_path):
    from lungviewer.cad.training.train import train_multitask

    data, names = _tiny_task(tiny_samples[0])
    ckpt = tmp_path / "mt.safetensors"
    train_multitask(data, "hard", (5, len(names)), epochs=1, seed=0, ckpt=ckpt)
    assert ckpt.read_bytes()[8:9] == b"{"  # safetensors: u64 header length, then JSON
    json.loads(ckpt.with_suffix(".json").read_text())


def test_training_is_deterministic(tiny_samples):
    from lungviewer.cad.training.train import train_multitask

    data, names = _tiny_task(tiny_samples[0])
    a = train_multitask(data, "hard", (5, len(names)), epochs=1, seed=3)[1]
    b = train_multitask(data, "hard", (5, len(names)), epochs=1, seed=3)[1]
    assert a == b


# -- evaluate -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_weights(tiny_samples, tmp_path_factory):
    """Tiny weights of every model, trained on the two training scans only."""
    from lungviewer.cad.training.predict import predict_detector
    from lungviewer.cad.training.train import (
        build_retrieval_index,
        multitask_data,
        save_model,
        slice_labels,
        train_detector,
        train_multitask,
        train_slice_head,
    )

    nod, det = tiny_samples
    out = tmp_path_factory.mktemp("weights")
    train = ~np.isin(nod["patient"], list(splits.test_patients()))
    for second in ("disease", "texture"):
        data, names, source = multitask_data(nod.subset(train), second)
        for scheme in ("partial", "single"):
            model, _ = train_multitask(data, scheme, (5, len(names)), epochs=1, seed=0)
            name = ("multitask" if (scheme, second) == ("partial", "disease")
                    else f"multitask-{scheme}-{second}")
            save_model(model, name, out, "MultiTaskNet",
                       {"scheme": scheme, "n_classes": [5, len(names)], "n_extra": 2,
                        "second_task": second, "second_names": names,
                        "second_source": source})
    dtrain = ~np.isin(det["patient"], list(splits.test_patients()))
    detector, _ = train_detector(det["det"][dtrain], det["label"][dtrain], epochs=1, seed=0)
    save_model(detector, "detector", out, "NoduleDetector", {})
    ntr = nod.subset(train)
    _, feats = predict_detector(detector, ntr["det"], embed=True)
    head, _ = train_slice_head(detector, feats, slice_labels(ntr), epochs=1)
    save_model(head, "slices", out, "SliceHead", {})
    build_retrieval_index(detector, nod.subset(train), out)
    return out


@pytest.mark.slow
def test_evaluate_end_to_end_on_tiny_weights(tiny_samples, tiny_weights):
    from lungviewer.cad.training.evaluate import evaluate, format_text

    nod, det = tiny_samples
    m = evaluate(tiny_weights, "cpu", nod=nod, det=det, rec_scans=1)
    for key in ("malignancy.accuracy", "malignancy.nodule_accuracy", "malignancy.binary_auc",
                "detector.accuracy", "detector.sensitivity", "detector.specificity",
                "detector.auc", "recommendation.nodule_recall_at_10",
                "recommendation.nodule_recall_at_10_2d_scan"):
        assert key in m and 0.0 <= m[key] <= 1.0 or np.isnan(m[key]), key
    assert m["malignancy.n_annotations"] == int(np.isin(
        nod["patient"], list(splits.test_patients())).sum())
    assert m["recommendation.n_scans"] == 1
    assert m["recommendation.ranker"].startswith("StudySession.scan")  # the viewer's path
    assert set(m["retrieval.binary_recall_at"]) == {"1", "2", "3", "4"}
    r = m["retrieval.binary_recall_at"]
    assert r["1"] <= r["2"] <= r["3"] <= r["4"]
    assert set(m["sharing"]) == {"disease", "texture"}
    assert set(m["sharing"]["texture"]) == {"partial", "single"}
    assert "texture" in m["sharing"]["texture"]["partial"]
    from lungviewer.cad.manifest import read_manifest, record_metrics
    from lungviewer.cad.training.evaluate import DATA_NOTE
    from lungviewer.cad.weights import load_model

    record_metrics(tiny_weights, m, DATA_NOTE, {"evaluate": "lungviewer evaluate --json"})
    man = read_manifest(tiny_weights)
    assert man["metrics"]["malignancy.accuracy"] == m["malignancy.accuracy"]
    assert man["metrics_data"] == DATA_NOTE and "weights" not in man["metrics"]
    assert man["commands"]["evaluate"] == "lungviewer evaluate --json"
    load_model("detector", tiny_weights, "cpu", man)  # checksums still valid
    text = format_text(m)
    assert "Synthetic LIDC-twin images" in text and "held-out test patients" in text
    json.dumps(m)  # --json output is valid JSON


@pytest.mark.slow
def test_engine_slice_scan_scores_each_slice_by_its_best_candidate(tiny_weights):
    """The one slice-scoring path (``CadEngine.scan_slices``, which evaluate runs) on a
    whole twin: some slice scores above 0; a slice's score is the largest
    ``candidate_scores`` of its own candidates (recomputed here slice by slice) at the
    best candidate's place; slices without candidates score 0; the ranking lists every
    slice, the best-scoring one first."""
    from lungviewer.cad.engine import CadEngine
    from lungviewer.cad.recommend import candidate_scores, rank_slices
    from lungviewer.imaging.candidates import find_candidates
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.imaging.patches import detector_patches
    from lungviewer.study.lidc_db import get_database
    from lungviewer.study.volume import Volume
    from lungviewer.synth.twin import build_model, render_model

    twin = render_model(build_model(get_database().scan(TRAIN_SCANS[0])))
    mask = segment_lungs(twin.hu).mask
    engine = CadEngine.load(tiny_weights, "cpu")
    vol = Volume(hu=twin.hu, spacing=twin.spacing, positions=twin.positions)
    scan = engine.scan_slices(vol, mask)
    assert (scan.scores > 0).any() and ((scan.scores >= 0) & (scan.scores <= 1)).all()
    pts, _ = find_candidates(twin.hu, mask)
    with_cand = np.unique(pts[:, 0])
    assert (scan.scores[np.setdiff1d(np.arange(vol.n_slices), with_cand)] == 0).all()
    for k in with_cand[:: max(1, len(with_cand) // 4)]:
        rc = pts[pts[:, 0] == k, 1:]
        score, _ = candidate_scores(engine.models["detector"], engine.models["slices"],
                                    detector_patches(twin.hu[k], rc))
        assert scan.scores[k] == pytest.approx(float(score.max()), abs=1e-5)
        assert score[(rc == scan.best[k]).all(1)].max() == pytest.approx(score.max(), abs=1e-5)
    ranking = scan.ranking()
    assert sorted(ranking.tolist()) == list(range(vol.n_slices))
    assert scan.scores[ranking[0]] == scan.scores.max()
    assert (ranking == rank_slices(scan.scores, scan.best, twin.spacing)).all()


def test_evaluate_refuses_altered_weights(tiny_samples, tiny_weights, tmp_path):
    import shutil

    from lungviewer.cad.training import evaluate as ev
    from lungviewer.cad.weights import WeightsError

    bad = tmp_path / "w"
    shutil.copytree(tiny_weights, bad)
    with open(bad / "detector.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    nod, det = tiny_samples
    with pytest.raises(WeightsError, match="checksum"):
        ev.evaluate(bad, "cpu", nod=nod, det=det, rec_scans=0)
    args = SimpleNamespace(weights=str(tmp_path / "nothing"), device="cpu", lidc_root=None,
                           json=False)
    assert ev.main(args) == 2  # clear message, no traceback


def test_statistics_helpers():
    from lungviewer.cad.training.evaluate import auc, rounded_median, wilson

    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    lo, hi = wilson(45, 100)
    assert lo < 0.45 < hi and hi - lo == pytest.approx(0.19, abs=0.01)
    assert rounded_median([2, 3]) == 3 and rounded_median([1, 2, 2]) == 2


def test_resume_keeps_the_best_epochs_weights(tmp_path):
    """A resumed run that never beats the best epoch returns that epoch's weights, not the
    last one's: the best weights are checkpointed beside the last ones."""
    import torch

    from lungviewer.cad.networks import NoduleDetector
    from lungviewer.cad.training.train import _end_epoch, _resume

    ckpt = tmp_path / "ck" / "detector.safetensors"
    model = NoduleDetector()
    history = [{"epoch": 1}]
    best, best_state = _end_epoch(model, 0.9, -1.0, None, history, ckpt, 1, 3, None)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # epoch 2: different weights, worse score
    history.append({"epoch": 2})
    best, best_state = _end_epoch(model, 0.5, best, best_state, history, ckpt, 2, 3, None)
    assert best == 0.9
    fresh = NoduleDetector()
    start, best2, state, hist = _resume(fresh, ckpt)
    assert (start, best2, len(hist)) == (2, 0.9, 2)
    for k, v in model.state_dict().items():  # training goes on from the last epoch
        assert torch.equal(fresh.state_dict()[k], v)
    assert state is not None
    for k, v in first.items():  # ... and the best epoch is still known
        assert torch.equal(state[k], v)


def test_manifest_describes_training_data_and_label_sets():
    """The shipped manifest says what the models learned from, counted from the database
    and the split (and equal to what `train` writes now), with the caveat."""
    from lungviewer import paths
    from lungviewer.cad.manifest import describe_training_data, read_manifest
    from lungviewer.cad.training.splits import (
        annotated_patients,
        annotations_per_patient,
        disease_labels,
        make_split,
    )

    dl = disease_labels()
    per_patient, split = annotations_per_patient(), make_split()
    d = describe_training_data(per_patient, split, dl)
    sets = d["label_sets"]
    annotated = set(annotated_patients())
    assert sets["malignancy"]["patients"] == len(annotated)
    assert sets["disease"]["patients"] == len(annotated & set(dl.labels))
    assert sets["disease"]["training_patients"] == len(make_split().train & set(dl.labels))
    assert 0 < sets["disease"]["training_annotations"] < sets["disease"]["annotations"] \
        < sets["malignancy"]["annotations"]
    assert d["not_for_clinical_use"] is True and "Not for clinical use" in d["caveat"]
    assert "synthetic" in d["training_data"] and "real LIDC-IDRI slices" in \
        describe_training_data(per_patient, split, None, "/data/LIDC")["training_data"]
    shipped = read_manifest(paths.weights_dir())
    for key in ("training_data", "label_sets", "caveat", "not_for_clinical_use"):
        assert shipped[key] == d[key], key
