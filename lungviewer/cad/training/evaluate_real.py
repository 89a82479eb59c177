"""``lungviewer evaluate --real DIR``: the CAD on real LIDC-IDRI scans with their readers' XML.

Every series under ``DIR`` that has its LIDC XML beside or inside its folder is loaded
(:func:`lungviewer.study.dicom_series.load_series`), its readers' marks mapped and grouped
into nodules (:func:`lungviewer.study.nodules.load_study_annotations`, the project's
clustering), its lung mask made (threshold method) and its CAD findings found
(:func:`lungviewer.cad.findings.find_findings`). Reported:

- **FROC** (LUNA16 rules): sensitivity for nodules ≥ 3 mm at 1, 2, 4 and 8 false positives
  per scan. A finding hits a nodule when its centre lies within the nodule's radius (at
  least ``MIN_HIT_RADIUS_MM``) of the nodule's centre; several findings on one nodule count
  once (the best), the others are neither hits nor false positives; so is a finding on a
  small-nodule (< 3 mm) mark, a non-nodule mark, or (for the ≥ 3 readers figure) a nodule
  fewer readers marked. Given for nodules marked by ≥ 1 reader and by ≥ 3 readers.
- **recall@10** of the recommended slices (the slice ranking read off the findings, and the
  2-D slice scan of the engine beside it): a nodule counts when one of the ten top slices
  lies in its slice range *and* that slice's best point lies within its radius in-plane.
- **detector AUC**: the nodule detector on the axial patch (as for a box) at the nodule
  centres (positives) against the non-nodule marks and random lung points farther than
  15 mm from any mark (negatives); also the least of its three plane logits, and the slice
  head's "some nodule" logit on the axial patch (the network evidence of the findings).
- **malignancy of boxes** on the nodules (:meth:`CadEngine.score_box`, a box of the
  nodule's diameter on its centre slice) against the readers' mean rating (Spearman).
- **lung-mask coverage**: the share of the nodules' outlined pixels inside the search
  region (lung mask dilated as for the candidates) and inside the mask itself, the share of
  all mark centres inside the region, the lung volume (ml) and the slices whose mask is
  under half its neighbours'.

Arrays are ``(z, y, x)``; spacing ``(z, y, x)`` mm. The figures are measured on the scans
given, which may be training patients: say so where they are reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FP_RATES = (1, 2, 4, 8)
#: a finding this close (mm) to a nodule's centre hits it even when the nodule is smaller:
#: with 2.5 mm slices the centre's z alone is uncertain by a slice
MIN_HIT_RADIUS_MM = 5.0
RANDOM_NEGATIVES = 100
Progress = Callable[[str, int, int], None]


@dataclass
class ScanTruth:
    """The readers' marks of one scan in mm (z, y, x voxel × spacing)."""

    nodules_mm: np.ndarray  # (n, 3) centres of nodules ≥ 3 mm
    radius_mm: np.ndarray  # (n,) their hit radius
    readers: np.ndarray  # (n,) how many readers marked each
    ignore_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # small/non-nodule
    ignore_radius_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))


