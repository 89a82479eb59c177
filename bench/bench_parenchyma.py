"""M1 lung segmentation: lungviewer's whole-volume implementation vs a straightforward
per-slice scikit-image implementation of the same steps, on the same volume in one run.

    python bench/bench_parenchyma.py [--patient LIDC-IDRI-0001] [--dice N]

--dice N also reports the Dice of lungviewer's mask against the twin's true lung mask for
the first N LIDC patients with annotations (synthetic images, so synthetic figures).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage
from skimage import measure, morphology


def reference_slice(sl: np.ndarray, fraction: float = 0.25) -> np.ndarray:
    """The method written plainly for one slice, with scikit-image (and scipy's hole
    filling): the same steps and parameters as ``lungviewer.imaging.parenchyma``."""
    # 1. iterative global threshold on the pixels themselves
    t = (float(sl.max()) + float(sl.min())) / 2
    for _ in range(100):
        lo, hi = sl[sl <= t], sl[sl > t]
        if lo.size == 0 or hi.size == 0:
            break
        new = (lo.mean() + hi.mean()) / 2
        moved, t = abs(new - t), new
        if moved < 0.5:
            break
    dark = sl <= t
    # 2. closing with a disk of radius 5 (edge-replicated so the border does not erode)
    closed = morphology.closing(np.pad(dark, 11, mode="edge"), morphology.disk(5))[11:-11, 11:-11]
    # 3. the body: the largest bright component, holes filled, the image edge closed
    #    between the body's first and last contact along it; other bright pieces that touch
    #    the edge and are >= fraction of the largest count as body, but not their own holes
    lab = measure.label(~dark, connectivity=1)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    if sizes.max() == 0:  # no bright pixel: no body
        return np.zeros(sl.shape, dtype=bool)
    largest = lab == np.argmax(sizes)
    touching = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    extra = ((sizes[lab] >= fraction * sizes.max()) & np.isin(lab, touching)
             & (lab > 0) & ~largest)
    body = largest | extra
    framed = np.pad(body, 1)
    for edge, frame in ((body[0], framed[0, 1:-1]), (body[-1], framed[-1, 1:-1]),
                        (body[:, 0], framed[1:-1, 0]), (body[:, -1], framed[1:-1, -1])):
        idx = np.flatnonzero(edge)
        if idx.size:
            frame[idx[0]:idx[-1] + 1] = True
    interior = ndimage.binary_fill_holes(framed)[1:-1, 1:-1]
    interior &= ~(ndimage.binary_fill_holes(extra) & ~extra)
    # 4. components inside the body, at least 1000 px
    return morphology.remove_small_objects(closed & interior, max_size=999, connectivity=1)


def reference(hu: np.ndarray) -> np.ndarray:
    return np.stack([reference_slice(sl) for sl in hu])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patient", default="LIDC-IDRI-0001")
    ap.add_argument("--dice", type=int, default=0)
    a = ap.parse_args()
    from lungviewer.imaging.parenchyma import dice, evaluate_against, segment_lungs
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
    print(f"{a.patient} twin: {hu.shape[0]} slices {hu.shape[1]}x{hu.shape[2]} (synthetic), "
          f"{os.cpu_count()} CPU cores")
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
