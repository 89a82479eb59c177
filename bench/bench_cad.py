"""CAD speed: box → scores latency (warm) and the whole-study slice scan of the demo twin,
with the shipped weights, on the CPU (or --device cuda). Goals (2 cores): box
≤ 20 ms warm (50 ms at most), 133-slice scan ≤ 3 s.

    python bench/bench_cad.py [--device cpu] [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    from lungviewer.cad.engine import CadEngine
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.study.volume import Volume
    from lungviewer.synth.twin import render_twin

    twin = render_twin("LIDC-IDRI-0001")
    vol = Volume(hu=twin.hu, spacing=twin.spacing, positions=twin.positions, is_synthetic=True)
    t0 = time.perf_counter()
    eng = CadEngine.load(device=a.device)
    t_load = time.perf_counter() - t0
    box = (336, 293, 395, 344)
    eng.score_box(vol, 89, box)  # warm-up
    times = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        eng.score_box(vol, 89, box)
        times.append(time.perf_counter() - t)
    mask = segment_lungs(vol.hu).mask
    t = time.perf_counter()
    scores = eng.scan_slices(vol, mask)
    t_scan = time.perf_counter() - t
    import torch

    print(f"device {eng.device_name}, torch threads {torch.get_num_threads()}; synthetic "
          f"LIDC-IDRI-0001 twin {vol.shape}")
    print(f"engine load (torch import + weights): {t_load:.2f} s")
    print(f"box -> scores, warm: median {1e3 * np.median(times):.1f} ms, "
          f"p90 {1e3 * np.percentile(times, 90):.1f} ms (goals: 20 ms; at most 50 ms)")
    print(f"slice scan, {vol.n_slices} slices: {t_scan:.2f} s (goal 3 s); top 5 slices "
          f"{scores.ranking()[:5].tolist()} (nodule on 86-94)")


if __name__ == "__main__":
    main()
