"""CAD findings speed: the whole-study findings as the viewer makes them (3-D candidates,
networks, calibration, one finding per lesion sized by its segmentation, malignancy of the
shown ones: ``session.study_findings``) beside the 2-D slice scan (``CadEngine.scan_slices``), same run, same lung mask,
printing the ratio. Goal: ≤ 5 s for a 133-slice study on 2 CPU cores.

The study is the real development scan ../shared/data/real/LIDC-IDRI-0006 when present (133
slices), else the synthetic LIDC-IDRI-0001 twin.

    python bench/bench_findings.py [--device cpu] [--threads 2] [--repeat 3] [--study DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "LIDC-IDRI-0006"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--study", default=None, help="a DICOM folder (default: the real dev scan)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from lungviewer.cad.engine import CadEngine
    from lungviewer.imaging.blobs import find_blobs
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.session import study_findings
    from lungviewer.study.dicom_series import load_series

    folder = Path(a.study) if a.study else REAL
    if folder.is_dir():
        vol, what = load_series(folder), f"{folder.name} (real CT)" if not a.study else str(folder)
    else:
        from lungviewer.study.volume import Volume
        from lungviewer.synth.twin import render_twin

        twin = render_twin("LIDC-IDRI-0001")
        vol = Volume(hu=twin.hu, spacing=twin.spacing, positions=twin.positions,
                     is_synthetic=True)
        what = "synthetic LIDC-IDRI-0001 twin"
    eng = CadEngine.load(device=a.device)
    mask = segment_lungs(vol.hu).mask
    study_findings(eng, vol, mask)  # warm-up
    t_find, t_blobs, t_scan, c_find, c_scan = [], [], [], [], []
    for _ in range(a.repeat):
        t = time.perf_counter()
        blobs = find_blobs(vol.hu, mask, vol.spacing)
        t_blobs.append(time.perf_counter() - t)
        t, c = time.perf_counter(), time.process_time()
        found = study_findings(eng, vol, mask)
        t_find.append(time.perf_counter() - t)
        c_find.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        eng.scan_slices(vol, mask)
        t_scan.append(time.perf_counter() - t)
        c_scan.append(time.process_time() - c)
    f, s, b = float(np.median(t_find)), float(np.median(t_scan)), float(np.median(t_blobs))
    cf, cs = float(np.median(c_find)), float(np.median(c_scan))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {eng.device_name}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {load:.1f}; {what} {vol.shape}")
    print(f"findings (3-D candidates, networks, sizing by segmentation): median {f:.2f} s wall, "
          f"{cf:.2f} s CPU of {a.repeat} (goal 5 s wall on 2 cores); of which candidates "
          f"{b:.2f} s ({len(blobs)} blobs); {len(found)} findings, "
          f"{sum(x.sized for x in found)} sized")
    print(f"2-D slice scan (CadEngine.scan_slices): median {s:.2f} s wall, {cs:.2f} s CPU")
    print(f"ratio findings / 2-D scan: {f / s:.2f} wall, {cf / cs:.2f} CPU")


if __name__ == "__main__":
    main()
