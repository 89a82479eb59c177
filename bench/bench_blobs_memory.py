"""Peak memory and time of the CAD findings' candidate step (``find_blobs``, as the findings
call it) and of the whole findings step (``session.study_findings``), each in a fresh child
process, against the pre-block ``find_blobs`` kept verbatim in tests/blobs_reference.py.

Data:
* REAL: the development scan ../shared/data/real/LIDC-IDRI-0006 (133 slices) when present;
* SYNTHETIC: ``tests/batchgen.chest_volume`` of ``--slices`` × ``--size``² at 2.5 × 3.2 ×
  3.2 mm (issue 27's 600-slice memory case; the lung mask from ``segment_lungs``).

The parent writes HU and lung mask as .npy; each child loads them, takes its RSS peak
(``VmHWM``, reset through /proc/self/clear_refs) from its RSS as the baseline, runs the step once and reports (peak − baseline) / the int16
volume's size, the wall time, and in a second child the ``tracemalloc`` peak (numpy reports
its buffers to tracemalloc). The candidates of both implementations are compared.

    python bench/bench_blobs_memory.py [--data real,synthetic] [--slices 600] [--size 256]
                                       [--impl new,reference] [--step blobs|findings]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real" / "LIDC-IDRI-0006"

CHILD = r"""
import json, sys, time, tracemalloc
sys.path.insert(0, sys.argv[5])
import numpy as np
from lungviewer.cad.findings import MIN_LUNG_SHELL
impl, step, folder, trace = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if impl == "reference":
    import blobs_reference as mod
    import lungviewer.imaging.blobs as real_mod
    real_mod.find_blobs = mod.find_blobs  # the whole findings step on the old candidates
    import lungviewer.cad.findings as fmod
    fmod.find_blobs = mod.find_blobs
else:
    import lungviewer.imaging.blobs as mod
hu = np.load(folder + "/hu.npy")
mask = np.load(folder + "/mask.npy")
spacing = tuple(json.load(open(folder + "/meta.json"))["spacing"])
if step == "findings":
    import torch
    torch.set_num_threads(1)
    from lungviewer.cad.engine import CadEngine
    from lungviewer.session import study_findings
    from lungviewer.study.volume import Volume
    eng = CadEngine.load(device="cpu")
    pos = np.zeros((len(hu), 3)); pos[:, 2] = np.arange(len(hu)) * spacing[0]
    vol = Volume(hu=hu, spacing=spacing, positions=pos, is_synthetic=True)
    run = lambda: study_findings(eng, vol, mask)
else:
    run = lambda: mod.find_blobs(hu, mask, spacing, min_lung_shell=MIN_LUNG_SHELL)
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
base = status("VmRSS")
if trace:
    tracemalloc.start()
t = time.perf_counter()
out = run()
dt = time.perf_counter() - t
tm = tracemalloc.get_traced_memory()[1] if trace else 0
peak = status("VmHWM")
res = {"seconds": dt, "rss_over_kib": peak - base, "base_kib": base, "trace_peak": tm,
       "nbytes": int(hu.nbytes), "shape": list(hu.shape)}
if step == "blobs" and not trace:
    np.savez(folder + f"/out_{impl}.npz", centre=out.centre, diameter_mm=out.diameter_mm,
             response=out.response, dot=out.dot, dot_li=out.dot_li, line_li=out.line_li,
             hu=out.hu, eig=out.eig, lung_shell=out.lung_shell)
    res["n"] = len(out)
print(json.dumps(res))
"""


def _prepare(kind: str, folder: Path, slices: int, size: int) -> str:
    from lungviewer.imaging.parenchyma import segment_lungs

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "real":
        from lungviewer.study.dicom_series import load_series

        vol = load_series(REAL)
        hu, spacing, what = vol.hu, vol.spacing, f"REAL {REAL.name}"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from batchgen import chest_volume

        hu, spacing = chest_volume(slices, size, seed=7), (2.5, 3.2, 3.2)
        what = f"SYNTHETIC chest_volume({slices}, {size}, seed=7)"
    mask = segment_lungs(hu, spacing=tuple(spacing)).mask
    np.save(folder / "hu.npy", np.ascontiguousarray(hu))
    np.save(folder / "mask.npy", np.ascontiguousarray(mask))
    (folder / "meta.json").write_text(json.dumps({"spacing": [float(s) for s in spacing]}))
    return f"{what} {tuple(hu.shape)} spacing {tuple(round(float(s), 3) for s in spacing)}"


def _child(impl: str, step: str, folder: Path, trace: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, impl, step, str(folder),
                          "1" if trace else "0", str(ROOT / "tests")],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="real,synthetic")
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--impl", default="new,reference")
    ap.add_argument("--step", default="blobs", choices=("blobs", "findings"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lv-bench-blobs-") as tmp:
        for kind in a.data.split(","):
            if kind == "real" and not REAL.is_dir():
                print(f"REAL: {REAL} is absent, skipped")
                continue
            folder = Path(tmp) / kind
            what = _prepare(kind, folder, a.slices, a.size)
            print(what)
            for impl in a.impl.split(","):
                r = _child(impl, a.step, folder, trace=False)
                t = _child(impl, a.step, folder, trace=True)
                mib = r["nbytes"] / 2**20
                print(f"  {a.step} {impl:9s}: {r['seconds']:.2f} s wall; peak RSS +"
                      f"{r['rss_over_kib'] / 1024:.0f} MiB = {r['rss_over_kib'] / 1024 / mib:.2f}× "
                      f"the int16 volume ({mib:.0f} MiB); tracemalloc peak "
                      f"{t['trace_peak'] / 2**20:.0f} MiB = {t['trace_peak'] / 2**20 / mib:.2f}×"
                      + (f"; {r['n']} candidates" if "n" in r else ""))
            impls = a.impl.split(",")
            if a.step == "blobs" and len(impls) == 2:
                o = [np.load(folder / f"out_{i}.npz") for i in impls]
                same = all(np.array_equal(o[0][k], o[1][k]) for k in o[0].files)
                print(f"  candidates of {impls[0]} and {impls[1]} bit-identical: {same}")


if __name__ == "__main__":
    main()
