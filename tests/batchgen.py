"""A tiny archive for batch tests: small synthetic chest series (a body, two lungs, a few
nodules; SYNTHETIC, written with tests/dicomgen.py) and the bad ones a real archive holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from dicomgen import make_ct_slice, write_scout


def chest_volume(n: int = 14, size: int = 96, seed: int = 0, nodules: int = 2,
                 noise: float = 15.0) -> np.ndarray:
    """HU (n, size, size): soft tissue body, two lungs at -850 HU with noise, ``nodules``
    solid spheres of 5-9 px radius."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:n, 0:size, 0:size].astype(np.float32)
    c = size / 2
    hu = np.full((n, size, size), -1000, np.float32)
    body = ((y - c) / (0.42 * size)) ** 2 + ((x - c) / (0.47 * size)) ** 2 <= 1
    hu[body] = 40
    for sx in (-1, 1):
        lung = ((y - c) / (0.3 * size)) ** 2 + ((x - c - sx * 0.22 * size) / (0.16 * size)) ** 2 <= 1
        hu[lung] = -850
    for _ in range(nodules):
        r = rng.uniform(2.5, 4.0)
        cz = rng.uniform(n * 0.35, n * 0.65)
        cy = c + rng.uniform(-0.15, 0.15) * size
        cx = c + rng.choice([-1, 1]) * 0.22 * size
        hu[((z - cz) * 2.5) ** 2 + ((y - cy) * 1.0) ** 2 + ((x - cx) * 1.0) ** 2 <= (r * 2.0) ** 2] = 30
    hu += rng.normal(0, noise, hu.shape)
    return np.clip(hu, -1024, 3000).astype(np.int16)


def write_chest(folder: Path, n: int = 14, size: int = 96, seed: int = 0, modality: str = "CT",
                patient_id: str = "BATCH-0001", study_date: str = "20260101",
                series_uid: str | None = None, study_uid: str | None = None) -> Path:
    """One series of :func:`chest_volume` in ``folder`` (spacing 2.5 × 3.2 × 3.2 mm)."""
    folder.mkdir(parents=True, exist_ok=True)
    hu = chest_volume(n, size, seed)
    series, study = series_uid or generate_uid(), study_uid or generate_uid()
    for k in range(n):
        ds = make_ct_slice(k=k, z=-100.0 + 2.5 * k, rows=size, cols=size,
                           spacing_yx=(3.2, 3.2), thickness=2.5, series_uid=series,
                           study_uid=study, instance_number=k + 1, hu=hu[k],
                           patient_id=patient_id, patient_name="BATCH^TEST",
                           description="SYNTHETIC batch test")
        ds.Modality = modality
        ds.StudyDate = study_date
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
    return folder


def write_archive(root: Path, good: int = 3, bad: bool = True) -> dict[str, str]:
    """``good`` synthetic chest series and (``bad``) a corrupt one, an MR one, a one-slice
    one and an empty folder, under ``root/<patient>/<series>``. Returns folder name ->
    expected status."""
    expect = {}
    for i in range(good):
        write_chest(root / f"P{i:02d}" / "ct", seed=i, patient_id=f"BATCH-{i:04d}",
                    study_date=f"2026010{1 + i % 9}")
        expect[f"P{i:02d}/ct"] = "done"
    if bad:
        corrupt = root / "PX" / "corrupt"
        corrupt.mkdir(parents=True)
        for k in range(3):
            (corrupt / f"IM{k}.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 200)
        expect["PX/corrupt"] = "failed"
        write_chest(root / "PX" / "mr", n=12, size=32, seed=9, modality="MR",
                    patient_id="BATCH-MR")
        expect["PX/mr"] = "failed"
        write_chest(root / "PX" / "one", n=1, size=96, seed=8, patient_id="BATCH-ONE")
        expect["PX/one"] = "failed"
        (root / "PX" / "empty").mkdir(parents=True)
        expect["PX/empty"] = "failed"
        (root / "P00" / "scout").mkdir(parents=True)
        write_scout(root / "P00" / "scout")
        expect["P00/scout"] = "skipped"
    return expect