def match_findings(points_mm: np.ndarray, scores: np.ndarray, truth: ScanTruth,
                   min_readers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """LUNA16 matching of one scan's findings: ``(label (m,), nodule (m,))`` with label 1 a
    hit (``nodule`` its index), 0 a false positive, −1 neither (a second finding on a hit
    nodule, or a finding on a mark that does not count). Nodules marked by fewer than
    ``min_readers`` readers become marks that do not count."""
    p = np.asarray(points_mm, float).reshape(-1, 3)
    s = np.asarray(scores, float).reshape(-1)
    label = np.zeros(len(p), int)
    which = np.full(len(p), -1, int)
    counted = truth.readers >= min_readers
    nod, rad = truth.nodules_mm[counted], truth.radius_mm[counted]
    idx = np.nonzero(counted)[0]
    ign = np.concatenate([truth.ignore_mm.reshape(-1, 3), truth.nodules_mm[~counted]])
    ign_r = np.concatenate([truth.ignore_radius_mm, truth.radius_mm[~counted]])
    if len(p) == 0:
        return label, which
    if len(nod):
        d = np.linalg.norm(p[:, None, :] - nod[None], axis=2)
        inside = d <= rad[None]
        for i in np.argsort(-s, kind="stable"):  # best first: it takes the nodule
            if inside[i].any():
                j = int(np.argmin(np.where(inside[i], d[i], np.inf)))
                label[i] = 1 if not (which == idx[j]).any() else -1
                which[i] = idx[j]
    if len(ign):
        d = np.linalg.norm(p[:, None, :] - ign[None], axis=2)
        label[(label == 0) & (d <= ign_r[None]).any(1)] = -1
    return label, which


def froc(scans: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n_nodules: int,
         rates: Sequence[float] = FP_RATES) -> dict:
    """Sensitivity at each of ``rates`` false positives per scan. ``scans``: per scan
    ``(scores, label, nodule)`` as :func:`match_findings` gives (nodule indices must be
    unique across scans, e.g. offset per scan). Findings of all scans are pooled by score; the
    sensitivity at rate r is the share of nodules hit by findings scoring above the
    (r·scans + 1)-th best false positive."""
    n_scans = len(scans)
    if n_scans == 0 or n_nodules == 0:
        return {str(r): float("nan") for r in rates} | {"n_nodules": n_nodules,
                                                        "n_scans": n_scans}
    s = np.concatenate([np.asarray(a[0], float) for a in scans])
    lab = np.concatenate([np.asarray(a[1], int) for a in scans])
    nod = np.concatenate([np.asarray(a[2], int) for a in scans])
    keep = lab >= 0
    s, lab, nod = s[keep], lab[keep], nod[keep]
    order = np.argsort(-s, kind="stable")
    lab, nod, s = lab[order], nod[order], s[order]
    fps = np.cumsum(lab == 0)
    out: dict = {}
    for r in rates:
        allowed = int(np.floor(r * n_scans))
        # findings before the (allowed+1)-th false positive; ties with it are left out
        cut = np.nonzero(fps > allowed)[0]
        end = int(cut[0]) if cut.size else len(lab)
        if cut.size:
            end = int(np.searchsorted(-s, -s[cut[0]], side="left"))
        hits = {int(n) for n, lb in zip(nod[:end], lab[:end]) if lb == 1}
        out[str(r)] = len(hits) / n_nodules
    out["n_nodules"] = n_nodules
    out["n_scans"] = n_scans
    out["total_fp"] = int(fps[-1]) if len(fps) else 0
    out["max_sensitivity"] = len({int(n) for n, lb in zip(nod, lab) if lb == 1}) / n_nodules
    return out


def slice_recall(ranking: np.ndarray, best_rc: np.ndarray, nodules: Sequence[dict],
                 spacing: tuple[float, float, float], k: int = 10) -> list[bool]:
    """Per nodule (dicts with ``slice_range`` (k0, k1), ``centre`` (z, y, x) voxel and
    ``radius_mm``): is one of the ``k`` top slices in its range with its best point within
    its radius in-plane?"""
    top = [int(i) for i in np.asarray(ranking)[:k]]
    sy, sx = float(spacing[1]), float(spacing[2])
    out = []
    for n in nodules:
        k0, k1 = n["slice_range"]
        ok = False
        for s in top:
            if k0 <= s <= k1:
                r, c = best_rc[s]
                d = np.hypot((r - n["centre"][1]) * sy, (c - n["centre"][2]) * sx)
                ok |= bool(d <= n["radius_mm"])
        out.append(ok)
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


# -- one scan ------------------------------------------------------------------------------
def _truth(ann, volume) -> tuple[ScanTruth, list[dict], np.ndarray]:
    """The scan's truth in mm, the nodules ≥ 3 mm as dicts, and the non-nodule marks'
    voxels (n, 3)."""
    sp = np.asarray(volume.spacing, float)
    nods, info, ign, ign_r, non = [], [], [], [], []
    for n in ann.nodules:
        if not n.slice_range:
            continue
        c = np.asarray(n.centre, float)
        if n.is_small or n.diameter_mm < 3.0:
            ign.append(c * sp)
            ign_r.append(MIN_HIT_RADIUS_MM)
            continue
        r = max(n.diameter_mm / 2.0, MIN_HIT_RADIUS_MM)
        readers = len({m.reader for m in n.marks if m.kind == "nodule"})
        mal = n.malignancies
        nods.append(c * sp)
        info.append({"index": n.index, "centre": c, "radius_mm": r, "diameter_mm": n.diameter_mm,
                     "readers": readers, "slice_range": n.slice_range,
                     "malignancy_mean": float(np.mean(mal)) if mal else float("nan"),
                     "marks": [m for m in n.marks if m.kind == "nodule"]})
    for m in ann.non_nodules:
        r = m.rois[0]
        if r.slice_index is None or not len(r.points):
            continue
        x, y = np.asarray(r.points, float).reshape(-1, 2).mean(0)
        non.append((r.slice_index, y, x))
        ign.append(np.array([r.slice_index, y, x]) * sp)
        ign_r.append(MIN_HIT_RADIUS_MM)
    truth = ScanTruth(np.asarray(nods, float).reshape(-1, 3),
                      np.asarray([i["radius_mm"] for i in info], float),
                      np.asarray([i["readers"] for i in info], int),
                      np.asarray(ign, float).reshape(-1, 3), np.asarray(ign_r, float))
    return truth, info, np.asarray(non, float).reshape(-1, 3)


def _outline_pixels(marks, shape) -> np.ndarray:
    """(n, 3) voxels (z, y, x) inside the readers' inclusion outlines."""
    from skimage.draw import polygon

    parts = []
    for m in marks:
        for r in m.rois:
            if r.slice_index is None or not r.inclusion or len(r.points) < 3:
                continue
            rr, cc = polygon(r.points[:, 1], r.points[:, 0], shape[1:])
            parts.append(np.column_stack([np.full(len(rr), r.slice_index), rr, cc]))
    return np.concatenate(parts) if parts else np.zeros((0, 3), int)


def _coverage(volume, mask, region, info, ann) -> dict:
    px = [_outline_pixels(i["marks"], mask.shape) for i in info]
    px = np.concatenate(px) if px else np.zeros((0, 3), int)
    centres = []
    for m in ann.marks:
        for r in m.rois:
            if r.slice_index is not None and len(r.points):
                x, y = np.asarray(r.points, float).reshape(-1, 2).mean(0)
                centres.append((r.slice_index, round(y), round(x)))
    c = np.asarray(centres, int).reshape(-1, 3)
    area = mask.sum(axis=(1, 2)).astype(float)
    nb = np.maximum(np.r_[area[1:], 0], np.r_[0, area[:-1]])
    low = int(((area < 0.5 * nb) & (nb > 2000)).sum())
    return {
        "nodule_pixels_in_region": float(region[tuple(px.T)].mean()) if len(px) else float("nan"),
        "nodule_pixels_in_mask": float(mask[tuple(px.T)].mean()) if len(px) else float("nan"),
        "mark_centres_in_region": float(region[tuple(c.T)].mean()) if len(c) else float("nan"),
        "lung_volume_ml": float(mask.sum() * np.prod(volume.spacing) / 1000.0),
        "slices_under_half_of_neighbours": low,
    }


def _random_lung_points(mask, avoid_mm, spacing, n, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.nonzero(mask[:, ::4, ::4])
    if not len(zz):
        return np.zeros((0, 3), int)
    pick = rng.choice(len(zz), size=min(len(zz), 4 * n), replace=False)
    pts = np.column_stack([zz[pick], yy[pick] * 4, xx[pick] * 4])
    if len(avoid_mm):
        d = np.linalg.norm(pts[:, None, :] * np.asarray(spacing) - avoid_mm[None], axis=2)
        pts = pts[d.min(1) > 15.0]
    return pts[:n]


def evaluate_scan(volume, ann, engine, device: str = "cpu", baseline: bool = True,
                  seed: int = 0) -> dict:
    """Everything of the module docstring for one loaded scan and its annotations."""
    from lungviewer.cad.findings import network_evidence, plane_patches
    from lungviewer.imaging.blobs import dilate_box
    from lungviewer.session import StudySession

    # the viewer's own path: the study session's lung mask and scan
    session = StudySession(autosave=False)
    session.engine = engine
    session.set_volume(volume)
    sp = tuple(float(s) for s in volume.spacing)
    t0 = time.perf_counter()
    mask = session.segment()
    t1 = time.perf_counter()
    rank = session.scan()
    findings = session.findings
    t2 = time.perf_counter()
    truth, info, non = _truth(ann, volume)
    pts = np.array([[f.slice, f.row, f.col] for f in findings], float).reshape(-1, 3)
    scores = np.array([f.score for f in findings], float)
    out: dict = {"series_uid": volume.series_uid, "slices": volume.n_slices,
                 "spacing_mm": list(sp), "n_nodules": len(info),
                 "n_nodules_3_readers": int((truth.readers >= 3).sum()),
                 "n_ignored_marks": len(truth.ignore_mm),
                 "seconds": {"lung_mask": t1 - t0, "findings": t2 - t1}}
    for mr in (1, 3):
        lab, which = match_findings(pts * sp, scores, truth, mr)
        out[f"match_{mr}"] = {"scores": scores.tolist(), "label": lab.tolist(),
                              "nodule": which.tolist()}
    hits = slice_recall(rank.ranking(), rank.best, info, sp)
    out["recall_at_10"] = hits
    if baseline:
        t3 = time.perf_counter()
        s2d = engine.scan_slices(volume, mask)
        out["seconds"]["slice_scan_2d"] = time.perf_counter() - t3
        out["recall_at_10_2d"] = slice_recall(s2d.ranking(), s2d.best, info, sp)
    # detector on points: nodule centres vs non-nodule marks and random lung points
    all_marks = np.concatenate([truth.nodules_mm, truth.ignore_mm]).reshape(-1, 3)
    rnd = _random_lung_points(mask, all_marks, sp, RANDOM_NEGATIVES, seed)
    pos = np.array([i["centre"] for i in info], float).reshape(-1, 3)
    neg = np.concatenate([non, rnd.astype(float)])
    pts_all = np.round(np.concatenate([pos, neg])).astype(int)
    if len(pts_all):
        pts_all = np.clip(pts_all, 0, np.asarray(volume.hu.shape) - 1)
        logits, hz = network_evidence(engine.models, plane_patches(volume.hu, sp, pts_all),
                                      device)
        out["detector_points"] = {"axial_logit": logits[:, 0].tolist(),
                                  "min_plane_logit": logits.min(1).tolist(),
                                  "head_logit": (np.logaddexp(hz[:, 1], hz[:, 2])
                                                 - hz[:, 0]).tolist(),
                                  "label": [1] * len(pos) + [0] * len(neg),
                                  "n_non_nodule": len(non), "n_random": len(rnd)}
    # malignancy of a box on each nodule
    boxes = []
    for i in info:
        k, r, c = (round(v) for v in i["centre"])
        hr = max(3, int(np.ceil(i["diameter_mm"] / 2.0 / sp[1]))) + 2
        hc = max(3, int(np.ceil(i["diameter_mm"] / 2.0 / sp[2]))) + 2
        b = session.score_box(k, (r - hr, c - hc, r + hr + 1, c + hc + 1))
        boxes.append({"nodule": i["index"], "slice": k, "diameter_mm": round(i["diameter_mm"], 1),
                      "readers": i["readers"], "readers_mean_malignancy": i["malignancy_mean"],
                      "malignancy_expected": b.malignancy_expected,
                      "nodule_probability": b.nodule_prob})
    out["boxes"] = boxes
    region = dilate_box(mask, (1, 6, 6))
    out["coverage"] = _coverage(volume, mask, region, info, ann)
    out["top_findings"] = [f.as_dict(session.threshold) for f in findings[:10]]
    # the list a reader sees at each operating point, and the sizes of the found nodules
    lab1, which1 = match_findings(pts * sp, scores, truth, 1)
    ops = {}
    for fp, t in sorted(engine.operating_points.items()):
        shown = scores >= t
        ops[str(fp)] = {"threshold": t, "shown": int(shown.sum()),
                        "hits": len(set(which1[shown & (lab1 == 1)].tolist())),
                        "false": int((shown & (lab1 == 0)).sum())}
    out["operating_points"] = ops
    sizes = []
    for f, lb, j in zip(findings, lab1, which1):
        if lb == 1 and f.sized:
            i = info[int(j)]
            sizes.append({"nodule": i["index"], "readers_diameter_mm": round(i["diameter_mm"], 1),
                          "finding_diameter_mm": round(f.diameter_mm, 1),
                          "finding_volume_mm3": round(f.volume_mm3, 1), "kind": f.kind,
                          "candidates": f.merged})
    out["sizes"] = sizes
    return out


# -- many scans ----------------------------------------------------------------------------
def find_lidc_series(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(series folder, XML file)`` for every LIDC XML under ``folder`` (the series is the
    XML's folder), sorted; linked folders are followed, each real folder once."""
    import os

    from lungviewer.study.lidc_xml import is_lidc_xml

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of LIDC series")
    found: dict[Path, Path] = {}
    seen: set[str] = set()
    for d, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            x = Path(d) / name
            if name.lower().endswith(".xml") and is_lidc_xml(x):
                found.setdefault(x.parent, x)
    return sorted(found.items())


def _auc(scores, labels) -> float:
    from lungviewer.cad.training.evaluate import auc

    return auc(np.asarray(scores, float), np.asarray(labels, int))


def summarise(scans: list[dict]) -> dict:
    """Pooled figures over the per-scan results of :func:`evaluate_scan`."""
    res: dict = {"n_scans": len(scans)}
    for mr in (1, 3):
        parts, offset, n_nod = [], 0, 0
        for s in scans:
            m = s[f"match_{mr}"]
            nod = np.asarray(m["nodule"], int)
            parts.append((np.asarray(m["scores"]), np.asarray(m["label"]),
                          np.where(nod >= 0, nod + offset, -1)))
            offset += 10_000
            n_nod += s["n_nodules"] if mr == 1 else s["n_nodules_3_readers"]
        res[f"froc_{mr}_reader"] = froc(parts, n_nod)
    rec = [h for s in scans for h in s["recall_at_10"]]
    res["recall_at_10"] = float(np.mean(rec)) if rec else float("nan")
    rec2 = [h for s in scans for h in s.get("recall_at_10_2d", [])]
    res["recall_at_10_2d"] = float(np.mean(rec2)) if rec2 else float("nan")
    lab = [v for s in scans for v in s.get("detector_points", {}).get("label", [])]
    for key in ("axial_logit", "min_plane_logit", "head_logit"):
        sc = [v for s in scans for v in s.get("detector_points", {}).get(key, [])]
        res[f"detector_auc_{key.split('_logit')[0]}"] = _auc(sc, lab) if sc else float("nan")
    boxes = [b for s in scans for b in s["boxes"]]
    ok = [b for b in boxes if np.isfinite(b["readers_mean_malignancy"])]
    res["malignancy_spearman"] = spearman([b["readers_mean_malignancy"] for b in ok],
                                          [b["malignancy_expected"] for b in ok])
    res["boxes"] = boxes
    cov = [s["coverage"] for s in scans]
    for key in ("nodule_pixels_in_region", "nodule_pixels_in_mask", "mark_centres_in_region"):
        v = [c[key] for c in cov if np.isfinite(c[key])]
        res[f"coverage.{key}"] = float(np.mean(v)) if v else float("nan")
    res["coverage.lung_volume_ml"] = [c["lung_volume_ml"] for c in cov]
    res["seconds_findings"] = [s["seconds"]["findings"] for s in scans]
    res["operating_points"] = {
        fp: {k: sum(s["operating_points"][fp][k] for s in scans) for k in ("shown", "hits",
                                                                             "false")}
        for fp in (scans[0].get("operating_points") or {})}
    res["sizes"] = [z for s in scans for z in s.get("sizes", [])]
    return res


def evaluate_real(folder: str | Path, engine=None, device: str = "cpu",
                  progress: Progress | None = None, baseline: bool = True) -> dict:
    """The real-CT evaluation of every LIDC series with its XML under ``folder`` (see the
    module docstring): ``{"summary": …, "scans": [...], "skipped": [...], "data": …}``.
    ``progress(what, done, total)`` is called per scan. ``baseline`` adds the engine's 2-D
    slice scan's recall@10 beside the findings'."""
    from lungviewer.study.dicom_series import StudyLoadError, load_series
    from lungviewer.study.lidc_xml import LidcXmlError, parse_lidc_xml
    from lungviewer.study.nodules import load_study_annotations

    if engine is None:
        from lungviewer.cad.engine import CadEngine

        engine = CadEngine.load(device=device)
        device = engine.device
    series = find_lidc_series(folder)
    if not series:
        raise FileNotFoundError(f"no LIDC XML (readers' marks) found under {folder}")
    scans, skipped = [], []
    for n, (d, x) in enumerate(series):
        if progress is not None:
            progress("real scans", n, len(series))
        try:
            uid = parse_lidc_xml(x).series_uid or None
            try:
                vol = load_series(d, series_uid=uid)
            except StudyLoadError:
                vol = load_series(d)
            ann = load_study_annotations(vol, d, use_database=False)
        except (StudyLoadError, LidcXmlError, OSError, ValueError) as exc:
            skipped.append({"folder": str(d), "why": str(exc)})
            continue
        if ann.source == "none" or not ann.nodules and not ann.non_nodules:
            skipped.append({"folder": str(d), "why": "no readers' marks map onto the series"})
            continue
        r = evaluate_scan(vol, ann, engine, device, baseline)
        r["folder"] = d.name
        r["synthetic"] = bool(vol.is_synthetic)
        scans.append(r)
    if progress is not None:
        progress("real scans", len(series), len(series))
    return {"summary": summarise(scans) if scans else {"n_scans": 0}, "scans": scans,
            "skipped": skipped,
            "data": ("LIDC-IDRI scans with their readers' XML (The Cancer Imaging Archive, "
                     "CC BY 3.0) under " + Path(folder).name)}


def _f(v: float, nd: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def format_real(result: dict) -> str:
    """The result of :func:`evaluate_real` as text for the terminal."""
    s = result["summary"]
    lines = [f"Real CT evaluation: {s.get('n_scans', 0)} scan(s); {result['data']}."]
    for sk in result.get("skipped", []):
        lines.append(f"  skipped {sk['folder']}: {sk['why']}")
    if not s.get("n_scans"):
        return "\n".join(lines)
    for mr in (1, 3):
        f = s[f"froc_{mr}_reader"]
        lines.append(f"FROC, nodules >= 3 mm marked by >= {mr} reader(s) (n={f['n_nodules']}): "
                     + ", ".join(f"{r} FP/scan {_f(f[str(r)], 2)}" for r in FP_RATES)
                     + f"; all findings {_f(f.get('max_sensitivity', float('nan')), 2)} at "
                       f"{f.get('total_fp', 0) / max(1, f['n_scans']):.0f} FP/scan")
    lines.append(f"Recommended slices recall@10 (on the nodule): findings "
                 f"{_f(s['recall_at_10'], 2)}, 2-D slice scan {_f(s['recall_at_10_2d'], 2)}")
    lines.append(f"Detector AUC (nodule centres vs non-nodule marks and random lung points): "
                 f"axial patch {_f(s['detector_auc_axial'])}, least of three planes "
                 f"{_f(s['detector_auc_min_plane'])}; slice head on the axial patch "
                 f"{_f(s['detector_auc_head'])}")
    lines.append(f"Malignancy of boxes on the nodules vs readers' mean (Spearman "
                 f"{_f(s['malignancy_spearman'], 2)}):")
    for b in s["boxes"]:
        lines.append(f"  nodule {b['nodule']} ({b['diameter_mm']} mm, {b['readers']} reader(s), "
                     f"slice {b['slice'] + 1}): expected {b['malignancy_expected']:.2f}, readers "
                     f"{_f(b['readers_mean_malignancy'], 2)}, probability of the finding "
                     f"there {_f(b['nodule_probability'], 2)}")
    lines.append(f"Lung mask: nodule pixels in the search region "
                 f"{_f(s['coverage.nodule_pixels_in_region'], 2)} (in the mask "
                 f"{_f(s['coverage.nodule_pixels_in_mask'], 2)}), mark centres in the region "
                 f"{_f(s['coverage.mark_centres_in_region'], 2)}, lung volume "
                 + ", ".join(f"{v:.0f}" for v in s["coverage.lung_volume_ml"]) + " ml")
    for fp, o in s.get("operating_points", {}).items():
        lines.append(f"At {fp} FP/scan (held-out operating point): {o['shown']} shown, "
                     f"{o['hits']} nodule(s) hit, {o['false']} false")
    for z in s.get("sizes", []):
        lines.append(f"  found nodule {z['nodule']}: {z['kind']} {z['finding_diameter_mm']} mm "
                     f"(readers {z['readers_diameter_mm']} mm), {z['finding_volume_mm3']:.0f} "
                     f"mm³, {z['candidates']} candidate(s) merged")
    lines.append("Findings time per scan: "
                 + ", ".join(f"{v:.1f} s" for v in s["seconds_findings"]))
    return "\n".join(lines)
