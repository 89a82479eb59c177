"""The synthetic-to-real gap: the real development scan beside its LIDC twin(s), figure by figure.

    python bench/twin_gap.py [SERIES_DIR] [--patient LIDC-IDRI-0006] [--json FILE]
                             [--no-realistic] [--threads 2] [--points 200] [--seed 0]

SERIES_DIR defaults to ../shared/data/real/LIDC-IDRI-0006 (real TCIA pixels, a training
patient; absent → a message and exit status 2). The twin of the same patient is rendered
with :func:`lungviewer.synth.twin.render_twin` (the default twin) and, unless
``--no-realistic`` is given, the realistic twin as well (``realistic=True``). Each
volume gets its own lung mask (``segment_lungs(hu).mask``, threshold method).

Columns: REAL CT <patient> | SYNTHETIC twin | SYNTHETIC realistic twin. Rows:

- lung-mask volume (ml);
- tissues (:func:`lungviewer.imaging.ctstats.tissue_histograms`, every 2nd slice): share of
  the body, median HU, and the Wasserstein-1 distance (HU) of each tissue's HU histogram to
  the real scan's;
- vessels: fraction of the eroded lung mask above −500 HU, in-plane calibre shares, median
  and skeleton density (:func:`~lungviewer.imaging.ctstats.vessel_calibres`);
- noise: NPS sigma, mean and peak frequency of the most uniform soft-tissue squares
  (:func:`~lungviewer.imaging.ctstats.noise_power_spectrum`);
- CAD (CPU): the nodule detector's logit on the axial patch at the readers' nodule centres
  (the real scan's LIDC XML via ``load_study_annotations``; the twin draws its nodules from
  the same contours on the same geometry, so the same voxels — the slice is matched by z
  position), the detector's logit at ``--points`` random points of each volume's own lung
  mask (seeded; 10/50/90 % quantiles), the number of candidates that reach the networks
  and of findings (``CadEngine.find_findings``), and the findings' score quantiles.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "LIDC-IDRI-0006"
QUANTILES = (0.1, 0.5, 0.9)
W = 28  # column width


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def quantiles(v) -> list[float]:
    v = np.asarray(v, float)
    return [float(np.quantile(v, q)) for q in QUANTILES] if v.size else [float("nan")] * 3


def fmt(v, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return " / ".join(fmt(x, spec) for x in v)
    return "nan" if not np.isfinite(v) else format(v, spec)


def table(title: str, labels: list[str], rows: list[tuple[str, list]], spec: str = ".3f",
          first: int = 30) -> None:
    print(f"\n== {title}")
    print(f"{'':{first}}" + "".join(f"| {lb:<{W}}" for lb in labels))
    for name, vals in rows:
        print(f"{name:{first}}" + "".join(f"| {fmt(v, spec):<{W}}" for v in vals))


def random_lung_points(mask: np.ndarray, n: int, seed: int) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if not idx.size:
        return np.zeros((0, 3), int)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(idx.size, size=min(n, idx.size), replace=False))
    return np.column_stack(np.unravel_index(idx[pick], mask.shape))


def detector_logits(models: dict, hu: np.ndarray, spacing, points: np.ndarray,
                    device: str) -> list[float]:
    """The nodule detector's logit on the axial patch at each (z, y, x) voxel."""
    from lungviewer.cad.findings import network_evidence, plane_patches

    if not len(points):
        return []
    pts = np.clip(np.round(points).astype(int), 0, np.asarray(hu.shape) - 1)
    logits, _ = network_evidence(models, plane_patches(hu, spacing, pts, planes=(0,)), device)
    return [float(v) for v in logits[:, 0]]


