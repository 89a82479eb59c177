"""CAD: nodule and detector patches, networks, weights (broken ones refused, no pickle),
the GPU fallback, similar nodules, engine, samples."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cadfixtures import break_weights, write_tiny_weights

from lungviewer.imaging.patches import (
    centre_fit,
    detector_patch,
    detector_patches,
    nodule_patch,
    polygon_box,
)

ROOT = Path(__file__).resolve().parents[1]


def disc_slice(r=10, centre=(60, 70), size=128, hu_in=30, hu_out=-850, speck=True):
    rr, cc = np.mgrid[:size, :size]
    sl = np.full((size, size), hu_out, np.int16)
    sl[(rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= r * r] = hu_in
    if speck:
        sl[centre[0] - r - 3, centre[1]] = hu_in  # a 1-px speck inside the box
    return sl


def test_m2_patch_is_the_otsu_disc_without_specks():
    sl = disc_slice()
    box = (60 - 14, 70 - 14, 60 + 15, 70 + 15)
    p = nodule_patch(sl, box, (0.7, 0.7))
    assert p.binary.shape == p.grey.shape == (32, 32)
    disc_px = int(((np.mgrid[:29, :29] - 14) ** 2).sum(0).__le__(100).sum())
    assert p.binary.sum() == disc_px  # the speck (< 10 px) is gone, the disc is whole
    assert -850 < p.otsu_hu < 30
    assert p.box_mm == pytest.approx((29 * 0.7, 29 * 0.7))
    assert p.stacked().shape == (2, 32, 32)


def test_m2_large_boxes_are_centre_cropped_and_keep_their_size():
    sl = disc_slice(r=30, centre=(64, 64), speck=False)
    p = nodule_patch(sl, (20, 20, 110, 110), (0.5, 0.5))
    assert p.binary.shape == (32, 32) and p.binary.all()  # the middle of a big nodule
    assert p.box_mm == (45.0, 45.0)
    with pytest.raises(ValueError):
        nodule_patch(sl, (5, 5, 6, 6))


def test_centre_fit_and_detector_patches():
    a = np.arange(12, dtype=float).reshape(3, 4)
    out = centre_fit(a, 6)
    assert out.shape == (6, 6) and out.sum() == a.sum() and out[1, 1] == 0
    assert centre_fit(np.ones((40, 40)), 32).shape == (32, 32)
    sl = disc_slice()
    single = detector_patch(sl, (60, 70))
    many = detector_patches(sl, np.array([[60, 70], [2, 3]]))
    np.testing.assert_allclose(many[0], single)
    assert single.shape == (50, 50) and single[25, 25] > 0.6
    assert many[1][0, 0] == 0.0  # outside the image = air
    assert polygon_box(np.array([[10, 20], [15, 30]])) == (20, 10, 31, 16)


@pytest.mark.parametrize("scheme", ["partial", "hard", "soft", "single"])
def test_multitask_shapes_and_training_lowers_the_loss(scheme):
    import torch

    from lungviewer.cad.networks import MultiTaskNet

    torch.manual_seed(0)
    net = MultiTaskNet(scheme, (5, 3))
    x, e = torch.rand(16, 2, 32, 32), torch.rand(16, 2) * 30
    ya, yb = torch.randint(0, 5, (16,)), torch.randint(0, 3, (16,))
    out = net(x, e)
    assert out[0].shape == (16, 5)
    assert len(out) == (1 if scheme == "single" else 2)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    net.train()
    losses = []
    for _ in range(30):
        out = net(x, e)
        loss = torch.nn.functional.cross_entropy(out[0], ya)
        if len(out) > 1:
            loss = loss + torch.nn.functional.cross_entropy(out[1], yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_partial_sharing_columns_are_separate_and_mixing_learns():
    import torch

    from lungviewer.cad.networks import MultiTaskNet

    net = MultiTaskNet("partial", (5, 3))
    assert net.col_a.conv1.weight.data_ptr() != net.col_b.conv1.weight.data_ptr()
    assert net.col_a.conv2.weight.data_ptr() != net.col_b.conv2.weight.data_ptr()
    out = net(torch.rand(4, 2, 32, 32), torch.rand(4, 2))
    (out[0].sum() + out[1].sum()).backward()
    assert net.mix1.alpha.grad is not None and net.mix1.alpha.grad.abs().sum() > 0
    soft = MultiTaskNet("soft", (5, 3))
    before = float(soft.l2_tie().detach())
    soft.col_b.load_state_dict(soft.col_a.state_dict())
    soft.fc_b.load_state_dict(soft.fc_a.state_dict())
    assert before > 0 and float(soft.l2_tie().detach()) == 0.0


def test_detector_is_the_papers_architecture():
    import torch

    from lungviewer.cad.networks import NoduleDetector

    d = NoduleDetector()
    assert (d.conv1.out_channels, d.conv1.kernel_size) == (32, (5, 5))
    assert (d.conv2.out_channels, d.conv2.kernel_size) == (64, (5, 5))
    assert (d.conv3.out_channels, d.conv3.kernel_size) == (64, (3, 3))
    assert d.fc.out_features == 512 and d.dropout.p == 0.5
    x = torch.rand(3, 1, 50, 50)
    assert d(x).shape == (3, 2) and d.embed(x).shape == (3, 512)


def test_weights_round_trip_and_refuse_tampering(tmp_path):
    import torch

    from lungviewer.cad.weights import WeightsError, load_model, read_manifest

    write_tiny_weights(tmp_path)
    m = load_model("detector", tmp_path)
    x = torch.rand(2, 1, 50, 50)
    again = load_model("detector", tmp_path)
    torch.testing.assert_close(m(x), again(x))
    manifest = read_manifest(tmp_path)
    assert len(manifest["models"]["detector"]["sha256"]) == 64
    f = tmp_path / "detector.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum"):
        load_model("detector", tmp_path)
    with pytest.raises(WeightsError, match="no model"):
        load_model("nothing", tmp_path)
    with pytest.raises(WeightsError, match="does not exist"):
        read_manifest(tmp_path / "empty")


def test_retrieval_knn_and_recall():
    from lungviewer.cad.retrieval import RetrievalIndex, recall_at_k

    emb = np.eye(4, 8, dtype=np.float32)
    idx = RetrievalIndex(emb, [{"patient": f"P{i}", "nodule": str(i), "malignancies": [i],
                                "slice": i, "diameter_mm": 1.0} for i in range(4)])
    q = emb[2] + 0.1 * emb[3]
    res = idx.query(q, k=2)
    assert [r.nodule for r in res] == ["2", "3"]
    assert idx.query(q, k=2, exclude_patient="P2")[0].nodule == "3"
    # by hand: query 0's nearest is db 0 (class a), query 1's nearest db 1 (class b ≠ a)
    rec = recall_at_k(emb[:2], np.array([0, 1]), emb[:2], np.array([0, 0]), ks=(1, 2))
    assert rec == {1: 0.5, 2: 1.0}


def test_slice_ranking_lists_distinct_findings_first():
    """One nodule bright on five neighbouring slices and a weaker finding elsewhere: the
    weaker finding comes second, not sixth; without positions the order is by score."""
    from lungviewer.cad.recommend import rank_slices

    scores = np.zeros(40)
    scores[10:15] = [0.90, 0.95, 0.99, 0.94, 0.91]  # one nodule, same place, 5 slices
    scores[30] = 0.80  # another finding
    best = np.zeros((40, 2), int)
    best[10:15] = (100, 100)
    best[30] = (300, 200)
    spacing = (2.5, 0.7, 0.7)
    ranked = rank_slices(scores, best, spacing)
    assert ranked[:2].tolist() == [12, 30]
    assert sorted(ranked.tolist()) == list(range(40))  # every slice still listed
    assert rank_slices(scores)[:6].tolist() == [12, 11, 13, 14, 10, 30]
    # the same place 30 slices (75 mm) away is another finding
    best[30] = (100, 100)
    assert rank_slices(scores, best, spacing)[:2].tolist() == [12, 30]
    # the next slice, its best candidate 5 px off, is the same finding: listed after 30
    scores[15], best[15] = 0.97, (105, 100)
    ranked = rank_slices(scores, best, spacing).tolist()
    assert ranked[:2] == [12, 30] and ranked.index(15) > 1


def test_engine_scores_a_box_with_tiny_weights(tmp_path, twin_0001):
    from lungviewer.cad.engine import CadEngine
    from lungviewer.study.volume import Volume

    write_tiny_weights(tmp_path)
    eng = CadEngine.load(tmp_path, device="cpu")
    assert eng.disease_names == ["benign", "primary lung cancer", "metastatic"]
    vol = Volume(hu=twin_0001.hu[80:100], spacing=twin_0001.spacing,
                 positions=twin_0001.positions[80:100])
    res = eng.score_box(vol, 9, (340, 297, 391, 340))
    assert res.malignancy_probs.shape == (5,)
    assert res.malignancy_probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert res.disease_probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert 0 <= res.nodule_prob <= 1 and res.embedding.shape == (512,)
    assert len(res.similar) == 5
    d = res.as_dict()
    assert set(d["malignancy"]) == {"1", "2", "3", "4", "5"}
    json.dumps(d)
    from lungviewer.imaging.parenchyma import segment_lungs

    scores = eng.scan_slices(vol, segment_lungs(vol.hu).mask)
    assert scores.scores.shape == (20,) and np.isfinite(scores.scores).all()
    assert len(scores.ranking()) == 20


def test_gpu_error_during_inference_falls_back_to_the_cpu(tmp_path, twin_0001, caplog):
    """The engine thinks it is on a GPU that fails (this torch has no CUDA: moving a tensor
    there raises): the box and the slice scan are computed on the CPU, with a warning."""
    from lungviewer.cad.engine import CadEngine
    from lungviewer.study.volume import Volume

    folder = write_tiny_weights(tmp_path / "w")
    engine = CadEngine.load(folder, "cpu")
    vol = Volume(hu=twin_0001.hu, spacing=twin_0001.spacing, positions=twin_0001.positions)
    expected = engine.score_box(vol, 89, (336, 293, 395, 344))
    engine.device = "cuda"
    with caplog.at_level("WARNING", logger="lungviewer.cad.engine"):
        res = engine.score_box(vol, 89, (336, 293, 395, 344))
    assert res.device == "cpu" and engine.device == "cpu"
    assert "goes on on the CPU" in caplog.text
    assert engine.note.startswith("The GPU failed") and "runs on the CPU" in engine.note
    np.testing.assert_allclose(res.malignancy_probs, expected.malignancy_probs, atol=1e-6)
    engine.device = "cuda"
    sub = Volume(hu=twin_0001.hu[85:95], spacing=twin_0001.spacing,
                 positions=twin_0001.positions[85:95])
    scan = engine.scan_slices(sub, twin_0001.lung_mask[85:95])
    assert engine.device == "cpu" and np.isfinite(scan.scores).all()


def test_engine_module_does_not_import_torch():
    code = ("import sys, lungviewer.cad.engine, lungviewer.ui.main_window; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False,
                         env={**__import__('os').environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.stdout.strip() == "False", out.stderr


def test_lidc_root_reads_real_dicom_through_the_same_patches(twin_0001_dir):
    """--lidc-root: samples from a DICOM folder (here the twin's own DICOM output, which is
    real DICOM) equal the ones rendered directly from the twin."""
    from lungviewer.cad.training.datasets import Samples, _stack, build_samples, scan_samples
    from lungviewer.study.lidc_db import get_database

    db = get_database()
    sid = db.scan_by_patient("LIDC-IDRI-0001").id
    nod, det = build_samples(workers=1, lidc_root=twin_0001_dir)
    direct = Samples(_stack(scan_samples(sid)[0]))
    assert len(nod) == len(direct) == 4
    np.testing.assert_array_equal(nod["x"], direct["x"])
    np.testing.assert_array_equal(nod["malignancy"], direct["malignancy"])
    assert (det["label"] == 0).sum() > 10
    with pytest.raises(ValueError, match="no annotated LIDC-IDRI series"):
        build_samples(workers=1, lidc_root=twin_0001_dir / "nothing-here")


def test_lidc_root_index_skips_a_damaged_file(twin_0001_dir, tmp_path):
    """A file whose Modality element has an unknown VR (pydicom raises only when the value
    is read) is passed over; the series is still found in its folder."""
    import shutil

    from lungviewer.cad.training.datasets import lidc_series_folders
    from lungviewer.study.lidc_db import get_database

    folder = tmp_path / "LIDC-IDRI-0001" / "series"
    shutil.copytree(twin_0001_dir, folder)
    first = min(folder.glob("*.dcm"))
    data = first.read_bytes()
    tag = b"\x08\x00\x60\x00CS"  # (0008,0060) Modality, explicit VR
    assert data.count(tag) == 1
    (folder / "000-damaged.dcm").write_bytes(data.replace(tag, b"\x08\x00\x60\x00C\x02"))
    index = lidc_series_folders(tmp_path)
    assert index == {get_database().scan_by_patient("LIDC-IDRI-0001").series_uid: folder}


def test_lidc_root_takes_readers_non_nodule_marks_as_negatives(twin_0001_dir, tmp_path):
    """With real data, the readers' non-nodule marks of the folder's LIDC XML become
    detector negatives (patches centred on the mark); twins have none."""
    import shutil

    from lungviewer.cad.training.datasets import NEG_KINDS, scan_samples
    from lungviewer.imaging.patches import detector_patch
    from lungviewer.study.dicom_series import load_series
    from lungviewer.study.lidc_db import get_database

    folder = tmp_path / "LIDC-IDRI-0001"
    shutil.copytree(twin_0001_dir, folder)
    vol = load_series(folder)
    xml = next(folder.glob("*.xml"))
    text = xml.read_text(encoding="utf-8")
    marks = [(40, 200, 150), (60, 300, 330)]  # (slice, row, col)
    extra = "".join(
        f"<nonNodule><nonNoduleID>NN{i}</nonNoduleID>"
        f"<imageZposition>{vol.z_positions[k]}</imageZposition>"
        f"<imageSOP_UID>{vol.sop_uids[k]}</imageSOP_UID>"
        f"<locus><xCoord>{c}</xCoord><yCoord>{r}</yCoord></locus></nonNodule>"
        for i, (k, r, c) in enumerate(marks))
    xml.write_text(text.replace("</readingSession>", extra + "</readingSession>", 1),
                   encoding="utf-8")
    sid = get_database().scan_by_patient("LIDC-IDRI-0001").id
    _, det = scan_samples(sid, folder=str(folder))
    kinds = np.array(det["kind"])
    nn = [p for p, k in zip(det["det"], kinds) if k == NEG_KINDS.index("non_nodule")]
    assert len(nn) == len(marks)
    assert all(det["label"][i] == 0 for i in np.nonzero(kinds == NEG_KINDS.index("non_nodule"))[0])
    for patch, (k, r, c) in zip(nn, marks):
        np.testing.assert_array_equal(patch, detector_patch(vol.hu[k], (r, c)).astype(np.float16))
    _, twin_det = scan_samples(sid)
    assert NEG_KINDS.index("non_nodule") not in twin_det["kind"]


# -- broken weights, pickles, GPU faults ------------------------------------------------------
@pytest.mark.parametrize("how", ["checksum", "missing", "other-arch", "unknown-arch",
                                 "no-manifest", "bad-manifest"])
def test_broken_weights_refused_with_a_clear_message(tmp_path, how):
    from lungviewer.cad.engine import CadEngine
    from lungviewer.cad.weights import WeightsError

    folder = write_tiny_weights(tmp_path / "w")
    needle = break_weights(folder, how)
    with pytest.raises(WeightsError) as info:
        CadEngine.load(folder, device="cpu")
    assert needle in str(info.value)
    assert str(folder) in str(info.value)  # names the file or folder


def test_nothing_loads_pickles():
    """No pickle path in the package: torch.load only with weights_only=True, np.load only
    with allow_pickle=False, never pickle/joblib/dill."""
    bad = []
    for f in sorted((ROOT / "lungviewer").rglob("*.py")):
        code = f.read_text(encoding="utf-8")
        for m in re.finditer(r"\b(pickle|cPickle|joblib|dill|shelve)\.(load|loads|Unpickler|open)\b",
                             code):
            bad.append(f"{f.name}: {m.group(0)}")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", code):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{f.name}: {m.group(0)}")
        for m in re.finditer(r"np\.load\(([^)]*)\)", code):
            if "allow_pickle=False" not in m.group(1):
                bad.append(f"{f.name}: {m.group(0)}")
        if "allow_pickle=True" in code:
            bad.append(f"{f.name}: allow_pickle=True")
    assert not bad, bad
    assert not list((ROOT / "model_weights").glob("*.pt*")) + list(
        (ROOT / "model_weights").glob("*.pkl"))


def test_cuda_failure_falls_back_to_cpu_with_a_message(monkeypatch, caplog):
    import torch

    from lungviewer.cad import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_zeros = torch.zeros

    def zeros(*a, **k):
        if str(k.get("device", "")).startswith("cuda"):
            raise RuntimeError("CUDA error: out of memory\nmore details")
        return real_zeros(*a, **k)

    monkeypatch.setattr(torch, "zeros", zeros)
    with caplog.at_level("WARNING", logger="lungviewer.cad.device"):
        assert device.pick_device("auto") in ("cpu", "mps")
    assert any("CPU" in r.getMessage() and "out of memory" in r.getMessage()
               for r in caplog.records)

    def broken():
        raise AssertionError("Torch not compiled with CUDA enabled")

    monkeypatch.setattr(torch.cuda, "is_available", broken)
    assert device.pick_device("auto") in ("cpu", "mps")
    with pytest.raises(device.DeviceError):
        device.pick_device("tpu")
