"""M5 slice recommendation: score every slice of a study, rank them, measure recall.

A slice's score is the largest candidate score over the slice's nodule candidates
(:func:`lungviewer.imaging.candidates.find_candidates`: bright blobs in and at the edge of
the lungs); a candidate's score is (1 − p(no nodule)) of the slice head times the
detector's nodule probability — the same formula as ``CadEngine.scan_slices``. The slice
head is the M5 network transferred from the detector (its frozen 512-d features,
:class:`lungviewer.cad.networks.SliceHead`). Slices are ranked by score so that the reader
looks at the likeliest first.

Arrays are ``(z, y, x)``; HU ``int16``. torch is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CLASSES = ("no nodule", "benign", "malignant")


@dataclass
class SliceScores:
    """Per slice (z,): ``nodule`` = max over candidates of (1 − p(no nodule)) · p_detector;
    ``malignant`` = p(malignant) of that candidate; ``best_rc`` (z, 2) its row/col (−1 if
    the slice has no candidate)."""

    nodule: np.ndarray
    malignant: np.ndarray
    best_rc: np.ndarray

    def ranking(self) -> np.ndarray:
        return rank_slices(self.nodule)


def rank_slices(scores: np.ndarray) -> np.ndarray:
    """Slice indices, likeliest first (ties: lower index first)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def candidate_probs(detector, head, patches: np.ndarray, device: str = "cpu",
                    batch: int = 512) -> np.ndarray:
    """(n, 4): the slice head's 3 probabilities and the detector's nodule probability of
    (n, 50, 50) detector patches."""
    import torch

    out = []
    detector.eval()
    head.eval()
    with torch.no_grad():
        for i in range(0, len(patches), batch):
            x = torch.from_numpy(np.asarray(patches[i:i + batch], np.float32)[:, None])
            f = detector.embed(x.to(device))
            p_det = torch.softmax(detector.out(f), 1)[:, 1:]
            out.append(torch.cat([torch.softmax(head(f), 1), p_det], 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 4), np.float32)


def score_slices(hu: np.ndarray, lung_mask: np.ndarray, detector, head, device: str = "cpu",
                 progress: Callable[[int, int], None] | None = None) -> SliceScores:
    """Score every slice of ``hu`` (z, y, x) int16 with the M5 head on its candidates."""
    from lungviewer.imaging.candidates import find_candidates
    from lungviewer.imaging.patches import detector_patches

    n = hu.shape[0]
    pts, _ = find_candidates(hu, lung_mask)
    nodule = np.zeros(n, np.float32)
    malignant = np.zeros(n, np.float32)
    best = np.full((n, 2), -1, np.int64)
    if len(pts) == 0:
        return SliceScores(nodule, malignant, best)
    patches = np.empty((len(pts), 50, 50), np.float32)
    ks = np.unique(pts[:, 0])
    for j, k in enumerate(ks):
        sel = np.nonzero(pts[:, 0] == k)[0]
        patches[sel] = detector_patches(hu[k], pts[sel, 1:])
        if progress:
            progress(j + 1, len(ks))
    probs = candidate_probs(detector, head, patches, device)
    p_nod = (1.0 - probs[:, 0]) * probs[:, 3]
    # the best candidate per slice: sort by (slice, −score), take the first of each slice
    order = np.lexsort((-p_nod, pts[:, 0]))
    first = order[np.r_[True, pts[order[1:], 0] != pts[order[:-1], 0]]]
    nodule[pts[first, 0]] = p_nod[first]
    malignant[pts[first, 0]] = probs[first, 2]
    best[pts[first, 0]] = pts[first, 1:]
    return SliceScores(nodule, malignant, best)


def nodule_recall_at(ranking: np.ndarray, nodule_slices: list[np.ndarray], k: int = 10) -> float:
    """Share of nodules with at least one of their slices among the top ``k`` ranked."""
    if not nodule_slices:
        return float("nan")
    top = set(int(i) for i in np.asarray(ranking)[:k])
    return float(np.mean([any(int(s) in top for s in sl) for sl in nodule_slices]))