def measure(label: str, vol, engine, nodules: list[dict], real_z: np.ndarray, a,
            drawn: np.ndarray | None = None) -> dict:
    """All the figures of one volume; ``drawn``: a twin's own nodule mask (z, y, x)."""
    from lungviewer.cad.findings import candidates
    from lungviewer.imaging import ctstats
    from lungviewer.imaging.parenchyma import segment_lungs

    t0 = time.perf_counter()
    hu, sp = vol.hu, tuple(float(s) for s in vol.spacing)
    mask = segment_lungs(hu).mask
    out: dict = {"label": label, "shape": list(hu.shape), "spacing_mm": list(sp)}
    out |= ctstats.describe(hu, mask, sp)
    t1 = time.perf_counter()
    # nodule centres: the real scan's centre slice mapped by z position onto this volume
    z = np.asarray(vol.positions, float)[:, 2]
    pts, dz = [], []
    for n in nodules:
        zr = real_z[n["slice"]]
        k = int(np.argmin(np.abs(z - zr)))
        dz.append(float(abs(z[k] - zr)))
        pts.append((k, n["centre"][1], n["centre"][2]))
    pts_a = np.asarray(pts, float).reshape(-1, 3)
    out["nodule_logits"] = detector_logits(engine.models, hu, sp, pts_a, engine.device)
    out["nodule_z_mismatch_mm"] = max(dz) if dz else float("nan")
    vox = np.clip(np.round(pts_a).astype(int), 0, np.asarray(hu.shape) - 1)
    out["nodule_in_lung_mask"] = [bool(mask[tuple(v)]) for v in vox]
    out["nodule_drawn"] = (None if drawn is None else
                           [bool(drawn[k, max(0, y - 2):y + 3, max(0, x - 2):x + 3].any())
                            for k, y, x in vox])
    rnd = random_lung_points(mask, a.points, a.seed)
    rl = detector_logits(engine.models, hu, sp, rnd, engine.device)
    out["random_lung_logits"] = {"n": len(rl), "quantiles": quantiles(rl), "values": rl}
    t2 = time.perf_counter()
    out["n_candidates"] = len(candidates(hu, mask, sp))
    found = engine.find_findings(vol, mask)
    scores = [f.score for f in found]
    out["n_findings"] = len(found)
    out["finding_scores"] = {"quantiles": quantiles(scores),
                             "max": float(max(scores)) if scores else float("nan")}
    # best finding on each nodule (within its radius, at least 5 mm)
    best = []
    fp = np.array([[f.slice, f.row, f.col] for f in found], float).reshape(-1, 3) * sp
    for n, p in zip(nodules, pts_a):
        d = np.linalg.norm(fp - p * sp, axis=1) if len(fp) else np.zeros(0)
        hit = d <= max(5.0, n["diameter_mm"] / 2)
        best.append(float(max(np.asarray(scores)[hit])) if hit.any() else None)
    out["nodule_best_finding_score"] = best
    out["findings"] = [f.as_dict() for f in found]
    out["seconds"] = {"figures": t1 - t0, "detector": t2 - t1,
                      "findings": time.perf_counter() - t2}
    log(f"{label}: figures {t1 - t0:.1f} s, detector {t2 - t1:.1f} s, "
        f"candidates + findings {time.perf_counter() - t2:.1f} s")
    return out


def real_nodules(vol, folder: Path) -> tuple[list[dict], str]:
    from lungviewer.study.nodules import load_study_annotations

    ann = load_study_annotations(vol, folder, use_database=False)
    z = np.asarray(vol.positions, float)[:, 2]
    out = []
    for n in ann.nodules:
        if not n.slice_range:
            continue
        k = int(round(n.centre[0]))
        out.append({"index": n.index, "centre": [float(c) for c in n.centre],
                    "z_mm": float(z[k]), "slice": k, "diameter_mm": float(n.diameter_mm),
                    "small": n.is_small, "readers": len({m.reader for m in n.marks})})
    return out, ann.source


