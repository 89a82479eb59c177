"""Hybrid training images for the findings' false-positive reduction: real lungs, inserted
nodules.

The twins' vessels are sparse blobs, so networks trained on them call real vessel
cross-sections nodules. Here the *host* is a real CT of a training patient (the real
development scan LIDC-IDRI-0006): its lungs (lung mask, threshold method) keep their real
vessel tree, hilum, fissures and noise, and nodules drawn from **other training patients'**
real LIDC contours (the readers' ≥ 50 % consensus, :func:`lungviewer.synth.twin.nodule_stamps`)
are inserted at random places inside the lung mask — a third of them touching the pleura,
a third touching a vessel. Each nodule is resampled to the host's voxel size, given a soft
edge (partial volume, a Gaussian of ``lesion.EDGE_MM``) and HU from its readers' texture rating
(solid −50…+50, ground glass −650…−400, part-solid a solid core in ground glass; calcified a
dense core), blended over the host's smoothed HU with ``max`` (a vessel through a ground-glass
nodule stays bright), and the host's own noise (its high-pass residual) is kept everywhere,
so the inserted nodule carries real CT noise.

Every candidate of the findings (:func:`lungviewer.cad.findings.candidates`, the same
candidates and shortlist) is labelled: **positive** within an inserted nodule's or a real
host nodule's (≥ 3 mm) hit radius, **ignored** on the host's small-nodule and non-nodule
marks, **negative** otherwise (real vessels, hilum, fissures, chest wall). Twins of other
training patients (:func:`lungviewer.synth.demo.load_demo`) add candidates labelled by
their readers' nodules: realistic twins (dense vessel tree, soft nodules, varied
acquisition: vessel negatives of many more chests than the one host) and default twins
(so the model keeps finding the default twin's sharp nodules, as in the demo study). These
are hybrid and synthetic images, not patient images with real nodules at those places; the
model card says so.

Only training patients (:func:`lungviewer.cad.training.splits.make_split`) are used as
donors, hosts and twins; the held-out test patients never are. Arrays ``(z, y, x)``, HU
``int16``, spacing ``(z, y, x)`` mm.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from lungviewer.synth.lesion import nodule_hu, soft_edge

log = logging.getLogger(__name__)

#: the real CT folder beside the source tree (../shared/data/real)
REAL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "real"
#: the real development scan (a training patient)
HOST = REAL / "LIDC-IDRI-0006"
HOST_PATIENT = "LIDC-IDRI-0006"
#: the real hosts of the hybrid volumes: (name, folder under REAL, hybrid volumes). The two
#: series from other scanners (a GE CT angiogram at 0.8 mm, a Siemens B31f series at 1 mm,
#: both partial) are not LIDC patients, carry no nodule labels and are development data;
#: their unchanged candidates are negatives only for measuring (groups ``host-<name>``).
HOSTS = (("LIDC-IDRI-0006", "LIDC-IDRI-0006", 6),
         ("chest-cta", "chest-cta-9328-0117-partial", 4),
         ("LungFCP", "LungFCP-01-0001-partial/ct", 4))
#: hand-outlined vessels of a host (ground truth "vessel, not nodule"): no nodule is
#: inserted within MIN_GAP_MM of them, so they stay negatives
VESSELS = {"LungFCP": "LungFCP-01-0001-partial/vessels.npz"}
#: training twins whose candidates join the hybrid ones
TWINS = ("LIDC-IDRI-0003", "LIDC-IDRI-0005")
#: realistic twins (dense vessel tree, soft nodules, varied acquisition) of this many
#: training patients join them: neither hybrid donors nor the host (:func:`realistic_patients`)
REALISTIC_TWINS = 24
#: the default twins of this many of those patients join them too, so that the network
#: keeps finding the default twin's sharp, uniform nodules (the demo study is one)
DEFAULT_TWINS = 8
MIN_D_MM, MAX_D_MM = 3.0, 30.0
NODULES_PER_VOLUME = 14
MIN_GAP_MM = 25.0  # between inserted nodules and from the host's marks
HIT_RADIUS_MM = 5.0  # a candidate within max(radius, this) of a nodule is positive
TURNS = 4  # patch sets per candidate (random turns about z), for augmentation
EPOCHS = 8
#: (hand-set evidence, network logit × temperature) weights tried by cross-validation
MIXES = ((1.0, 0.0), (1.0, 0.25), (1.0, 0.5), (1.0, 1.0), (1.0, 2.0), (0.5, 1.0), (0.0, 1.0))


@dataclass
class Donor:
    """One training patient's nodule as drawn (consensus outline) in its scan's voxels."""

    patient: str
    masks: np.ndarray  # (n, h, w) bool
    spacing: tuple[float, float, float]
    texture: float
    calcified: bool
    diameter_mm: float


@dataclass
class Inserted:
    centre: np.ndarray  # voxel (z, y, x)
    diameter_mm: float
    patient: str
    texture: float


@dataclass
class CandidateSet:
    """Labelled candidates of several volumes (one row per candidate)."""

    patches: np.ndarray  # (n, K, 3, P, P) float32: K turns about z (the first unturned)
    extra: np.ndarray  # (n, E) float32 shape features
    hand: np.ndarray  # (n,) the hand-set evidence (log-odds)
    label: np.ndarray  # (n,) 1 nodule, 0 not, -1 ignored
    group: np.ndarray  # (n,) volume name ("hybrid-3", "twin-LIDC-IDRI-0003")
    centre_mm: np.ndarray  # (n, 3)
    diameter_mm: np.ndarray  # (n,)
    truths: dict = field(default_factory=dict)  # group -> ScanTruth

    def subset(self, keep) -> CandidateSet:
        keep = np.asarray(keep)
        g = set(np.unique(self.group[keep]))
        return CandidateSet(self.patches[keep], self.extra[keep], self.hand[keep],
                            self.label[keep], self.group[keep], self.centre_mm[keep],
                            self.diameter_mm[keep],
                            {k: v for k, v in self.truths.items() if k in g})

    @staticmethod
    def concat(parts: list[CandidateSet]) -> CandidateSet:
        t: dict = {}
        for p in parts:
            t.update(p.truths)
        return CandidateSet(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                              ("patches", "extra", "hand", "label", "group", "centre_mm",
                               "diameter_mm")), t)

    def save(self, path: Path) -> None:
        from lungviewer.fileio import atomic_path

        truths = {f"truth::{g}::{k}": np.asarray(getattr(t, k)) for g, t in self.truths.items()
                  for k in ("nodules_mm", "radius_mm", "readers", "ignore_mm",
                            "ignore_radius_mm")}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, patches=self.patches, extra=self.extra, hand=self.hand,
                         label=self.label, group=self.group.astype(str),
                         centre_mm=self.centre_mm, diameter_mm=self.diameter_mm, **truths)

    @staticmethod
    def load(path: Path) -> CandidateSet:
        from .evaluate_real import ScanTruth

        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        tr: dict = {}
        for k in [k for k in d if k.startswith("truth::")]:
            _, g, name = k.split("::")
            tr.setdefault(g, {})[name] = d.pop(k)
        truths = {g: ScanTruth(**v) for g, v in tr.items()}
        return CandidateSet(d["patches"], d["extra"], d["hand"], d["label"], d["group"],
                            d["centre_mm"], d["diameter_mm"], truths)


# -- donors -------------------------------------------------------------------------------
def donor_patients(n: int, seed: int = 0) -> list[str]:
    """``n`` training patients (never a test patient, never the host), seeded order."""
    from .splits import make_split, test_patients

    train = sorted(make_split().train - {HOST_PATIENT} - set(test_patients()))
    rng = np.random.default_rng(seed)
    return [train[i] for i in rng.permutation(len(train))[:n]]


def realistic_patients(n: int, exclude: set[str], seed: int = 1) -> list[str]:
    """``n`` training patients with at least one nodule ≥ 3 mm for realistic twins, none
    in ``exclude`` (the hybrid donors and the host) and never a test patient."""
    from .splits import make_split, test_patients

    pool = sorted(make_split().train - exclude - {HOST_PATIENT} - set(test_patients()))
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(pool)):
        if len(out) == n:
            break
        if donors_of([pool[i]]):
            out.append(pool[i])
    return out


def donors_of(patients: list[str]) -> list[Donor]:
    """The nodules (≥ 3 mm, ≤ 30 mm equivalent diameter) of ``patients``' first scans."""
    from lungviewer.study.lidc_db import get_database
    from lungviewer.synth.twin import nodule_stamps, twin_spacing

    from .splits import test_patients

    db = get_database()
    bad = set(patients) & set(test_patients())
    if bad:
        raise ValueError(f"test patients may not donate training nodules: {sorted(bad)}")
    out = []
    for p in patients:
        try:
            scan = db.scan_by_patient(p)
        except KeyError:
            continue
        sp = twin_spacing(scan)
        for st in nodule_stamps(scan, db.annotations(scan.id)):
            area = st.masks.sum(axis=(1, 2)).max() * sp[1] * sp[2]
            d = 2.0 * np.sqrt(area / np.pi)
            if MIN_D_MM <= d <= MAX_D_MM:
                out.append(Donor(p, st.masks, sp, float(st.ratings.get("texture", 5)),
                                 bool(st.calcified), float(d)))
    return out


