"""Lung mask (threshold method): lungviewer's whole-volume implementation vs a
straightforward per-slice scikit-image implementation of the same steps (and a plain
version of the volume rules), on the same volume in one run.

    python bench/bench_parenchyma.py [--patient LIDC-IDRI-0001] [--real DIR] [--dice N]

--real DIR times a real DICOM series instead of the twin (e.g.
../shared/data/real/LIDC-IDRI-0006). --dice N also reports the Dice of lungviewer's mask
against the twin's true lung mask for the first N LIDC patients with annotations
(synthetic images, so synthetic figures).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import deque

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage import measure, morphology

EPS = 1e-6


def _padding(sl: np.ndarray) -> np.ndarray:
    """Padding: below −1024 HU; the reconstruction circle's exterior when the four corner
    patches hold one value between −1024 and −1000 HU."""
    pad = sl < -1024
    h, w = sl.shape
    c = max(1, min(h, w) // 32)
    if min(h, w) >= 32:
        corners = np.concatenate([sl[:c, :c].ravel(), sl[:c, -c:].ravel(),
                                  sl[-c:, :c].ravel(), sl[-c:, -c:].ravel()])
        if corners.min() == corners.max() and -1024 <= corners.min() <= -1000:
            yy, xx = np.mgrid[:h, :w]
            r = min(h, w) / 2.0
            pad |= (yy - (h - 1) / 2.0) ** 2 + (xx - (w - 1) / 2.0) ** 2 > r * r
    return pad


def _hull(body: np.ndarray) -> np.ndarray:
    """Pixels whose centres lie in the convex hull of the body's pixel centres."""
    pts = np.argwhere(body).astype(np.float64)
    if len(pts) == 0:
        return body.copy()
    try:
        eq = ConvexHull(pts).equations
    except (QhullError, ValueError):  # degenerate: each row from its first to last pixel
        out = np.zeros(body.shape, bool)
        for y in np.unique(pts[:, 0]).astype(int):
            xs = np.flatnonzero(body[y])
            out[y, xs[0]:xs[-1] + 1] = True
        return out
    yy, xx = np.mgrid[:body.shape[0], :body.shape[1]].astype(np.float64)
    inside = np.ones(body.shape, bool)
    for a, b, c in eq:  # every facet's half-plane
        inside &= a * yy + b * xx + c <= EPS
    return inside


def candidates_slice(sl: np.ndarray, with_raw: bool = False):
    """Steps 1–5 written plainly for one slice: the closed dark side inside the body and
    the threshold (and, ``with_raw``, the dark side inside the body before the closing)."""
    pad = _padding(sl)
    vals = np.minimum(sl[~pad].astype(np.float64), 3071)
    # 2. iterative global threshold on the pixels that are image
    if vals.size == 0:
        e = np.zeros(sl.shape, bool)
        return (e, e, -1024.0) if with_raw else (e, -1024.0)
    t = (vals.max() + vals.min()) / 2
    for _ in range(100):
        lo, hi = vals[vals <= t], vals[vals > t]
        if lo.size == 0 or hi.size == 0:
            break
        new = (lo.mean() + hi.mean()) / 2
        moved, t = abs(new - t), new
        if moved < 0.5:
            break
    dark = (sl <= t) & ~pad
    # 4. closing with a disk of radius 5 (edge-replicated so the border does not erode)
    closed = morphology.closing(np.pad(dark, 11, mode="edge"), morphology.disk(5))[11:-11, 11:-11]
    # 5. the body: the largest component of the bright side opened with a disk of radius 2
    bright = ~dark & ~pad
    opened = morphology.opening(np.pad(bright, 5, mode="edge"), morphology.disk(2))[5:-5, 5:-5]
    lab = measure.label(opened, connectivity=1)
    if lab.max() == 0:
        e = np.zeros(sl.shape, bool)
        return (e, e, float(t)) if with_raw else (e, float(t))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = lab == np.argmax(sizes)
    #    regions of the rest: enclosed → inside; reaching the edge or the padding → inside
    #    when at least half lies in the body's convex hull
    rest = measure.label(~body & ~pad, connectivity=1, background=0)
    near_pad = ndimage.binary_dilation(pad, ndimage.generate_binary_structure(2, 1)) & ~pad
    reaching = set(np.unique(np.concatenate([rest[0], rest[-1], rest[:, 0], rest[:, -1],
                                             rest[near_pad]]))) - {0}
    total = np.bincount(rest.ravel(), minlength=rest.max() + 1)
    in_hull = np.bincount(rest[_hull(body)], minlength=rest.max() + 1) if reaching else total
    inside = body.copy()
    for r in range(1, rest.max() + 1):
        if r not in reaching or in_hull[r] >= 0.5 * total[r]:
            inside |= rest == r
    if with_raw:
        return closed & inside, dark & inside, float(t)
    return closed & inside, float(t)


