"""Reference answers for the lung mask tests (and the benchmarks that time them):

- :func:`reference_slice` / :func:`reference` — the threshold method written plainly with
  scikit-image, step by step as the paper and README describe it (loops where they are
  clearest); the vectorised ``lungviewer.imaging.parenchyma`` must give the same masks.
- :func:`reference_mask` / :func:`compare` — an independent 3-D lung reference built a
  different way (fixed −400 HU threshold, 3-D components, airway region growing), for the
  real development scan.

``bench/bench_parenchyma.py`` and ``bench/lung_mask_real.py`` import this module; tests do
not import benchmarks.
"""

from __future__ import annotations

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


MASS_RADIUS_PX = 15.0 / 0.7  # step 10's disk: 15 mm at the assumed 0.7 mm pixels


def fill_masses_plain(out: np.ndarray, hu: np.ndarray, ts, rib_slices: int = 4) -> np.ndarray:
    """Step 10, plainly: split the columns at the middle of the mask's extent; on each side
    and slice, 2 × 2 blocks (any lung pixel makes a lung block), closed with a disk of half
    the radius (the edge replicated); the added blocks' pieces that come within 0.75 of the
    radius of a rib and lie out from the middle count; their pixels and those of the closed
    blocks 4-adjacent to them that are brighter than the slice's threshold join the mask."""
    if not out.any():
        return out
    r = max(1, int(round(MASS_RADIUS_PX / 2.0)))
    xs = np.flatnonzero(out.any(axis=(0, 1)))
    mid = int(xs[0] + xs[-1]) // 2 + 1
    res = out.copy()
    q = 2 * r + 1
    cross = ndimage.generate_binary_structure(2, 1)
    for k in range(out.shape[0]):
        for c0, c1 in ((0, mid), (mid, out.shape[2])):
            m = out[k, :, c0:c1]
            if m.size == 0:
                continue
            h, w = m.shape
            even = np.zeros((h + h % 2, w + w % 2), bool)
            even[:h, :w] = m
            small = even.reshape(even.shape[0] // 2, 2, even.shape[1] // 2, 2).any(axis=(1, 3))
            closed = ndimage.binary_closing(np.pad(small, q, mode="edge"),
                                            structure=morphology.disk(r))[q:-q, q:-q]
            add = closed & ~small
            # pieces near a rib (bone apart from what crosses the middle) and out from the
            # middle by at least 0.45 of the way to the lung's lateral edge
            bone = np.zeros(small.shape, bool)
            for j in range(max(k - rib_slices, 0), min(k + rib_slices + 1, out.shape[0])):
                bone |= ribs_plain(hu[j, :, c0:c1], c0 == 0)
            rb = max(1, int(round(MASS_RADIUS_PX * 0.75 / 2.0)))
            near = ndimage.binary_dilation(np.pad(bone, rb + 1), structure=morphology.disk(rb))[
                rb + 1:-(rb + 1), rb + 1:-(rb + 1)]
            plab, npieces = ndimage.label(add, cross)
            medial = small.shape[1] - 1 if c0 == 0 else 0
            cols_lung = np.flatnonzero(small.any(axis=0))
            lateral = (cols_lung.min() if c0 == 0 else cols_lung.max()) if cols_lung.size \
                else medial
            keep_add = np.zeros(add.shape, bool)
            for i in range(1, npieces + 1):
                piece = plab == i
                mean_col = np.nonzero(piece)[1].mean()
                if (piece & near).any() and \
                        abs(mean_col - medial) >= 0.45 * max(abs(lateral - medial), 1.0):
                    keep_add |= piece
            add = keep_add
            beside = ndimage.binary_dilation(add, ndimage.generate_binary_structure(2, 1))
            add |= beside & closed
            new = np.kron(add, np.ones((2, 2), bool))[:h, :w].astype(bool)
            res[k, :, c0:c1] |= new & ~m & (hu[k, :, c0:c1] > ts[k])
    return res


def ribs_plain(side: np.ndarray, left: bool) -> np.ndarray:
    """2 × 2 blocks of one side of a slice holding bone (> 300 HU), less the bone pieces
    touching the middle (the medial edge of the side): the spine, the sternum."""
    h, w = side.shape
    even = np.zeros((h + h % 2, w + w % 2), bool)
    even[:h, :w] = side > 300
    bone = even.reshape(even.shape[0] // 2, 2, even.shape[1] // 2, 2).any(axis=(1, 3))
    blab, _ = ndimage.label(bone, ndimage.generate_binary_structure(2, 1))
    for i in set(np.unique(blab[:, -1 if left else 0]).tolist()) - {0}:
        bone[blab == i] = False
    return bone


def reference_slice(sl: np.ndarray) -> np.ndarray:
    """Steps 1–6 of one slice (components of at least 1000 px), then step 10."""
    cand, t = candidates_slice(sl)
    kept = morphology.remove_small_objects(cand, max_size=999, connectivity=1)
    return fill_masses_plain(kept[None], sl[None], [t], 0)[0]


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
        # 8a. tips: groups of small raw pieces that continue a kept lung and end inside
        for c in _tips(labs, raws, keep, size, len(hu)):
            keep[c] = True
        # 8b. small components continuing a kept one that is not smaller come back
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
    return fill_masses_plain(out, hu, [f[2] for f in found], 4)  # 10 mm at 2.5 mm slices


def _tips(labs, raws, keep, size, n_slices):
    """Step 8a, plainly: raw pieces whose candidate is under 1000 px and not kept, linked
    across slices where they overlap by at least half the smaller; a group that continues
    a kept lung (a piece lying at least half on a raw piece of a kept candidate not
    smaller than its own), has no piece over 1.25 times its largest piece touching the
    lung, and has no piece on the first or last slice, is a tip: its candidates are lung."""
    pieces = [(k, i) for k, r in enumerate(raws) for i in range(1, r.max() + 1)]
    rsize = {(k, i): int((raws[k] == i).sum()) for k, i in pieces}
    cand = {(k, i): (k, int(labs[k][raws[k] == i][0])) for k, i in pieces}
    small = {q: not keep[cand[q]] and size[cand[q]] < 1000 for q in pieces}
    over = {}
    for k in range(len(raws) - 1):
        for i in range(1, raws[k].max() + 1):
            below = raws[k + 1][raws[k] == i]
            for j, cnt in zip(*np.unique(below[below > 0], return_counts=True)):
                over[((k, i), (k + 1, int(j)))] = int(cnt)
    nbrs = {q: [] for q in pieces}
    touching = {q: 0 for q in pieces}
    for (u, v), cnt in over.items():
        if small[u] and small[v] and cnt >= 0.5 * min(rsize[u], rsize[v]):
            nbrs[u].append(v)
            nbrs[v].append(u)
        for x, y in ((u, v), (v, u)):  # x continues the kept y
            if small[x] and not small[y] and keep[cand[y]] and \
                    size[cand[y]] >= size[cand[x]] and cnt >= 0.5 * rsize[x]:
                touching[x] = max(touching[x], rsize[x])
    seen, out = set(), []
    for q in pieces:
        if not small[q] or q in seen:
            continue
        members, todo = [], deque([q])
        seen.add(q)
        while todo:
            x = todo.popleft()
            members.append(x)
            for y in nbrs[x]:
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
        touch = max(touching[x] for x in members)
        if touch and all(0 < x[0] < n_slices - 1 for x in members) and \
                max(rsize[x] for x in members) <= 1.25 * touch:
            out += [cand[x] for x in members]
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


MIN_REFERENCE_PX = 1000  # slices with less reference lung are not scored per slice


def reference_mask(hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Independent 3-D lung mask of ``hu`` (int16 ``(z, y, x)``, spacing mm ``(z, y, x)``);
    the steps are in the module docstring."""
    six = ndimage.generate_binary_structure(3, 1)
    pad = hu < -1024
    air = (hu < -400) & ~pad
    lab, n = ndimage.label(air, six)
    # outside: air reaching the in-plane border or the padding on at least half the slices
    # it spans (the air around the body does on every slice; a lung cut by the field of
    # view only where the circle cuts it)
    edge = np.zeros(hu.shape, bool)
    edge[:, 0, :] = edge[:, -1, :] = edge[:, :, 0] = edge[:, :, -1] = True
    inplane = np.zeros((3, 3, 3), bool)
    inplane[1] = ndimage.generate_binary_structure(2, 1)
    edge |= ndimage.binary_dilation(pad, inplane)
    zz = np.nonzero(edge & air)[0]
    key = np.unique(lab[edge & air].astype(np.int64) * hu.shape[0] + zz)
    touching = np.bincount(key // hu.shape[0], minlength=n + 1)
    span = np.zeros(n + 1)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is not None:
            span[i] = sl[0].stop - sl[0].start
    out = touching >= 0.5 * np.maximum(span, 1)
    out[0] = True
    cand = ~out[lab]
    lab, n = ndimage.label(cand, six)
    if n == 0:
        return cand
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    order = np.argsort(sizes)[::-1]
    keep = [order[0]] + [i for i in order[1:3] if sizes[i] >= 0.15 * sizes[order[0]]]
    lungs = np.isin(lab, keep)
    # airways: adaptive region growing from the trachea on the topmost slice (in the
    # lungs' box: nothing outside it can join)
    zs, ys, xs = (np.flatnonzero(lungs.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1)))
    box = (slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    sub = lungs[box]
    smooth = ndimage.gaussian_filter(hu[box].astype(np.float32), sigma=(0, 1, 1))
    seed = np.zeros(sub.shape, bool)
    # the seed: the top slice's pieces of kept air up to 1000 mm² (the trachea; a volume
    # that starts mid-lung has the lungs themselves there, which must not seed an airway)
    top, nt = ndimage.label(sub[-1])
    if nt:
        area = np.bincount(top.ravel()) * float(spacing[1] * spacing[2])
        tube = area <= 1000.0
        tube[0] = False
        seed[-1] = tube[top]
    grown_best = np.zeros(sub.shape, bool)
    prev = 0
    ml = 1000.0 / float(np.prod(spacing))  # voxels per mL
    small_px, leak_px = 5 * ml, 300 * ml
    for t in range(-1000, -899, 10):
        grown_lab, _ = ndimage.label((smooth < t) & sub | seed, six)
        ids = np.unique(grown_lab[seed])
        grown = np.isin(grown_lab, ids[ids > 0])
        vol = int(grown.sum())
        if vol > leak_px or (prev > small_px and vol > 2 * prev):
            break  # leaked into the lung
        grown_best, prev = grown, vol
    airway = np.zeros(hu.shape, bool)
    airway[box] = grown_best
    inplane = np.zeros((3, 3, 3), bool)
    inplane[1] = ndimage.generate_binary_structure(2, 1)
    zone = ndimage.binary_dilation(airway, inplane, iterations=3)  # lumen and wall
    lungs &= ~zone
    rl, rn = ndimage.label(lungs, inplane)  # what is left of the wall: thin rings
    if rn:
        rs = np.bincount(rl.ravel())
        ring = np.zeros(rn + 1, bool)
        ring[np.unique(rl[ndimage.binary_dilation(zone, inplane)])] = True
        ring &= rs < 200
        ring[0] = False
        lungs &= ~ring[rl]
    # vessels: fill small holes slice by slice
    max_hole = 800.0 / (spacing[1] * spacing[2])
    holes = ndimage.binary_fill_holes(lungs, inplane) & ~lungs
    hl, hn = ndimage.label(holes, inplane)
    if hn:
        hs = np.bincount(hl.ravel())
        small = hs < max_hole
        small[0] = False
        lungs |= small[hl] & ~zone
    return lungs


def compare(mask: np.ndarray, ref: np.ndarray, spacing) -> dict:
    """Dice, volumes (mL), per-slice coverage and the slices under 0.9 coverage."""
    inter = (mask & ref).sum(axis=(1, 2)).astype(float)
    rs = ref.sum(axis=(1, 2)).astype(float)
    scored = rs >= MIN_REFERENCE_PX
    cov = np.full(len(rs), np.nan)
    cov[scored] = inter[scored] / rs[scored]
    vox = float(np.prod(spacing)) / 1000.0
    tot = mask.sum() + ref.sum()
    return {"dice": float(2 * inter.sum() / tot) if tot else 1.0,
            "precision": float(inter.sum() / max(mask.sum(), 1)),
            "volume_ml": float(mask.sum() * vox), "reference_ml": float(ref.sum() * vox),
            "coverage": cov, "scored_slices": int(scored.sum()),
            "under_0.9": [int(k) for k in np.flatnonzero(scored & (cov < 0.9))]}