# -- rendering one nodule -----------------------------------------------------------------
def render_nodule(donor: Donor, spacing, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(occupancy 0..1, target HU) float32 arrays of ``donor`` at ``spacing`` (z, y, x mm),
    randomly flipped / turned in-plane, with a soft edge and HU from its texture
    (:mod:`lungviewer.synth.lesion`)."""
    m = np.pad(donor.masks.astype(np.float32), 3)
    m = np.rot90(m, int(rng.integers(4)), axes=(1, 2))
    if rng.random() < 0.5:
        m = m[:, :, ::-1]
    if rng.random() < 0.5:
        m = m[::-1]
    f = np.asarray(donor.spacing, float) / np.asarray(spacing, float)
    occ = ndimage.zoom(np.ascontiguousarray(m), f, order=1, grid_mode=True, mode="grid-constant")
    occ = soft_edge(occ, spacing)
    return occ, nodule_hu(occ, donor.texture, donor.calcified, spacing, rng)


def _pick_centres(mask: np.ndarray, hu: np.ndarray, spacing, n: int, avoid_mm: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """``n`` voxels in the lung mask, a third at the pleura, a third beside a vessel, at
    least ``MIN_GAP_MM`` from each other and from ``avoid_mm``."""
    sp = np.asarray(spacing, float)
    edge = mask & ~ndimage.binary_erosion(mask, iterations=2)
    vessel = mask & ndimage.binary_dilation((hu > -300) & mask, iterations=2) & ~edge
    pools = [np.argwhere(edge), np.argwhere(vessel), np.argwhere(mask)]
    chosen: list[np.ndarray] = []
    avoid = [a for a in np.asarray(avoid_mm, float).reshape(-1, 3)]
    tries = 0
    while len(chosen) < n and tries < 50 * n:
        tries += 1
        pool = pools[len(chosen) % 3]
        if len(pool) == 0:
            continue
        c = pool[rng.integers(len(pool))]
        if avoid and np.min(np.linalg.norm(np.asarray(avoid) - c * sp, axis=1)) < MIN_GAP_MM:
            continue
        chosen.append(c)
        avoid.append(c * sp)
    return np.asarray(chosen, float).reshape(-1, 3)


def insert_nodules(hu: np.ndarray, mask: np.ndarray, spacing, donors: list[Donor], n: int,
                   rng: np.random.Generator, avoid_mm=np.zeros((0, 3))
                   ) -> tuple[np.ndarray, list[Inserted]]:
    """A copy of ``hu`` with ``n`` of ``donors``' nodules inserted in the lung ``mask``."""
    out = np.asarray(hu, np.float32).copy()
    centres = _pick_centres(mask, hu, spacing, n, avoid_mm, rng)
    placed = []
    for c in centres:
        d = donors[int(rng.integers(len(donors)))]
        occ, target = render_nodule(d, spacing, rng)
        half = np.asarray(occ.shape) // 2
        lo = c.astype(int) - half
        a = np.maximum(lo, 0)
        b = np.minimum(lo + occ.shape, out.shape)
        if np.any(b <= a):
            continue
        so = tuple(slice(i - j, k - j) for i, j, k in zip(a, lo, b))
        sv = tuple(slice(i, k) for i, k in zip(a, b))
        region = out[sv]
        smooth = ndimage.gaussian_filter(region, (0, 1.0, 1.0))
        resid = region - smooth  # the host's own noise, kept
        o = occ[so]
        out[sv] = smooth + o * (np.maximum(target[so], smooth) - smooth) + resid
        k, r, cc = np.nonzero(o > 0.5)
        if len(k) == 0:
            continue
        cen = np.array([k.mean(), r.mean(), cc.mean()]) + a
        placed.append(Inserted(cen, d.diameter_mm, d.patient, d.texture))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16), placed