def reference_slice(sl: np.ndarray) -> np.ndarray:
    """Steps 1–6 of one slice: components of at least 1000 px."""
    cand, _ = candidates_slice(sl)
    return morphology.remove_small_objects(cand, max_size=999, connectivity=1)


def reference(hu: np.ndarray) -> np.ndarray:
    """The whole method on a volume, plainly: steps 1–6 per slice, then the volume rules
    (grouping, putting back, airways) with Python loops over the components."""
    found = [candidates_slice(sl, with_raw=True) for sl in hu]
    labs = [measure.label(f[0], connectivity=1) for f in found]
    raws = [measure.label(f[1], connectivity=1) for f in found]
    comps = [(k, i) for k, lab in enumerate(labs) for i in range(1, lab.max() + 1)]
    size = {(k, i): int((labs[k] == i).sum()) for k, i in comps}
    keep = {c: size[c] >= 1000 for c in comps}
    over = {}
    for k in range(len(hu) - 1):
        for i in range(1, labs[k].max() + 1):
            below = labs[k + 1][labs[k] == i]
            for j, cnt in zip(*np.unique(below[below > 0], return_counts=True)):
                over[((k, i), (k + 1, int(j)))] = int(cnt)
    if len(hu) > 1 and any(keep.values()):
        # 7. groups: kept components overlapping by >= a quarter of the smaller
        nbrs = {c: [] for c in comps}
        for (u, v), cnt in over.items():
            if keep[u] and keep[v] and cnt >= 0.25 * min(size[u], size[v]):
                nbrs[u].append(v)
                nbrs[v].append(u)
        group, volumes = {}, []
        for c in comps:
            if c in group:
                continue
            g, todo, vol = len(volumes), deque([c]), 0
            group[c] = g
            while todo:
                x = todo.popleft()
                vol += size[x] if keep[x] else 0
                for y in nbrs[x]:
                    if y not in group:
                        group[y] = g
                        todo.append(y)
            volumes.append(vol)
        for c in comps:
            keep[c] = keep[c] and volumes[group[c]] >= 0.15 * max(volumes)
        # 8. small components continuing a kept one that is not smaller come back
        changed = True
        while changed:
            changed = False
            for (u, v), cnt in over.items():
                for a, b in ((u, v), (v, u)):
                    if (size[a] < 1000 and not keep[a] and keep[b] and size[b] >= 1.25 * size[a]
                            and cnt >= 0.5 * size[a]):
                        keep[a] = changed = True
    out = np.zeros(hu.shape, bool)
    for k, i in comps:
        if keep[(k, i)]:
            out[k][labs[k] == i] = True
    if len(hu) > 1:
        _remove_airways(out, labs, raws, keep)
    return out


