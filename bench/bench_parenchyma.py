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
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lung_reference import reference  # noqa: E402

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