# -- candidates and their labels ----------------------------------------------------------
def label_candidates(centre_mm: np.ndarray, truth) -> np.ndarray:
    """1 within a counted nodule's hit radius, -1 on an ignored mark, 0 otherwise."""
    lab = np.zeros(len(centre_mm), np.int64)
    if len(truth.ignore_mm):
        d = np.linalg.norm(centre_mm[:, None] - truth.ignore_mm[None], axis=2)
        lab[(d <= truth.ignore_radius_mm[None]).any(1)] = -1
    if len(truth.nodules_mm):
        d = np.linalg.norm(centre_mm[:, None] - truth.nodules_mm[None], axis=2)
        lab[(d <= truth.radius_mm[None]).any(1)] = 1
    return lab


def candidate_set(volume, mask: np.ndarray, truth, models: dict, group: str,
                  device: str = "cpu") -> CandidateSet:
    """The findings' candidates of ``volume`` with their inputs and labels."""
    from lungviewer.cad import findings as fd

    sp = tuple(float(s) for s in volume.spacing)
    blobs = fd.candidates(volume.hu, mask, sp)
    n = len(blobs)
    if n == 0:
        z = np.zeros(0, np.float32)
        return CandidateSet(np.zeros((0, TURNS, 3, fd.FPR_PATCH, fd.FPR_PATCH), np.float32),
                            np.zeros((0, fd.FPR_EXTRA), np.float32), z, z.astype(int),
                            np.zeros(0, str), np.zeros((0, 3)), z, {group: truth})
    det, head_z = fd.network_evidence(models, fd.plane_patches(volume.hu, sp, blobs.centre),
                                      device)
    hand = fd.hand_evidence(head_z, det, fd.shape_evidence(blobs))
    cmm = blobs.centre * np.asarray(sp)
    rng = np.random.default_rng(zlib.crc32(group.encode()))
    turns = [fd.fpr_patches(volume.hu, sp, blobs.centre,
                            angles=np.zeros(n) if k == 0 else rng.uniform(0, 2 * np.pi, n))
             for k in range(TURNS)]
    return CandidateSet(np.stack(turns, 1), fd.fpr_extra(blobs),
                        hand.astype(np.float32), label_candidates(cmm, truth),
                        np.full(n, group), cmm, blobs.diameter_mm.astype(np.float32),
                        {group: truth})