def print_report(res: dict) -> None:
    vols = res["volumes"]
    labels = [v["label"] for v in vols]
    real = vols[0]
    print(f"Synthetic-to-real gap, patient {res['patient']} (the real scan is a training "
          f"patient). Columns: " + " | ".join(labels))
    table("volume", labels, [
        ("shape (z, y, x)", [" x ".join(str(s) for s in v["shape"]) for v in vols]),
        ("spacing (z, y, x) mm", [" / ".join(f"{s:.3f}" for s in v["spacing_mm"])
                                  for v in vols]),
        ("lung mask volume (ml)", [v["lung_ml"] for v in vols]),
    ], ".0f")
    names = list(real["tissues"]["classes"])
    from lungviewer.imaging.ctstats import tissue_distances

    dist = [tissue_distances(real["tissues"], v["tissues"]) for v in vols]
    for v, d in zip(vols, dist):
        v["tissue_w1_to_real_hu"] = d
    table("tissues: share of the body (%)", labels,
          [(n, [100 * v["tissues"]["classes"][n]["share"] for v in vols]) for n in names], ".2f")
    table("tissues: median HU", labels,
          [(n, [v["tissues"]["classes"][n]["median_hu"] for v in vols]) for n in names], ".0f")
    table("tissues: HU histogram distance to the REAL CT (Wasserstein-1, HU)", labels,
          [(n, [d[n] for d in dist]) for n in names], ".1f")
    c0 = real["calibres"]
    bins = [f"{c0['edges_mm'][i]:g}-{c0['edges_mm'][i + 1]:g} mm"
            for i in range(len(c0["edges_mm"]) - 1)]
    table("vessels in the lung (> -500 HU inside the lung mask eroded 2 px)", labels, [
        ("vessel fraction (%)", [100 * v["vessel_fraction"] for v in vols]),
        *[(f"calibre share {b} (%)", [100 * v["calibres"]["shares"][i] for v in vols])
          for i, b in enumerate(bins)],
        ("calibre median (mm)", [v["calibres"]["median_mm"] for v in vols]),
        ("skeleton density (mm/ml)", [v["calibres"]["skeleton_mm_per_ml"] for v in vols]),
    ], ".2f")
    table("noise power spectrum (most uniform soft-tissue squares)", labels, [
        ("NPS sigma (HU)", [v["nps"]["sigma_hu"] for v in vols]),
        ("mean frequency (1/mm)", [v["nps"]["mean_freq"] for v in vols]),
        ("peak frequency (1/mm)", [v["nps"]["peak_freq"] for v in vols]),
        ("Nyquist (1/mm)", [v["nps"]["nyquist"] for v in vols]),
        ("squares used", [str(v["nps"]["n_rois"]) for v in vols]),
        ("squares' structure (HU)", [v["nps"]["structure_hu"] for v in vols]),
    ], ".3f")
    rows = []
    for i, n in enumerate(res["nodules"]):
        what = (f"#{n['index']} s{n['slice']} " + ("small (<3mm)" if n["small"] else
                                                    f"{n['diameter_mm']:.1f}mm")
                + f" {n['readers']} readers")
        cells = []
        for v in vols:
            logit = fmt(v["nodule_logits"][i], ".2f")
            best = fmt(v["nodule_best_finding_score"][i], ".3f")
            c = f"{logit:>6} f={best:<5}" + (" in" if v["nodule_in_lung_mask"][i] else " OUT")
            if v["nodule_drawn"] is not None:
                c += " drawn" if v["nodule_drawn"][i] else " undrawn"
            cells.append(c)
        rows.append((what, cells))
    table(f"CAD: detector logit at the readers' nodule centres ({res['annotations']}); "
          "f= best finding score within max(5 mm, radius); in/OUT of the volume's lung mask; "
          "drawn/undrawn in the twin's nodule mask", labels, rows, first=34)
    print("   (z of the twins' slices vs the real scan's: at most "
          + ", ".join(f"{v['nodule_z_mismatch_mm']:.2f}" for v in vols[1:]) + " mm apart)")
    table("CAD: detector logit at random lung points, findings", labels, [
        (f"random lung logit q10/50/90 (n={real['random_lung_logits']['n']})",
         [v["random_lung_logits"]["quantiles"] for v in vols]),
        ("candidates reaching the networks", [str(v["n_candidates"]) for v in vols]),
        ("findings", [str(v["n_findings"]) for v in vols]),
        ("finding score q10/50/90", [v["finding_scores"]["quantiles"] for v in vols]),
        ("finding score max", [v["finding_scores"]["max"] for v in vols]),
    ], ".2f", first=44)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("series", nargs="?", default=str(REAL), help="the real DICOM series folder")
    ap.add_argument("--patient", default=None,
                    help="LIDC patient of the twin (default: the folder's name)")
    ap.add_argument("--json", help="write everything as JSON to FILE")
    ap.add_argument("--no-realistic", action="store_true",
                    help="measure the default twin only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--points", type=int, default=200, help="random lung points per volume")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    folder = Path(a.series)
    if not folder.is_dir():
        print(f"{folder}: no such folder (the real development scan is absent); nothing to "
              "compare the twin with", file=sys.stderr)
        return 2
    patient = a.patient or folder.name
    import torch

    torch.set_num_threads(a.threads)
    from lungviewer.cad.engine import CadEngine
    from lungviewer.study.dicom_series import load_series
    from lungviewer.study.volume import Volume
    from lungviewer.synth.twin import render_twin

    real = load_series(folder)
    nodules, source = real_nodules(real, folder)
    engine = CadEngine.load(device="cpu")
    todo = [(f"REAL CT {patient}", lambda: real), ("SYNTHETIC twin", {})]
    if not a.no_realistic:
        todo.append(("SYNTHETIC realistic twin", {"realistic": True}))
    real_z = np.asarray(real.positions, float)[:, 2]
    vols = []
    for label, how in todo:
        drawn = None
        if callable(how):
            vol = how()
        else:
            t = time.perf_counter()
            twin = render_twin(patient, **how)
            log(f"{label}: rendered in {time.perf_counter() - t:.1f} s")
            vol = Volume(hu=twin.hu, spacing=twin.spacing, positions=twin.positions,
                         is_synthetic=True)
            drawn = twin.nodule_mask
            del twin
        vols.append(measure(label, vol, engine, nodules, real_z, a, drawn))
    res = {"patient": patient, "series": str(folder), "annotations": source,
           "nodules": nodules, "volumes": vols, "device": engine.device_name,
           "torch_threads": torch.get_num_threads()}
    print_report(res)
    if a.json:
        from lungviewer.fileio import atomic_path

        with atomic_path(a.json) as tmp:
            Path(tmp).write_text(json.dumps(res, indent=1), encoding="utf-8")
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