def _remove_airways(out, labs, raws, keep) -> None:
    """Step 9, plainly: raw pieces (dark side inside the body, before the closing) of
    30–999 px whose candidate component is not lung start an airway; it continues into a
    raw piece of an adjacent slice lying at least half on it and at most 1.5 times as
    large. Airways inside the mask are removed with what the closing added within 6 px."""
    pieces = [(k, i) for k, r in enumerate(raws) for i in range(1, r.max() + 1)]
    size = {(k, i): int((raws[k] == i).sum()) for k, i in pieces}
    cand_of = {(k, i): int(labs[k][raws[k] == i][0]) for k, i in pieces}
    airway = {c: 30 <= size[c] < 1000 and not keep[(c[0], cand_of[c])] for c in pieces}
    over = {}
    for k in range(len(raws) - 1):
        for i in range(1, raws[k].max() + 1):
            below = raws[k + 1][raws[k] == i]
            for j, cnt in zip(*np.unique(below[below > 0], return_counts=True)):
                over[((k, i), (k + 1, int(j)))] = int(cnt)
    changed = True
    while changed:
        changed = False
        for (u, v), cnt in over.items():
            for a, b in ((u, v), (v, u)):  # b continues the airway a
                if airway[a] and not airway[b] and cnt >= 0.5 * size[b] and \
                        size[b] <= 1.5 * size[a]:
                    airway[b] = changed = True
    for k in range(len(raws)):
        lumen = np.zeros(out[k].shape, bool)
        for i in range(1, raws[k].max() + 1):
            if airway[(k, i)]:
                lumen |= raws[k] == i
        lumen &= out[k]
        if lumen.any():
            near = ndimage.binary_dilation(lumen, structure=morphology.disk(6))
            out[k] &= ~(lumen | (near & (labs[k] > 0) & (raws[k] == 0)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patient", default="LIDC-IDRI-0001")
    ap.add_argument("--real", help="a real DICOM series folder to time instead of the twin")
    ap.add_argument("--dice", type=int, default=0)
    a = ap.parse_args()
    from lungviewer.imaging.parenchyma import dice, evaluate_against, segment_lungs
    from lungviewer.study.lidc_db import get_database
    from lungviewer.synth.twin import render_twin

    if a.real:
        from pathlib import Path

        from lungviewer.study.dicom_series import load_series

        hu = load_series(Path(a.real)).hu
        what = f"real series {Path(a.real).name}"
    else:
        hu = render_twin(a.patient).hu
        what = f"{a.patient} twin (synthetic)"
    segment_lungs(hu)  # warm up
    t0 = time.perf_counter()
    ours = segment_lungs(hu).mask
    t1 = time.perf_counter()
    ref = reference(hu)
    t2 = time.perf_counter()
    print(f"{what}: {hu.shape[0]} slices {hu.shape[1]}x{hu.shape[2]}, "
          f"{os.cpu_count()} CPU cores")
    print(f"lungviewer segment_lungs        : {t1 - t0:.3f} s")
    print(f"plain scikit-image + loops      : {t2 - t1:.3f} s")
    print(f"speed-up = {(t2 - t1) / (t1 - t0):.1f}x; masks identical: "
          f"{np.array_equal(ours, ref)} (Dice {dice(ours, ref):.4f})")
    if a.dice:
        db = get_database()
        pids = sorted({s.patient_id for s in db.scans() if db.annotations(s.id)})[:a.dice]
        scores = []
        for pid in pids:
            tw = render_twin(pid)
            r = segment_lungs(tw.hu)
            e = evaluate_against(tw.lung_mask, r)
            scores.append(e["dice"])
            print(f"  {pid}: {tw.hu.shape[0]} slices, Dice {e['dice']:.4f}, sensitivity "
                  f"{e['sensitivity']:.4f}, precision {e['precision']:.4f}, "
                  f"worst slice Dice {e['worst_slice_dice']:.3f}")
        print(f"mean Dice over {len(scores)} twins: {np.mean(scores):.4f} "
              f"(min {np.min(scores):.4f})")


if __name__ == "__main__":
    main()