def _truth_of(volume, folder: Path):
    from lungviewer.study.nodules import load_study_annotations

    from .evaluate_real import _truth

    ann = load_study_annotations(volume, folder, use_database=False)
    return _truth(ann, volume)[0]


def _with_inserted(truth, placed: list[Inserted], spacing):
    from .evaluate_real import ScanTruth

    sp = np.asarray(spacing, float)
    c = np.asarray([p.centre * sp for p in placed], float).reshape(-1, 3)
    r = np.asarray([max(p.diameter_mm / 2.0, HIT_RADIUS_MM) for p in placed], float)
    return ScanTruth(np.concatenate([truth.nodules_mm, c]),
                     np.concatenate([truth.radius_mm, r]),
                     np.concatenate([truth.readers, np.full(len(placed), 4)]),
                     truth.ignore_mm, truth.ignore_radius_mm)


def outlined_vessels(volume, path: Path) -> np.ndarray:
    """(n, 3) voxel coordinates (z, y, x) of ``volume`` on the hand-outlined vessels in
    ``path`` (``vessels.npz``: ``mask`` (z, y, x) bool on slices at ``z_mm``, the volume's
    frame of reference and in-plane grid; slices matched by z within half a slice)."""
    with np.load(path, allow_pickle=False) as f:
        m, zmm = f["mask"].astype(bool), np.asarray(f["z_mm"], float)
    vz = np.asarray(volume.positions, float)[:, 2]
    out = []
    for k, z in enumerate(zmm):
        j = int(np.argmin(np.abs(vz - z)))
        if abs(vz[j] - z) <= 0.5 * float(volume.spacing[0]) + 1e-3 and m[k].any():
            yx = np.argwhere(m[k])
            out.append(np.column_stack([np.full(len(yx), j), yx]))
    return np.concatenate(out).astype(float) if out else np.zeros((0, 3))


