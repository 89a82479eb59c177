"""Reading tools' speed: nodule segmentation from a box (target ≤ 0.5 s) and measurements,
against an anchor measured in the same run (the lung mask of one axial slice, threshold
method — work the single axial view already does).

    python bench/bench_reading.py [--repeat 3] [--no-real]

Boxes: the twins' nodules of a few training patients (rendered region by region) and the
real development scan's outlined nodules (../shared/data/real/LIDC-IDRI-0006, with the
whole scan's lung mask), each box the readers' outline bounding box padded by 2 pixels.
Times are the best of ``--repeat`` runs per box; the machine's core count is printed (the
target is for 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import volumetry_dice as vd

from lungviewer.imaging.parenchyma import segment_slice
from lungviewer.reading.measurements import (
    Measurement,
    bidirectional_from_mask,
    measure,
)
from lungviewer.reading.volumetry import segment_nodule

TARGET_S = 0.5
TWINS = ("LIDC-IDRI-0003", "LIDC-IDRI-0016", "LIDC-IDRI-0019")


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-real", action="store_true")
    args = p.parse_args(argv)
    print(f"{os.cpu_count()} CPU cores visible")

    cases = list(vd.twin_cases(TWINS, False))
    if not args.no_real and vd.REAL.is_dir():
        cases += list(vd.real_cases(vd.REAL, True))
    # anchor: one 512×512 axial slice's lung mask, threshold method
    sl = cases[-1][1][cases[-1][3][0]] if cases[-1][1].shape[1] == 512 else None
    if sl is None:
        from lungviewer.synth.twin import build_model, find_scan, render_slices

        sl = render_slices(build_model(find_scan(TWINS[0])), [60])[0][0]
    anchor = best_of(lambda: segment_slice(sl), args.repeat)
    print(f"anchor: lung mask of one 512×512 axial slice {anchor * 1000:.1f} ms")

    times = []
    for label, hu, sp, box, lung, *_rest in cases:
        t = best_of(lambda: segment_nodule(hu, sp, box, lung), args.repeat)  # noqa: B023
        seg = segment_nodule(hu, sp, box, lung)
        times.append(t)
        print(f"  {label:40s} box {box[3] - box[1]:3d}×{box[4] - box[2]:3d} px  "
              f"{seg.mean_diameter_mm:5.1f} mm {seg.type:12s} {t * 1000:6.1f} ms  "
              f"({t / TARGET_S:.2f} × target, {t / anchor:.1f} × anchor)")
    med, worst = statistics.median(times), max(times)
    print(f"segmentation from a box: median {med * 1000:.0f} ms, worst {worst * 1000:.0f} ms "
          f"over {len(times)} boxes; target {TARGET_S * 1000:.0f} ms: "
          f"{'met' if worst <= TARGET_S else 'NOT met'} (worst {worst / TARGET_S:.2f} × target, "
          f"{worst / anchor:.1f} × anchor)")

    vol = np.random.default_rng(0).integers(-1000, 400, (60, 512, 512)).astype(np.int16)
    spacing = (1.25, 0.7, 0.7)
    for kind, pts in (("ellipse", [(100, 100), (300, 340)]), ("rectangle", [(100, 100),
                                                                            (300, 340)]),
                      ("ruler", [(10, 10), (400, 300)])):
        for plane in ("axial", "coronal"):
            m = Measurement(kind, plane, 30, pts if plane == "axial" else
                            [(5, p[1]) for p in pts[:1]] + [(55, pts[1][1])])
            t = best_of(lambda: measure(m, vol, spacing), args.repeat)  # noqa: B023
            print(f"measure {kind:9s} {plane:8s} {t * 1000:6.2f} ms "
                  f"({t / anchor:.2f} × anchor)")
    yy, xx = np.mgrid[:128, :128]
    blob = (yy - 64) ** 2 / 40 ** 2 + (xx - 60) ** 2 / 25 ** 2 <= 1
    t = best_of(lambda: bidirectional_from_mask(blob, (0.7, 0.7)), args.repeat)
    print(f"long/short axis of an 80×50 px mask {t * 1000:.2f} ms ({t / anchor:.2f} × anchor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
