"""The lung mask (threshold method) on a real CT series, against an independent 3-D reference.

    python bench/lung_mask_real.py [SERIES_DIR] [--impl parenchyma.py] [--png PREFIX]

SERIES_DIR defaults to ../shared/data/real/LIDC-IDRI-0006 (real TCIA pixels, a training
patient). ``--impl`` runs another copy of ``lungviewer/imaging/parenchyma.py`` (e.g. an older
version, for a before/after table); ``--png PREFIX`` writes mask outlines over a few slices
as ``PREFIX<slice>.png``.

The reference (:func:`reference_mask`) is built another way than the method — in 3-D, with a
fixed threshold and no per-slice threshold, closing or body finding:

1. air = HU < −400, padding (HU < −1024) left out;
2. outside air = the 3-D (6-connected) components of air that reach the volume's in-plane
   border or the padding on at least half the slices they span (the air around the body
   does on every slice; a lung cut by the field of view, as on the GE CTA, only where the
   circle cuts it);
3. the remaining air's 3-D components; kept: the largest, and the next ones (at most two in
   all besides it) with at least 15 % of its volume (the two lungs; bowel gas and the gap
   under the back are far smaller);
4. airways out: 3-D region growing in the Gaussian-smoothed image (σ = 1 px in-plane) from
   the kept air's pieces of at most 1000 mm² on its topmost slice (the trachea; not the lungs
   of a volume that starts mid-lung), below a threshold raised from −1000 HU
   to −900 HU in steps of 10 HU, stopping before a step that leaks into the lung (the
   volume passes 300 mL, or more than doubles once above 5 mL); the grown airway, dilated
   by three pixels in-plane (its wall's partial volume), is removed, and so are in-plane
   pieces under 200 px left beside it (the rest of the wall);
5. in every slice, holes of the mask smaller than 800 mm² (vessels) are filled, except
   within that dilated airway.

Figures: Dice and volumes of the whole mask; per slice, coverage = |method ∩ reference| /
|reference| on slices where the reference has at least 1000 px; the number of those slices
with coverage under 0.9.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "LIDC-IDRI-0006"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lung_reference import MIN_REFERENCE_PX, compare, reference_mask  # noqa: E402,F401

def _load_impl(path: str | None):
    if path is None:
        from lungviewer.imaging import parenchyma
        return parenchyma
    spec = importlib.util.spec_from_file_location("parenchyma_impl", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["parenchyma_impl"] = mod
    spec.loader.exec_module(mod)
    return mod


def save_overlays(hu, mask, ref, ks, prefix: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lungviewer.fileio import atomic_path

    written = []
    for k in ks:
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(np.clip(hu[k], -1200, 400), cmap="gray")
        if mask[k].any():
            ax.contour(mask[k], [0.5], colors="r", linewidths=0.8)
        if ref[k].any():
            ax.contour(ref[k], [0.5], colors="c", linewidths=0.5, linestyles="dashed")
        ax.set_title(f"slice {k}: red = lung mask, cyan dashed = reference")
        ax.axis("off")
        target = f"{prefix}{k:03d}.png"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
        plt.close(fig)
        written.append(target)
    return written


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("series", nargs="?", default=str(DEFAULT))
    ap.add_argument("--impl", help="another parenchyma.py to run instead of lungviewer's")
    ap.add_argument("--png", help="write overlays as PREFIX<slice>.png")
    ap.add_argument("--slices", default="", help="comma-separated slices for --png")
    a = ap.parse_args()
    if not Path(a.series).is_dir():
        print(f"{a.series}: no such folder (the real dev scan is absent)", file=sys.stderr)
        return 1
    from lungviewer.study.dicom_series import load_series

    vol = load_series(Path(a.series))
    hu, sp = vol.hu, vol.spacing
    impl = _load_impl(a.impl)
    impl.segment_lungs(hu[:4])  # warm up
    t0 = time.perf_counter()
    mask = impl.segment_lungs(hu).mask
    t1 = time.perf_counter()
    ref = reference_mask(hu, sp)
    r = compare(mask, ref, sp)
    print(f"{hu.shape[0]} slices {hu.shape[1]}x{hu.shape[2]}, spacing {sp} mm; "
          f"implementation {a.impl or 'lungviewer'}: {t1 - t0:.2f} s")
    print(f"Dice {r['dice']:.4f}, precision {r['precision']:.4f}, lung volume "
          f"{r['volume_ml']:.0f} mL (reference {r['reference_ml']:.0f} mL)")
    cov = r["coverage"]
    print(f"coverage on {r['scored_slices']} slices with >= {MIN_REFERENCE_PX} reference px: "
          f"median {np.nanmedian(cov):.3f}, min {np.nanmin(cov):.3f}; slices under 0.9: "
          f"{len(r['under_0.9'])} {r['under_0.9']}")
    per_dice = []
    for k in range(hu.shape[0]):
        s = mask[k].sum() + ref[k].sum()
        per_dice.append(2 * (mask[k] & ref[k]).sum() / s if s else 1.0)
    worst = np.argsort(per_dice)[:5]
    print("worst slice Dice: " + ", ".join(f"{k}: {per_dice[k]:.3f} (cov {cov[k]:.3f}, "
                                           f"{mask[k].sum()} vs {ref[k].sum()} px)"
                                           for k in worst))
    if a.png:
        ks = [int(s) for s in a.slices.split(",") if s] or list(worst[:2]) + [40, 70, 100, 120]
        ks = [k for k in ks if 0 <= k < hu.shape[0]]
        for p in save_overlays(hu, mask, ref, ks, a.png):
            print("wrote", p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
