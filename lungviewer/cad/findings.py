"""CAD findings of a whole study: 3-D candidates → false-positive reduction → ranked marks.

1. **Candidates** (:func:`lungviewer.imaging.blobs.find_blobs`): local maxima of a
   multi-scale 3-D Laplacian inside the lung mask dilated a few mm (juxta-pleural nodules
   stay in; the larger a blob, the farther outside the mask its centre may lie), away from
   the reconstruction circle's edge, each with the Hessian's blob-vs-tube evidence and a
   diameter. A candidate with less than ``MIN_LUNG_SHELL`` of a shell around it (1.25 radii)
   in the lung mask is dropped (hilum, mediastinum, chest wall, liver dome: a nodule sits in
   the lung; one on the pleura has about half its shell there). The ``shortlist`` strongest
   by Li's dot enhancement go on.
2. **False-positive reduction**: 3-D shape evidence plus the networks on the candidate's
   axial 50×50 patch (the scan's in-plane pixel size). The evidence (log-odds,
   :func:`combine`) is

       head + W_DET · (0.5 · min + 0.5 · mean of the detector's plane logits) + shape,
       shape = log(dot enhancement / 100) + 2 · (λ3/λ1 − 0.4) + 2 · log(diameter / 4 mm)
               + (smoothed HU + 400) / 100 + 2 · (lung shell − 1)

   where ``head`` is the slice head's "some nodule" vs "no nodule" logit (as in the 2-D slice
   scan), squashed to 0..1. The detector's own logit is left out (``W_DET = 0``): on the real
   development scan it is high on most vessel cross-sections (the twin it learned from has
   sparse vessels), and on the coronal and sagittal planes (``planes`` > 1 in
   :func:`find_findings`, resampled to square pixels) it lowered real nodules below vessels
   while helping on twins. The weights were set by hand on the synthetic twins of training
   patients (LIDC-IDRI-0003, -0005, -0006) and the real development scan (LIDC-IDRI-0006, a
   training patient; its nodules and non-nodule marks), not fitted; no test patient's images
   were looked at.
   When the weights have the false-positive reduction network (``models["fpr"]``,
   :class:`~lungviewer.cad.networks.FprNet` on three orthogonal 1 mm planes and the shape
   features, trained on hybrid images — real lungs with inserted nodules — and realistic
   twins, :mod:`lungviewer.cad.training.hybrid`), the evidence becomes
   ``mix[0] · evidence + mix[1] · TEMPERATURE · its logit`` (:func:`mix_evidence`; ``mix``
   chosen on held-out hybrid volumes and realistic twins, stored with the network). The
   findings are ranked by the evidence; their score is
   ``squash(evidence / (mix[0] + mix[1]))`` (:func:`combine`), 0..1.
3. **Marks**: candidates within the radius of a higher-ranked one (at least
   ``MIN_SEPARATION_MM``) are dropped; the class is
   the slice head's benign / malignant verdict on the axial patch.

:func:`slice_ranking` reads the per-slice scores of the slice recommendation off the
findings: each slice gets the best score of the findings whose extent covers it.

Arrays are ``(z, y, x)``; HU ``int16``; spacing ``(z, y, x)`` mm. torch is imported lazily.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungviewer.cancel import Cancelled
from lungviewer.imaging.blobs import Blobs, find_blobs
from lungviewer.imaging.patches import DETECTOR, GREY_LO, detector_patches, grey_level

log = logging.getLogger(__name__)

#: candidates that reach the networks (by Li's dot enhancement)
SHORTLIST = 300
#: findings kept per study, most likely first (the rest lie below every operating point)
MAX_FINDINGS = 100
#: weights of the evidence (log-odds), see the module docstring
W_HEAD, W_DET = 1.0, 0.0
W_DOT, W_RATIO, W_DIAM, W_HU, W_SHELL = 1.0, 2.0, 2.0, 0.01, 2.0
#: a nodule lies in the lung: at least this share of a shell around it (1.25 radii) is lung
#: (a nodule on the pleura about half; the hilum, mediastinum and liver dome less)
MIN_LUNG_SHELL = 0.4
DOT_REF, RATIO_REF, DIAM_REF, HU_REF = 100.0, 0.4, 4.0, -400.0
#: two findings closer than this (mm), or than the better one's radius, are one
MIN_SEPARATION_MM = 4.0
TEMPERATURE = 4.0
#: the false-positive reduction network's input: 3 planes of FPR_PATCH² at FPR_STEP_MM, plus
#: FPR_EXTRA shape features (:func:`fpr_patches`, :func:`fpr_extra`)
FPR_PATCH, FPR_STEP_MM, FPR_EXTRA = 32, 1.0, 5
#: (hand-set evidence, network logit × TEMPERATURE) weights when the network is loaded
W_MIX = (1.0, 0.0)


@dataclass
class Finding:
    """One CAD finding: centre voxel (0-based ``slice`` z, ``row`` y, ``col`` x), size and
    ``score``, the calibrated probability 0..1 that it is a nodule or a mass
    (:func:`calibrated`; higher = more likely).

    Before sizing (:mod:`lungviewer.reading.lesions`) ``diameter_mm`` is the blob filter's
    scale and the axes are 0; after it, ``diameter_mm`` is the mean of the long and short
    axis of the finding's own 3-D segmentation, ``volume_mm3`` its volume, ``extent`` its
    voxel bounding box ``(z0, z1, y0, y1, x0, x1)`` (end-exclusive) and ``kind`` "mass" when
    the long axis exceeds :data:`lungviewer.reading.lesions.MASS_MM`. ``malignancy`` is the malignancy network's
    expected level 1..5 (0: not computed, e.g. below every operating point)."""

    slice: int
    row: int
    col: int
    diameter_mm: float
    score: float
    kind: str = "nodule"
    evidence: float = 0.0  # log-odds the findings are ranked by (before calibration)
    detector_logits: tuple[float, ...] = ()  # the detector's logit per plane (axial first)
    dot: float = 0.0  # λ3/λ1 of the Hessian (1 sphere, 0 tube)
    long_axis_mm: float = 0.0
    short_axis_mm: float = 0.0
    volume_mm3: float = 0.0
    extent: tuple[int, int, int, int, int, int] | None = None
    merged: int = 1  # candidates on this lesion
    malignancy: float = 0.0

    @property
    def sized(self) -> bool:
        """Whether the size comes from the finding's own segmentation."""
        return self.extent is not None

    def as_dict(self, threshold: float | None = None) -> dict:
        """JSON of the finding; ``shown`` says whether it lies at or above ``threshold``
        (the operating point's probability; None: no operating point, every one shown)."""
        d = {"slice": int(self.slice), "row": int(self.row), "col": int(self.col),
             "probability": round(float(self.score), 4),
             "shown": bool(threshold is None or self.score >= threshold),
             "kind": self.kind, "diameter_mm": round(float(self.diameter_mm), 1),
             "measured": self.sized}
        if self.sized:
            d.update(long_axis_mm=round(float(self.long_axis_mm), 1),
                     short_axis_mm=round(float(self.short_axis_mm), 1),
                     volume_mm3=round(float(self.volume_mm3), 1),
                     extent=[int(v) for v in self.extent], candidates=int(self.merged))
        if self.malignancy:
            d["malignancy_expected"] = round(float(self.malignancy), 2)
        return d


