"""M1 lung segmentation: lungviewer's whole-volume implementation vs a straightforward
per-slice scikit-image implementation of the same steps, on the same volume in one run.

    python bench/bench_parenchyma.py [--patient LIDC-IDRI-0001] [--dice N]

--dice N also reports the Dice of lungviewer's mask against the twin's true lung mask for
the first N LIDC patients with annotations (synthetic images).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage import measure, morphology


def reference(hu: np.ndarray) -> np.ndarray:
    """The method written plainly, slice by slice, with scikit-image."""
    out = np.zeros(hu.shape, dtype=bool)
    for k, sl in enumerate(hu):
        t = (float(sl.max()) + float(sl.min())) / 2
        for _ in range(100):
            lo, hi = sl[sl <= t], sl[sl > t]
            if lo.size == 0 or hi.size == 0:
                break
            new = (lo.mean() + hi.mean()) / 2
            if abs(new - t) < 0.5:
                t = new
                break
            t = new
        dark = np.pad(sl <= t, 11, mode="edge")
        closed = morphology.binary_closing(dark, morphology.disk(5))[11:-11, 11:-11]
        lab = measure.label(closed, connectivity=1)
        lab = morphology.remove_small_objects(lab, 1000)
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        out[k] = (lab > 0) & ~np.isin(lab, border)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patient", default="LIDC-IDRI-0001")
    ap.add_argument("--dice", type=int, default=0)
    a = ap.parse_args()
    from lungviewer.imaging.parenchyma import dice, segment_lungs
    from lungviewer.study.lidc_db import get_database
    from lungviewer.synth.twin import render_twin

    twin = render_twin(a.patient)
    hu = twin.hu
    segment_lungs(hu)  # warm up
    t0 = time.perf_counter()
    ours = segment_lungs(hu).mask
    t1 = time.perf_counter()
    ref = reference(hu)
    t2 = time.perf_counter()
    print(f"{a.patient} twin: {hu.shape[0]} slices {hu.shape[1]}x{hu.shape[2]} (synthetic)")
    print(f"lungviewer segment_lungs : {t1 - t0:.3f} s")
    print(f"scikit-image per slice   : {t2 - t1:.3f} s")
    print(f"speed-up = {(t2 - t1) / (t1 - t0):.1f}x; masks identical: "
          f"{np.array_equal(ours, ref)} (Dice {dice(ours, ref):.4f})")
    if a.dice:
        db = get_database()
        pids = sorted({s.patient_id for s in db.scans() if db.annotations(s.id)})[:a.dice]
        scores = []
        for pid in pids:
            tw = render_twin(pid)
            d = dice(segment_lungs(tw.hu).mask, tw.lung_mask)
            scores.append(d)
            print(f"  {pid}: {tw.hu.shape[0]} slices, Dice vs true lung mask {d:.4f}")
        print(f"mean Dice over {len(scores)} twins: {np.mean(scores):.4f}")


if __name__ == "__main__":
    main()
