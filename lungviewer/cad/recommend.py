"""Slice recommendation: how a candidate is scored and how slices are ranked.

A slice's score is the largest candidate score over the slice's nodule candidates
(:func:`lungviewer.imaging.candidates.find_candidates`: bright blobs in and at the edge of
the lungs); a candidate's score (:func:`candidate_scores`) joins the nodule detector's
logit and the slice head's 'some nodule' logit. The slice head is the slice network
transferred from the detector (its frozen 512-d features,
:class:`lungviewer.cad.networks.SliceHead`). :meth:`lungviewer.cad.engine.CadEngine.scan_slices`
scores a whole study with these; :func:`rank_slices` orders its slices so that the reader
looks at the likeliest distinct findings first.

Arrays are ``(z, y, x)``; HU ``int16``. torch is imported lazily.
"""

from __future__ import annotations

import numpy as np

#: the slice head's classes, in the order of its outputs
SLICE_CLASSES = ("no nodule", "benign", "malignant")


# a slice whose best candidate lies this close (3-D, mm) to a higher-ranked slice's is the same
# finding again (the nodule's next slice). Chosen on validation patients, never the test list:
# recall@10 of CadEngine.scan_slices on the first 24 annotated scans of make_split().val
# (76 nodules) was 0.474 without it, 0.513 at 5 mm, 0.553 at 15 mm, 0.539 at 20–40 mm.
DISTINCT_MM = 15.0


def rank_slices(scores: np.ndarray, best_rc: np.ndarray | None = None,
                spacing: tuple[float, float, float] | None = None,
                distinct_mm: float = DISTINCT_MM) -> np.ndarray:
    """Slice indices, likeliest first (ties: lower index first).

    With each slice's best candidate ``best_rc`` (z, 2) row/col and the ``spacing`` (z, y, x)
    mm, distinct findings come first: a slice whose best candidate lies within
    ``distinct_mm`` of a slice already listed moves behind all distinct findings, so that
    the top of the list is not one nodule on six neighbouring slices."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    if best_rc is None or spacing is None or distinct_mm <= 0 or len(order) < 2:
        return order
    pts = np.column_stack([np.arange(len(scores)), np.asarray(best_rc, np.float64)])
    p = (pts * np.asarray(spacing, np.float64))[order]
    lead = np.zeros(len(order), bool)
    taken = np.zeros(len(order), bool)  # within distinct_mm of a listed finding
    for i in range(len(order)):  # greedy over slices (n ≤ ~1000), not pixels
        if not taken[i]:
            lead[i] = True
            taken |= ((p - p[i]) ** 2).sum(1) < distinct_mm ** 2
    return np.concatenate([order[lead], order[~lead]])


def candidate_scores(detector, head, patches: np.ndarray,
                     device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Score (n, 50, 50) detector patches: ``(score (n,), p_cls (n, 3))``.

    The evidence is in log-odds (probabilities saturate near 1 on many candidates): the
    detector's nodule logit plus the slice head's 'some nodule' vs 'none' logit, squashed
    back to 0..1 with a temperature of 8. ``p_cls`` are the head's class probabilities."""
    import torch

    detector.eval()
    head.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(patches, np.float32)[:, None]).to(device)
        f = detector.embed(x)
        z_det = detector.out(f)
        z_head = head(f)
        p_cls = torch.softmax(z_head, 1).cpu().numpy()
        evidence = ((z_det[:, 1] - z_det[:, 0])
                    + (torch.logsumexp(z_head[:, 1:], 1) - z_head[:, 0])).cpu().numpy()
    score = 1.0 / (1.0 + np.exp(-np.clip(evidence, -60, 60) / 8.0))
    return score.astype(np.float32), p_cls