#: what a slice of the recommendation shows, read off the findings
FINDING_KINDS = ("no finding", "nodule", "mass")


def calibrated(evidence: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Probability 0..1 that a finding is a nodule or a mass, from its ``evidence``
    (log-odds) by the calibration stored with the false-positive reduction network
    (``{"method": "platt", "a": a, "b": b}``: ``1 / (1 + exp(-(a · evidence + b)))``, fitted
    on held-out volumes). Weights without one (older folders) give :func:`squash` of the
    evidence — a score, not a probability."""
    ev = np.asarray(evidence, np.float64)
    if not calibration:
        return squash(ev)
    if calibration.get("method") != "platt":
        raise ValueError(f"unknown calibration method {calibration.get('method')!r}")
    z = float(calibration["a"]) * ev + float(calibration["b"])
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def plane_patches(hu: np.ndarray, spacing: tuple[float, float, float],
                  centres: np.ndarray, size: int = DETECTOR,
                  planes: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """(n, len(planes), size, size) grey detector patches (0..1) through each centre
    (z, y, x voxel): plane 0 axial (rows y, cols x), 1 coronal (rows z, cols x), 2 sagittal
    (rows z, cols y), all at the in-plane pixel size (coronal and sagittal resampled along z,
    trilinear); outside the volume is air."""
    c = np.asarray(centres, float).reshape(-1, 3)
    n = len(c)
    out = np.empty((n, len(planes), size, size), np.float32)
    if n == 0:
        return out
    off = np.arange(size) - size // 2
    zz = np.broadcast_to(c[:, 0, None, None] + (off * (spacing[1] / spacing[0]))[None, :, None],
                         (n, size, size))
    ry = np.round(c[:, 1])[:, None, None]
    rx = np.round(c[:, 2])[:, None, None]
    for j, p in enumerate(planes):
        if p == 0:
            ks = np.round(c[:, 0]).astype(int)
            for k in np.unique(ks):
                sel = np.nonzero(ks == k)[0]
                out[sel, j] = detector_patches(hu[k], c[sel, 1:], size)
        elif p == 1:  # coronal: rows z, cols x, fixed y
            out[:, j] = grey_level(_sample(hu, zz, np.broadcast_to(ry, zz.shape),
                                           np.broadcast_to(rx + off[None, None, :], zz.shape)))
        elif p == 2:  # sagittal: rows z, cols y, fixed x
            out[:, j] = grey_level(_sample(hu, zz, np.broadcast_to(ry + off[None, None, :],
                                                                   zz.shape),
                                           np.broadcast_to(rx, zz.shape)))
        else:
            raise ValueError(f"plane {p} is not 0 (axial), 1 (coronal) or 2 (sagittal)")
    return out


def _sample(hu: np.ndarray, z, y, x) -> np.ndarray:
    """Trilinear samples of ``hu`` at (z, y, x); outside the volume reads as air."""
    pts = np.stack([np.ravel(z), np.ravel(y), np.ravel(x)])
    v = ndimage.map_coordinates(hu, pts, order=1, mode="constant", cval=GREY_LO,
                                output=np.float32)
    return v.reshape(np.shape(z))


def network_evidence(models: dict, patches: np.ndarray, device: str = "cpu",
                     batch: int = 512, cancel: Callable[[], bool] | None = None,
                     progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Detector nodule logits (n, k) of (n, k, 50, 50) plane patches, and the slice head's
    class logits (n, 3: no nodule, benign, malignant) on the first plane's patch."""
    import torch

    det, head = models["detector"], models["slices"]
    det.eval()
    head.eval()
    n, k = patches.shape[:2]
    logits = np.zeros((n, k), np.float32)
    head_z = np.zeros((n, 3), np.float32)
    flat = np.ascontiguousarray(patches.reshape(-1, 1, *patches.shape[2:]), np.float32)
    step = max(1, batch // k) * k
    with torch.no_grad():
        for i in range(0, len(flat), step):
            if cancel is not None and cancel():
                raise Cancelled("the CAD findings scan was cancelled")
            x = torch.from_numpy(flat[i:i + step]).to(device)
            f = det.embed(x)
            z = det.out(f)
            lo = (z[:, 1] - z[:, 0]).cpu().numpy().reshape(-1, k)
            j = i // k
            logits[j:j + len(lo)] = lo
            head_z[j:j + len(lo)] = head(f[0::k]).cpu().numpy()
            if progress is not None:
                progress(j + len(lo))
    return logits, head_z


def shape_evidence(blobs: Blobs) -> np.ndarray:
    """The shape part of the evidence (log-odds): blob-like, large and dense count for a
    nodule (see the module docstring)."""
    return (W_DOT * np.log(np.maximum(blobs.dot_li.astype(np.float64), 1e-3) / DOT_REF)
            + W_RATIO * (blobs.dot - RATIO_REF)
            + W_DIAM * np.log(np.maximum(blobs.diameter_mm, 1e-3) / DIAM_REF)
            + W_HU * (blobs.hu - HU_REF)
            + W_SHELL * (blobs.lung_shell - 1.0))


def hand_evidence(head_logits: np.ndarray, det_logits: np.ndarray,
                  shape: np.ndarray) -> np.ndarray:
    """The hand-set evidence (log-odds) of candidates from the slice head's class logits
    (n, 3), the detector's plane logits (n, k) and the :func:`shape_evidence` (see the
    module docstring)."""
    z = np.asarray(head_logits, np.float64).reshape(-1, 3)
    head = np.logaddexp(z[:, 1], z[:, 2]) - z[:, 0]
    lo = np.asarray(det_logits, np.float64).reshape(len(z), -1)
    return W_HEAD * head + W_DET * (0.5 * lo.min(1) + 0.5 * lo.mean(1)) + np.asarray(shape)


def squash(evidence: np.ndarray) -> np.ndarray:
    """Score 0..1 of an evidence (log-odds) at :data:`TEMPERATURE`."""
    ev = np.asarray(evidence, np.float64)
    return 1.0 / (1.0 + np.exp(-np.clip(ev, -60, 60) / TEMPERATURE))


def combine(head_logits: np.ndarray, det_logits: np.ndarray, shape: np.ndarray,
            fpr_logits: np.ndarray | None = None,
            mix: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Evidence (log-odds, what the findings are ranked by) and score 0..1 of candidates:
    the :func:`hand_evidence`, with the false-positive reduction network's logits (when
    given) mixed in by :func:`mix_evidence` with the weights ``mix`` (the network's own,
    chosen when it was trained; default :data:`W_MIX`). The score squashes the evidence
    divided by the mix's total weight, so that it spreads over 0..1 instead of saturating
    at 1.00 when the network's logit is weighted up (its order is the evidence's)."""
    ev = hand_evidence(head_logits, det_logits, shape)
    total = 1.0
    if fpr_logits is not None:
        wh, wf = mix or W_MIX
        ev = mix_evidence(ev, fpr_logits, wh, wf)
        total = max(1.0, abs(wh) + abs(wf))
    return ev, squash(ev / total)


def mix_evidence(hand: np.ndarray, fpr_logits: np.ndarray, w_hand: float | None = None,
                 w_fpr: float | None = None) -> np.ndarray:
    """``w_hand · hand + w_fpr · TEMPERATURE · fpr`` (log-odds; defaults :data:`W_MIX`)."""
    wh = W_MIX[0] if w_hand is None else w_hand
    wf = W_MIX[1] if w_fpr is None else w_fpr
    return wh * np.asarray(hand, np.float64) + wf * TEMPERATURE * np.asarray(fpr_logits,
                                                                             np.float64)


# -- the false-positive reduction network's inputs ----------------------------------------
def fpr_patches(hu: np.ndarray, spacing: tuple[float, float, float], centres: np.ndarray,
                size: int | None = None, step_mm: float | None = None,
                angles: np.ndarray | None = None) -> np.ndarray:
    """(n, 3, size, size) grey patches (0..1) at ``step_mm`` isotropic through each centre
    (z, y, x voxel): an axial plane and two vertical planes at right angles (coronal and
    sagittal for ``angles`` 0; ``angles`` (n,) radians turn all three about the z axis,
    for augmentation), trilinear; outside the volume is air."""
    size = FPR_PATCH if size is None else size
    step = FPR_STEP_MM if step_mm is None else step_mm
    c = np.asarray(centres, float).reshape(-1, 3)
    n = len(c)
    if n == 0:
        return np.zeros((0, 3, size, size), np.float32)
    sp = np.asarray(spacing, float)
    off = (np.arange(size) - (size - 1) / 2.0) * step  # mm
    a = np.zeros(n) if angles is None else np.asarray(angles, float).reshape(n)
    u = np.stack([np.zeros(n), np.sin(a), np.cos(a)], 1)  # in-plane "x" (z, y, x)
    v = np.stack([np.zeros(n), np.cos(a), -np.sin(a)], 1)  # in-plane "y"
    w = np.tile([1.0, 0.0, 0.0], (n, 1))  # z
    rows = off[None, :, None, None]
    cols = off[None, None, :, None]
    pts = []
    for d_row, d_col in ((v, u), (w, u), (w, v)):  # axial, "coronal", "sagittal"
        mm = rows * d_row[:, None, None, :] + cols * d_col[:, None, None, :]
        pts.append(c[:, None, None, :] + mm / sp)
    p = np.stack(pts, 1)  # (n, 3, size, size, 3) voxel coordinates
    out = _sample(hu, p[..., 0], p[..., 1], p[..., 2])
    return grey_level(out).astype(np.float32)


def fpr_extra(blobs: Blobs) -> np.ndarray:
    """(n, FPR_EXTRA) shape features of the candidates for the network: log dot
    enhancement, λ3/λ1, log diameter, smoothed HU, lung shell (roughly unit scale)."""
    return np.column_stack([
        np.log(np.maximum(blobs.dot_li.astype(np.float64), 1e-3) / DOT_REF) / 3.0,
        blobs.dot, np.log(np.maximum(blobs.diameter_mm, 1e-3) / DIAM_REF),
        (blobs.hu - HU_REF) / 300.0, blobs.lung_shell]).astype(np.float32)


def fpr_logits(model, hu: np.ndarray, spacing, blobs: Blobs, device: str = "cpu",
               batch: int = 512) -> np.ndarray:
    """The false-positive reduction network's nodule logits (n,) of the candidates."""
    import torch

    x = fpr_patches(hu, spacing, blobs.centre)
    e = fpr_extra(blobs)
    out = np.zeros(len(x), np.float32)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out[i:i + batch] = model(torch.from_numpy(x[i:i + batch]).to(device),
                                     torch.from_numpy(e[i:i + batch]).to(device)
                                     ).reshape(-1).cpu().numpy()
    return out


def _suppress(centres_mm: np.ndarray, radius_mm: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Indices (in ``order``) of candidates not within the radius of an earlier one."""
    kept: list[int] = []
    for i in order:  # greedy over the shortlist (≤ a few hundred)
        if kept:
            d = np.linalg.norm(centres_mm[kept] - centres_mm[i], axis=1)
            if np.any(d < np.maximum(radius_mm[kept], MIN_SEPARATION_MM)):
                continue
        kept.append(int(i))
    return np.asarray(kept, int)


def find_findings(volume, lung_mask: np.ndarray, models: dict, device: str = "cpu",
                  progress: Callable[[int, int], None] | None = None,
                  cancel: Callable[[], bool] | None = None,
                  max_findings: int = MAX_FINDINGS, shortlist: int = SHORTLIST,
                  planes: int = 1, calibration: dict | None = None) -> list[Finding]:
    """The CAD findings of ``volume`` (a :class:`~lungviewer.study.volume.Volume`), most
    likely first, before sizing and merging (:mod:`lungviewer.reading.lesions` does that).
    ``lung_mask`` (z, y, x) bool is the lung mask (threshold method); ``models`` the
    engine's networks (``detector`` and ``slices`` are used, ``fpr`` when present);
    ``calibration`` the false-positive reduction network's (:func:`calibrated`); ``planes`` 3
    also runs the detector on the coronal and sagittal planes (for :data:`W_DET` > 0).
    At most ``max_findings`` are kept (the least likely beyond lie below every operating
    point). ``progress(done, total)`` is called as the work goes; ``cancel()`` returning
    True raises :class:`lungviewer.cancel.Cancelled`. A series too short or with gaps for
    3-D candidates raises :class:`CadInputError`."""
    t0 = time.perf_counter()
    hu = volume.hu
    spacing = tuple(float(s) for s in volume.spacing)
    check_cad_input(volume)
    mask = np.asarray(lung_mask, bool)
    if mask.shape != hu.shape:
        raise ValueError(f"the lung mask {mask.shape} does not match the volume {hu.shape}")
    for key in ("detector", "slices"):
        if key not in models:
            raise ValueError(f"find_findings needs the '{key}' network; models has "
                             f"{sorted(models)}")
    if planes not in (1, 3):
        raise ValueError(f"planes must be 1 (axial) or 3 (axial, coronal, sagittal), not {planes}")

    def check() -> None:
        if cancel is not None and cancel():
            raise Cancelled("the CAD findings scan was cancelled")

    total = 100  # progress: candidates 40 %, networks 60 %

    def report(done: float) -> None:
        if progress is not None:
            progress(int(done), total)

    report(0)
    check()
    blobs = candidates(hu, mask, spacing, shortlist)
    check()
    report(40)
    if len(blobs) == 0:
        report(total)
        return []
    t1 = time.perf_counter()
    n = len(blobs)
    patches = plane_patches(hu, spacing, blobs.centre, planes=(0, 1, 2)[:planes])
    det, head_z = network_evidence(models, patches, device, cancel=cancel,
                                   progress=lambda d: report(40 + 60 * d / n))
    fpr_net = models.get("fpr")
    fpr = fpr_logits(fpr_net, hu, spacing, blobs, device) if fpr_net is not None else None
    ev, score = combine(head_z, det, shape_evidence(blobs), fpr,
                        getattr(fpr_net, "mix", None))
    if calibration:
        score = calibrated(ev, calibration)
    order = np.argsort(-ev, kind="stable")  # the scores of strong candidates may tie
    kept = _suppress(blobs.centre * np.asarray(spacing), blobs.diameter_mm / 2.0,
                     order)[:max_findings]
    out = []
    for i in kept:
        z, y, x = (int(v) for v in np.round(blobs.centre[i]))
        out.append(Finding(z, y, x, float(blobs.diameter_mm[i]), float(score[i]),
                           evidence=float(ev[i]),
                           detector_logits=tuple(float(v) for v in det[i]),
                           dot=float(blobs.dot[i])))
    report(total)
    log.debug("%d findings (%d candidates) in %.2f s (networks %.2f s)", len(out), n,
              time.perf_counter() - t0, time.perf_counter() - t1)
    return out


class CadInputError(ValueError):
    """A series the CAD findings cannot search (too few slices, gaps between slices)."""


#: the CAD findings need at least this many slices (3-D candidates, a nodule's extent)
MIN_SLICES = 10
#: a gap larger than this times the median slice distance is a missing slice
MAX_GAP = 1.5


def check_cad_input(volume) -> None:
    """Raise :class:`CadInputError` for a series the findings cannot search: fewer than
    :data:`MIN_SLICES` slices, or gaps between slices (a distance above :data:`MAX_GAP` ×
    the median; the 3-D filters would read the gap as tissue of one slice)."""
    n = int(volume.hu.shape[0])
    if n < MIN_SLICES:
        raise CadInputError(f"too few slices for CAD findings ({n}; at least {MIN_SLICES} "
                            "are needed)")
    pos = getattr(volume, "positions", None)
    if pos is not None and len(pos) == n and n > 2:
        d = np.linalg.norm(np.diff(np.asarray(pos, float), axis=0), axis=1)
        med = float(np.median(d))
        if med > 0 and float(d.max()) > MAX_GAP * med:
            k = int(np.argmax(d))
            raise CadInputError(f"gaps between slices ({float(d.max()):.1f} mm after image "
                                f"{k + 1}, {med:.1f} mm elsewhere): no CAD findings on an "
                                "incomplete series")


def candidates(hu: np.ndarray, mask: np.ndarray, spacing, shortlist: int = SHORTLIST) -> Blobs:
    """The candidates that reach the networks (step 1 of the module docstring)."""
    return shortlisted(find_blobs(hu, mask, spacing, min_lung_shell=MIN_LUNG_SHELL), shortlist)


def shortlisted(blobs: Blobs, n: int = SHORTLIST) -> Blobs:
    """The ``n`` candidates with the strongest dot enhancement (blob-like and bright)."""
    order = np.argsort(-blobs.dot_li, kind="stable")[:n]
    return blobs.take(order)


def slice_ranking(findings: list[Finding], n_slices: int, spacing):
    """Per-slice scores of the slice recommendation read off the findings
    (:class:`lungviewer.cad.engine.SliceScores`): a slice covered by a finding's extent
    (its segmentation's slices; unmeasured, its diameter along z, at least its centre slice)
    gets the best such finding's score, kind (:data:`FINDING_KINDS`) and centre (row, col) — slightly less away from the centre slice (×(1 − 0.02 per
    slice)), so that the centre slice of a finding is listed first; slices without a finding
    score 0."""
    from lungviewer.cad.engine import SliceScores

    res = SliceScores(np.zeros(n_slices), np.zeros(n_slices, int), np.zeros((n_slices, 2), int),
                      labels=FINDING_KINDS)
    res.spacing = tuple(float(v) for v in spacing)
    dz = float(spacing[0]) or 1.0
    for f in sorted(findings, key=lambda f: f.score):  # best last, so it wins
        if f.extent is not None:  # measured: the slices its segmentation covers
            k0, k1 = max(0, f.extent[0]), min(n_slices - 1, f.extent[1] - 1)
        else:
            half = int(np.floor(f.diameter_mm / 2.0 / dz))
            k0, k1 = max(0, f.slice - half), min(n_slices - 1, f.slice + half)
        if k0 > k1:
            continue
        ks = np.arange(k0, k1 + 1)
        sc = f.score * (1.0 - 0.02 * np.abs(ks - f.slice))
        better = sc >= res.scores[ks]
        ks, sc = ks[better], sc[better]
        res.scores[ks] = sc
        res.classes[ks] = FINDING_KINDS.index(f.kind)
        res.best[ks] = (f.row, f.col)
    res.done = n_slices
    return res
