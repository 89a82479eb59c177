"""Series loading: lungviewer's load_series vs SimpleITK's ImageSeriesReader, same files,
same run. Prints both timings (best of N) and the ratio (goal: lungviewer ≤ 1.0×).

    python bench/bench_load.py [--slices 300] [--repeat 3] [--folder DIR]

Without --folder it writes a 300-slice 512×512 CT series (the LIDC twin's pixels of
LIDC-IDRI-0001, repeated along z with new positions) into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_series(folder: Path, n: int) -> None:
    import pydicom
    from lungviewer.synth.twin import render_twin
    from lungviewer.synth.writer import write_dicom

    twin = render_twin("LIDC-IDRI-0001")
    tmp = folder / "_one"
    write_dicom(twin, tmp)
    files = sorted(tmp.glob("*.dcm"))
    series = pydicom.uid.generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(files[k % len(files)])
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                                   -400.0 + 1.25 * k]
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"{(k * 7919) % 100000:05d}.dcm")  # names not in z order
    for p in files:
        p.unlink()
    tmp.rmdir()


def time_best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--folder")
    a = ap.parse_args()
    import SimpleITK as sitk
    from lungviewer.study.dicom_series import load_series

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.folder) if a.folder else Path(tmp)
        if not a.folder:
            make_series(folder, a.slices)

        def lv():
            return load_series(folder).hu

        def itk():
            r = sitk.ImageSeriesReader()
            r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
            return sitk.GetArrayFromImage(r.Execute())

        lv()  # warm the OS file cache for both
        t_lv, a_lv = time_best(lv, a.repeat)
        t_itk, a_itk = time_best(itk, a.repeat)
        same = np.array_equal(a_lv, a_itk)
        print(f"series: {a_lv.shape[0]} slices {a_lv.shape[1]}x{a_lv.shape[2]}, "
              f"{os.cpu_count()} CPU(s); identical HU arrays: {same}")
        print(f"lungviewer load_series : {t_lv:.3f} s (best of {a.repeat})")
        print(f"SimpleITK SeriesReader : {t_itk:.3f} s (best of {a.repeat})")
        print(f"ratio lungviewer / SimpleITK = {t_lv / t_itk:.2f}x")


if __name__ == "__main__":
    main()
