"""A lung tumour as the CAD findings see it: one finding, in the top 3, its size within 50 %
of the truth, and the same rank (±2) in a soft and a sharp reconstruction kernel.

HYBRID images: the real development scan ../shared/data/real/LIDC-IDRI-0006 (a training
patient) hosts a synthetic lobulated solid mass (three overlapping balls, soft edge, the
host's own noise; :func:`lungviewer.cad.training.hybrid.insert_nodules`) placed where the
lung is deepest; "sharp" is the same image through an edge-enhancing filter (unsharp mask,
amount 1.5 at 0.7 px, a B60-like look) with the noise it amplifies. Not a real tumour: the
real ones that judge this target are held out.

    python bench/bench_mass.py [--diameter 50] [--study DIR]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "LIDC-IDRI-0006"


def lobulated(d_mm: float, step: float = 1.0) -> np.ndarray:
    """A (z, y, x) bool mask at ``step`` mm of three overlapping balls spanning ``d_mm``."""
    r = d_mm / 4.0
    n = int(np.ceil(d_mm / step)) + 4
    z, y, x = (np.indices((n, n, n)) - n / 2) * step
    m = np.zeros((n, n, n), bool)
    for dz, dy in ((-0.8, -1.0), (0.0, 0.0), (0.8, 1.0)):
        m |= (z - dz * r) ** 2 + (y - dy * r) ** 2 + x ** 2 <= (1.25 * r) ** 2
    return m


def sharpen(hu: np.ndarray, amount: float = 1.5, sigma_px: float = 0.7) -> np.ndarray:
    f = hu.astype(np.float32)
    blur = ndimage.gaussian_filter(f, (0, sigma_px, sigma_px))
    return np.clip(f + amount * (f - blur), -1024, 3071).astype(np.int16)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--diameter", type=float, default=50.0)
    ap.add_argument("--study", default=str(REAL))
    a = ap.parse_args()
    from lungviewer.cad.engine import CadEngine
    from lungviewer.cad.training.hybrid import Donor, insert_nodules
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.session import study_findings
    from lungviewer.study.dicom_series import load_series

    vol = load_series(a.study)
    sp = np.asarray(vol.spacing, float)
    mask0 = segment_lungs(vol.hu).mask
    depth = ndimage.distance_transform_edt(mask0, sampling=sp)
    c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    donor = Donor("synthetic mass", lobulated(a.diameter), (1.0, 1.0, 1.0), 5.0, False,
                  a.diameter)
    rng = np.random.default_rng(0)
    deep = depth >= 0.9 * depth.max()  # where the lung is deepest (a mass fits)
    hu, placed = insert_nodules(vol.hu, deep, vol.spacing, [donor], 1, rng,
                                avoid_mm=np.zeros((0, 3)))
    if not placed:
        raise SystemExit("the mass could not be placed")
    centre = placed[0].centre
    truth_long = float(np.ptp(np.argwhere(lobulated(a.diameter)[lobulated(a.diameter)
                                                               .shape[0] // 2])[:, 0]))
    eng = CadEngine.load(device="cpu")
    print(f"HYBRID: {Path(a.study).name} (real CT) + a {a.diameter:.0f} mm lobulated mass at "
          f"voxel {np.round(centre).astype(int).tolist()} (deepest lung point "
          f"{[int(v) for v in c]}); long axis on its central slice {truth_long:.0f} mm")
    for name, img in (("soft (as acquired)", hu), ("sharp (unsharp mask)", sharpen(hu))):
        v = replace(vol, hu=img)
        mask = segment_lungs(img).mask
        t = time.perf_counter()
        fs = study_findings(eng, v, mask)
        dt = time.perf_counter() - t
        d = [np.linalg.norm((np.array([f.slice, f.row, f.col]) - centre) * sp) for f in fs]
        on = [i for i, x in enumerate(d) if x < a.diameter / 2 + 5]
        ops = eng.operating_points
        if not on:
            print(f"{name}: no finding on the mass ({len(fs)} findings, {dt:.1f} s)")
            continue
        f = fs[on[0]]
        shown = {fp: f.score >= t for fp, t in sorted(ops.items())}
        rest = [fs[i].score for i in on[1:]]
        print(f"{name}: {len(on)} finding(s) within 5 mm of the mass (besides the first: "
              f"{len(rest)}, highest p={max(rest, default=0.0):.3f}); rank {on[0] + 1} of "
              f"{len(fs)}; "
              f"{f.kind}, long {f.long_axis_mm:.1f} mm ({100 * (f.long_axis_mm / truth_long - 1):+.0f}"
              f" %), short {f.short_axis_mm:.1f} mm, {f.volume_mm3:.0f} mm³, "
              f"{f.merged} candidate(s) merged, p={f.score:.2f}, shown at "
              + ", ".join(f"{fp} FP/scan: {'yes' if s else 'no'}" for fp, s in shown.items())
              + f"; findings {dt:.1f} s")


if __name__ == "__main__":
    main()