def _host(name: str, folder: Path):
    """(volume, lung mask, truth, points to avoid in mm) of a real host."""
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.study.dicom_series import load_series

    from .evaluate_real import ScanTruth

    vol = load_series(folder)
    if name == HOST_PATIENT:
        truth = _truth_of(vol, Path(folder))
    else:  # not LIDC patients: no nodule labels
        z = np.zeros((0, 3))
        truth = ScanTruth(z, np.zeros(0), np.zeros(0, int))
    avoid = np.concatenate([truth.nodules_mm, truth.ignore_mm])
    if name in VESSELS and (REAL / VESSELS[name]).is_file():
        pts = outlined_vessels(vol, REAL / VESSELS[name])
        avoid = np.concatenate([avoid, pts[::25] * np.asarray(vol.spacing, float)])
    return vol, segment_lungs(vol.hu).mask, truth, avoid


def build_candidates(models: dict, hosts=HOSTS, donors_per_seed: int = 8,
                     nodules: int = NODULES_PER_VOLUME, twins=TWINS, real: Path = REAL,
                     device: str = "cpu", realistic: int = REALISTIC_TWINS,
                     default: int = DEFAULT_TWINS,
                     progress: Callable[[str, int, int], None] | None = None) -> CandidateSet:
    """Labelled candidates of hybrid volumes on each real host of ``hosts`` ((name, folder
    under ``real``, volumes); group ``hybrid-<host>-<seed>``, each seed's donors its own
    training patients, so that leaving a host out leaves its donors out), of the training
    ``twins``, of ``realistic`` realistic twins (groups ``realistic-<patient>``), of the
    default twins of the first ``default`` of those patients (``twin-<patient>``) and of
    the unchanged hosts (``host-<name>``: for measuring only)."""
    from dataclasses import replace

    from lungviewer.imaging.parenchyma import segment_lungs

    from .splits import make_split

    train = make_split().train
    for p in twins:
        if p not in train:
            raise ValueError(f"{p} is not a training patient; twins must be training patients")
    hosts = [(n, Path(real) / f, k) for n, f, k in hosts]
    for _, f, _ in hosts:
        if not f.is_dir():
            raise FileNotFoundError(f"the real host scan {f} is absent (../shared/data/real)")
    n_seeds = sum(k for _, _, k in hosts)
    pats = donor_patients(donors_per_seed * n_seeds)
    real_twins = realistic_patients(realistic, set(pats)) if realistic else []
    twins = ([(p, False) for p in twins] + [(p, True) for p in real_twins]
             + [(p, False) for p in real_twins[:default]])
    total = n_seeds + len(twins)
    parts, s = [], 0
    for name, folder, k in hosts:
        vol, mask0, truth0, avoid = _host(name, folder)
        parts.append(candidate_set(vol, mask0, truth0, models, f"host-{name}", device))
        for _ in range(k):
            if progress is not None:
                progress("hybrid volumes", s, total)
            donors = donors_of(pats[s * donors_per_seed:(s + 1) * donors_per_seed])
            if donors:
                rng = np.random.default_rng(1000 + s)
                hu, placed = insert_nodules(vol.hu, mask0, vol.spacing, donors, nodules, rng,
                                            avoid)
                hv = replace(vol, hu=hu)
                mask = segment_lungs(hu).mask  # as the viewer would make it
                t = _with_inserted(truth0, placed, vol.spacing)
                parts.append(candidate_set(hv, mask, t, models, f"hybrid-{name}-{s}", device))
                log.info("hybrid %s %d: %d nodules inserted from %d donors, %d candidates "
                         "(%d positive)", name, s, len(placed), len(donors),
                         len(parts[-1].label), int((parts[-1].label == 1).sum()))
            s += 1
    for j, (p, realistic_twin) in enumerate(twins):
        if progress is not None:
            progress("hybrid volumes", n_seeds + j, total)
        parts.append(twin_candidates(models, p, realistic_twin, device))
    if progress is not None:
        progress("hybrid volumes", total, total)
    return CandidateSet.concat(parts)


