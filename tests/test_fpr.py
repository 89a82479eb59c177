"""The findings' false-positive reduction: hybrid images (nodules inserted into real lungs),
the network's three-plane input, a CI-sized training run, saving / loading, and its use in
the findings (and the findings without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lungviewer.cad.findings import FPR_EXTRA, FPR_PATCH, fpr_patches, mix_evidence
from lungviewer.cad.training import hybrid as hy

SPACING = (2.5, 0.7, 0.7)


def _lungs(seed: int = 0):
    """A noisy lung block (−850 HU) in soft tissue with a vessel along z."""
    rng = np.random.default_rng(seed)
    shape = (30, 120, 120)
    z, y, x = np.indices(shape)
    hu = np.full(shape, 40.0)
    lung = (y > 8) & (y < 112) & (x > 8) & (x < 112) & (z > 1) & (z < 28)
    hu[lung] = -850
    hu[((y - 60) ** 2 + (x - 30) ** 2 <= 4) & lung] = 40  # a vessel
    hu += rng.normal(0, 20, shape)
    return hu.astype(np.int16), lung


def _donor(d_mm: float = 8.0, texture: float = 5.0) -> hy.Donor:
    sp = (1.25, 0.7, 0.7)
    r = d_mm / 2
    n = int(np.ceil(d_mm / sp[0])) + 1
    h = int(np.ceil(d_mm / sp[1])) + 1
    z, y, x = np.indices((n, h, h))
    m = (((z - (n - 1) / 2) * sp[0]) ** 2 + ((y - (h - 1) / 2) * sp[1]) ** 2
         + ((x - (h - 1) / 2) * sp[2]) ** 2) <= r * r
    return hy.Donor("LIDC-IDRI-0003", m, sp, texture, False, d_mm)


def test_inserted_nodules_are_in_the_lungs_with_their_texture_and_the_hosts_noise():
    hu, lung = _lungs()
    rng = np.random.default_rng(1)
    out, placed = hy.insert_nodules(hu, lung, SPACING, [_donor()], 3, rng)
    assert out.dtype == np.int16 and out.shape == hu.shape and len(placed) == 3
    sp = np.asarray(SPACING)
    for p in placed:
        k, r, c = np.round(p.centre).astype(int)
        assert lung[k, r, c]
        assert -120 < np.median(out[k, r - 2:r + 3, c - 2:c + 3]) < 120  # solid
        assert abs(p.diameter_mm - 8.0) < 1e-6
    d = [np.linalg.norm((a.centre - b.centre) * sp) for i, a in enumerate(placed)
         for b in placed[i + 1:]]
    assert min(d) >= hy.MIN_GAP_MM - 1.0
    # outside the nodules the host is unchanged; inside, the host's noise is kept
    changed = out.astype(int) != hu
    assert changed.mean() < 0.05
    k, r, c = np.round(placed[0].centre).astype(int)
    core = out[k, r - 1:r + 2, c - 1:c + 2].astype(float)
    assert core.std() > 3.0
    # ground glass stays faint, and a vessel through it stays bright
    gg, _ = hy.insert_nodules(hu, lung, SPACING, [_donor(10, 1.0)], 1,
                              np.random.default_rng(2))
    diff = gg.astype(int) - hu
    assert -700 < np.median(gg[diff > 150]) < -300
    assert (gg >= hu - 60).all()


def test_labels_and_donors_are_training_patients_only():
    from lungviewer.cad.training.evaluate_real import ScanTruth

    t = ScanTruth(np.array([[10.0, 10, 10]]), np.array([5.0]), np.array([2]),
                  np.array([[50.0, 50, 50]]), np.array([5.0]))
    lab = hy.label_candidates(np.array([[12.0, 10, 10], [50, 52, 50], [30, 30, 30]]), t)
    assert lab.tolist() == [1, -1, 0]
    with pytest.raises(ValueError, match="test patients"):
        hy.donors_of(["LIDC-IDRI-0001"])  # a held-out test patient
    pats = hy.donor_patients(5)
    from lungviewer.cad.training.splits import make_split, test_patients

    assert len(pats) == 5 and set(pats) <= make_split().train
    assert not set(pats) & set(test_patients()) and hy.HOST_PATIENT not in pats


def test_fpr_patches_cut_three_planes_through_a_blob():
    hu, _ = _lungs()
    z, y, x = np.indices(hu.shape)
    ball = ((z - 15) * 2.5) ** 2 + ((y - 60) * 0.7) ** 2 + ((x - 80) * 0.7) ** 2 <= 25
    hu[ball] = 30
    p = fpr_patches(hu, SPACING, np.array([[15, 60, 80], [15, 60, 30]]),
                    angles=np.array([0.0, 1.0]))
    assert p.shape == (2, 3, FPR_PATCH, FPR_PATCH) and p.dtype == np.float32
    c = FPR_PATCH // 2
    assert (p[0, :, c - 2:c + 2, c - 2:c + 2] > 0.6).all()  # the blob in every plane
    assert (p[0, :, :3, :3] < 0.2).all()  # lung around it
    # the vessel along z: a dot in the axial plane, a line in the vertical ones (any turn)
    assert p[1, 0, c - 1:c + 1, c - 1:c + 1].mean() > 0.6
    assert p[1, 0, :4, c - 1:c + 1].mean() < 0.2
    assert p[1, 1, :, c - 1:c + 1].mean() > 0.5 and p[1, 2, :, c - 1:c + 1].mean() > 0.5


def _tiny_set(n: int = 160, seed: int = 0) -> hy.CandidateSet:
    """Bright blobs (nodules) vs vessel-like lines along z (not nodules)."""
    from lungviewer.cad.training.evaluate_real import ScanTruth

    rng = np.random.default_rng(seed)
    P = FPR_PATCH
    yy, xx = np.indices((P, P)) - P // 2
    x = np.full((n, hy.TURNS, 3, P, P), 0.1, np.float32)
    lab = (np.arange(n) % 4 == 0).astype(np.int64)
    for i in range(n):
        r = rng.uniform(2, 5)
        disc = (yy ** 2 + xx ** 2 <= r * r)
        line = np.abs(xx) <= r / 2
        x[i, :, 0][:, disc] = 0.75
        for j in (1, 2):
            x[i, :, j][:, disc if lab[i] else line] = 0.75
    x += rng.normal(0, 0.03, x.shape).astype(np.float32)
    names = ("hybrid-0", "hybrid-1", "realistic-A", "realistic-B", "host")
    groups = np.array([names[(i // 4) % 5] for i in range(n)])
    cmm = np.column_stack([np.arange(n) * 20.0, np.zeros(n), np.zeros(n)])
    truths = {g: ScanTruth(cmm[(groups == g) & (lab == 1)], np.full(((groups == g)
                                                                      & (lab == 1)).sum(), 5.0),
                           np.ones(((groups == g) & (lab == 1)).sum(), int))
              for g in names}
    return hy.CandidateSet(x, np.zeros((n, FPR_EXTRA), np.float32),
                           rng.normal(0, 1, n).astype(np.float32), lab, groups, cmm,
                           np.full(n, 6.0, np.float32), truths)


def test_fpr_trains_saves_loads_and_cross_validates(tmp_path: Path):
    """CI-sized: a few epochs tell blobs from vessel lines; the weights round-trip through
    safetensors and the manifest (sha256, mix kept); leaving a volume out picks a mix that
    uses the network when the hand-set evidence is noise."""
    from lungviewer.cad.training.train import save_model
    from lungviewer.cad.weights import load_model

    cs = _tiny_set()
    model, hist = hy.fit(cs, epochs=4, seed=0)
    assert len(hist) == 4 and hist[-1]["loss"] < hist[0]["loss"]
    lo = hy.predict(model, cs)
    assert lo[cs.label == 1].min() > lo[cs.label == 0].max()
    model.mix = (0.5, 1.0)
    entry = save_model(model, "fpr", tmp_path, "FprNet",
                       {"n_extra": FPR_EXTRA, "size": FPR_PATCH, "mix": [0.5, 1.0]}, "test")
    assert (tmp_path / "fpr.safetensors").stat().st_size < 1_000_000
    assert len(entry["sha256"]) == 64
    again = load_model("fpr", tmp_path)
    assert again.mix == (0.5, 1.0)
    assert np.allclose(hy.predict(again, cs), lo, atol=1e-5)
    cv = hy.cross_validate(cs, epochs=3, seed=0, mixes=((1.0, 0.0), (0.0, 1.0)),
                           realistic_folds=2)
    assert cv["best"] == [0.0, 1.0]
    # realistic twins are held out too (in their own folds); the host never is nor learns
    assert cv["held_out"] == ["hybrid-0", "hybrid-1", "realistic-A", "realistic-B"]
    assert cv["froc_realistic"]["0,1"]["n_nodules"] == (
        (np.isin(cs.group, ["realistic-A", "realistic-B"])) & (cs.label == 1)).sum()
    assert hy.mean_sensitivity(cv["froc"]["0,1"]) > hy.mean_sensitivity(cv["hand_only"])
    assert np.allclose(mix_evidence(np.array([1.0]), np.array([2.0]), 1.0, 0.5), 1.0 + 4.0)


def test_findings_use_the_fpr_network_when_loaded():
    """find_findings with an fpr network mixes its logit in (other scores, same API); an
    engine whose manifest lacks it still loads (hand-set score)."""
    import torch

    from lungviewer.cad.engine import CadEngine
    from lungviewer.cad.findings import find_findings
    from lungviewer.cad.networks import FprNet
    from lungviewer.study.volume import Volume

    eng = CadEngine.load(device="cpu")
    hu, lung = _lungs()
    z, y, x = np.indices(hu.shape)
    hu[((z - 15) * 2.5) ** 2 + ((y - 60) * 0.7) ** 2 + ((x - 80) * 0.7) ** 2 <= 25] = 30
    vol = Volume(hu, SPACING, np.zeros((hu.shape[0], 3)))
    base = {k: v for k, v in eng.models.items() if k != "fpr"}
    hand = find_findings(vol, lung, base)
    assert hand
    torch.manual_seed(0)
    net = FprNet(mix=(0.0, 1.0)).eval()
    with_fpr = find_findings(vol, lung, {**base, "fpr": net})
    assert len(with_fpr) >= 1 and all(0 <= f.score <= 1 for f in with_fpr)
    assert sorted(round(f.score, 6) for f in with_fpr) != sorted(round(f.score, 6)
                                                                 for f in hand)