def twin_candidates(models: dict, patient: str, realistic: bool,
                    device: str = "cpu") -> CandidateSet:
    """The labelled candidates of a training patient's twin (``realistic``: its realistic
    twin), group ``realistic-<patient>`` or ``twin-<patient>``."""
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.synth.demo import load_demo

    tv, folder = load_demo(patient, realistic=realistic)
    mask = segment_lungs(tv.hu).mask
    return candidate_set(tv, mask, _truth_of(tv, folder), models,
                         f"{'realistic' if realistic else 'twin'}-{patient}", device)


# -- training, cross-validation, FROC -----------------------------------------------------
def fit(cs: CandidateSet, epochs: int = EPOCHS, seed: int = 0, device: str = "cpu",
        progress: Callable[[int, int], None] | None = None):
    """Train an :class:`~lungviewer.cad.networks.FprNet` on the labelled candidates of
    ``cs`` (ignored ones left out): class-weighted logistic loss, Adam, random turns about
    z and flips. Returns (model, history)."""
    import torch

    from ..networks import FprNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    keep = cs.label >= 0
    x, e, y = cs.patches[keep], cs.extra[keep], cs.label[keep].astype(np.float32)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("the false-positive reduction needs both nodules and non-nodules")
    model = FprNet(cs.extra.shape[1], cs.patches.shape[-1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    pos_w = torch.tensor(float((y == 0).sum()) / max(float((y == 1).sum()), 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_w.to(device))
    hist = []
    for ep in range(epochs):
        model.train()
        order = rng.permutation(len(y))
        total = 0.0
        for i in range(0, len(y), 64):
            b = order[i:i + 64]
            xb = x[b, rng.integers(x.shape[1], size=len(b))]
            if rng.random() < 0.5:
                xb = xb[..., ::-1]  # mirror the planes' columns
            if rng.random() < 0.5:
                xb = xb[..., ::-1, :]  # and rows (z upside down in the vertical planes)
            xt = torch.from_numpy(np.ascontiguousarray(xb)).to(device)
            out = model(xt, torch.from_numpy(e[b]).to(device))
            loss = loss_fn(out, torch.from_numpy(y[b]).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        hist.append({"epoch": ep + 1, "loss": round(total / len(y), 4)})
        if progress is not None:
            progress(ep + 1, epochs)
    return model.eval(), hist


def predict(model, cs: CandidateSet, device: str = "cpu") -> np.ndarray:
    """The model's logits (n,) of ``cs``'s unturned patches."""
    import torch

    out = np.zeros(len(cs.label), np.float32)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(out), 512):
            out[i:i + 512] = model(torch.from_numpy(cs.patches[i:i + 512, 0]).to(device),
                                   torch.from_numpy(cs.extra[i:i + 512]).to(device)
                                   ).cpu().numpy()
    return out


def finding_table(cs: CandidateSet, evidence: np.ndarray,
                  max_findings: int | None = None):
    """The findings each volume of ``cs`` gives when its candidates are scored by
    ``evidence`` (as find_findings: ranked, nearby ones suppressed), each labelled by LUNA16
    matching against the volume's truth (nodules marked by ≥ 1 reader):
    a :class:`~lungviewer.cad.training.calibration.FindingTable`."""
    from lungviewer.cad.findings import MAX_FINDINGS, _suppress

    from .calibration import FindingTable
    from .evaluate_real import match_findings

    cap = MAX_FINDINGS if max_findings is None else max_findings
    cols: list[list] = [[], [], [], []]
    counts, n_nod = {}, 0
    for g in sorted(set(cs.group.astype(str))):
        sel = np.nonzero(cs.group == g)[0]
        ev = np.asarray(evidence, float)[sel]
        order = np.argsort(-ev, kind="stable")
        kept = _suppress(cs.centre_mm[sel], cs.diameter_mm[sel] / 2.0, order)[:cap]
        t = cs.truths[g]
        lab, which = match_findings(cs.centre_mm[sel][kept], ev[kept], t, 1)
        for c, v in zip(cols, (np.full(len(kept), g), ev[kept], lab,
                               np.where(which >= 0, which + n_nod, -1))):
            c.append(v)
        counts[g] = len(t.nodules_mm)
        n_nod += len(t.nodules_mm)
    group, ev, lab, nod = (np.concatenate(c) if c else np.zeros(0) for c in cols)
    return FindingTable(group.astype(str), ev.astype(float), lab.astype(int), nod.astype(int),
                        counts)


def froc_of(cs: CandidateSet, evidence: np.ndarray, max_findings: int | None = None) -> dict:
    """FROC (:func:`lungviewer.cad.training.evaluate_real.froc`) of :func:`finding_table`."""
    from .evaluate_real import froc

    t = finding_table(cs, evidence, max_findings)
    scans = [(t.evidence[t.group == g], t.label[t.group == g], t.nodule[t.group == g])
             for g in sorted(t.n_nodules)]
    return froc(scans, sum(t.n_nodules.values()))


def mean_sensitivity(f: dict) -> float:
    return float(np.mean([f[k] for k in ("1", "2", "4", "8")]))


def fold_of(group: str) -> str:
    """The cross-validation fold a hybrid volume belongs to: its host
    (``hybrid-<host>-<seed>`` → ``<host>``); a volume named otherwise is its own."""
    parts = group.split("-")
    return "-".join(parts[1:-1]) if parts[0] == "hybrid" and len(parts) > 2 else group


def cross_validate(cs: CandidateSet, epochs: int = EPOCHS, seed: int = 0,
                   device: str = "cpu", mixes=MIXES, realistic_folds: int = 4,
                   progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Out-of-fold predictions: the hybrid volumes of each host are one fold (a network
    never sees the host it is measured on, nor the donors of its volumes), and the realistic
    twins are split into ``realistic_folds`` folds; each fold's model learns from every
    other volume except the unchanged hosts. Returns the FROC of the held-out volumes
    pooled (``froc``; also ``froc_hybrid``, ``froc_realistic`` and ``froc_host`` per host)
    for each mix of (hand-set, network) evidence, the best mix (by mean sensitivity at 1,
    2, 4, 8 FP per scan, pooled), the folds, and ``oof`` — the out-of-fold logits (not
    for the manifest)."""
    from lungviewer.cad.findings import mix_evidence

    g = cs.group.astype(str)
    hyb = sorted(x for x in set(g) if x.startswith("hybrid-"))
    rea = sorted(x for x in set(g) if x.startswith("realistic-"))
    by_host: dict[str, list[str]] = {}
    for h in hyb:
        by_host.setdefault(fold_of(h), []).append(h)
    if len(by_host) < 2:
        raise ValueError("cross-validation needs hybrid volumes of at least two folds")
    folds = list(by_host.values()) + [f for f in (rea[i::realistic_folds]
                                                  for i in range(realistic_folds)) if f]
    learn = ~np.char.startswith(g, "host")
    oof = np.full(len(g), np.nan, np.float32)
    for i, fold in enumerate(folds):
        if progress is not None:
            progress("cross-validation", i, len(folds))
        test = np.isin(g, fold)
        model, _ = fit(cs.subset(~test & learn), epochs, seed, device)
        oof[test] = predict(model, cs.subset(test), device)
    if progress is not None:
        progress("cross-validation", len(folds), len(folds))

    def table_of(groups: list[str]) -> dict:
        sel = np.isin(g, groups)
        held = cs.subset(sel)
        return {f"{wh:g},{wf:g}": froc_of(held, mix_evidence(held.hand, oof[sel], wh, wf))
                for wh, wf in mixes}

    table = table_of(hyb + rea)
    best = max(table, key=lambda k: mean_sensitivity(table[k]))
    return {"froc": table, "best": [float(v) for v in best.split(",")],
            "held_out": hyb + rea, "hand_only": table["1,0"], "folds": folds,
            "froc_hybrid": table_of(hyb), "froc_realistic": table_of(rea) if rea else {},
            "froc_host": {h: table_of(v) for h, v in by_host.items()}, "oof": oof}


def calibrate_findings(cs: CandidateSet, cv: dict) -> dict:
    """The findings' calibration and operating points from the cross-validation's
    out-of-fold logits at its best mix (:func:`lungviewer.cad.training.calibration.
    calibrate`; folds as in :func:`cross_validate`)."""
    from lungviewer.cad.findings import mix_evidence

    from .calibration import calibrate

    g = cs.group.astype(str)
    sel = np.isin(g, cv["held_out"])
    held = cs.subset(sel)
    wh, wf = cv["best"]
    table = finding_table(held, mix_evidence(held.hand, cv["oof"][sel], wh, wf))
    return calibrate(table, cv["folds"])
