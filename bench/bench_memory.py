"""Peak memory of opening a large study: a 600-slice 512×512 uncompressed CT series.

Writes the series into a temporary folder (pydicom, via tests/dicomgen.py), then loads it
with ``load_series`` in a fresh child process and reports the child's peak resident memory
(``ru_maxrss``) over its baseline after the imports, divided by the size of the int16
volume. Goal: ≤ 2.5×.

    python bench/bench_memory.py [--slices 600] [--size 512] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import numpy as np
from lungviewer.study.dicom_series import load_series
import pydicom, concurrent.futures  # everything the load needs is imported before the baseline
def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
base_now = rss_kib()
t0 = time.perf_counter()
vol = load_series(sys.argv[1])
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kib": base_now, "base_peak_kib": base_peak, "peak_kib": peak,
                  "after_kib": rss_kib(), "seconds": dt, "shape": list(vol.hu.shape),
                  "dtype": str(vol.hu.dtype), "nbytes": int(vol.hu.nbytes),
                  "checksum": int(vol.hu[::50, ::64, ::64].astype(np.int64).sum())}))
"""


def write_series(folder: Path, n: int, size: int) -> float:
    sys.path.insert(0, str(ROOT / "tests"))
    from dicomgen import write_ct_series

    t0 = time.perf_counter()
    write_ct_series(folder, n_slices=n, rows=size, cols=size, spacing=(0.625, 0.7, 0.7))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--keep", type=Path, help="write the series here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lv-bench-mem-") as tmp:
        folder = args.keep or Path(tmp) / "series"
        if not (folder.is_dir() and len(list(folder.iterdir())) == args.slices):
            w = write_series(folder, args.slices, args.size)
            print(f"wrote {args.slices} slices {args.size}×{args.size} in {w:.1f} s to {folder}")
        out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], check=True,
                             capture_output=True, text=True, cwd=ROOT)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    vol_mib = r["nbytes"] / 2**20
    base = max(r["base_kib"], r["base_peak_kib"])  # the baseline peak (imports) already reached
    over_mib = (r["peak_kib"] - base) / 1024
    print(f"volume {tuple(r['shape'])} {r['dtype']}: {vol_mib:.0f} MiB; loaded in {r['seconds']:.1f} s")
    print(f"child RSS: baseline {base / 1024:.0f} MiB, peak {r['peak_kib'] / 1024:.0f} MiB, "
          f"after load {r['after_kib'] / 1024:.0f} MiB")
    print(f"peak over baseline {over_mib:.0f} MiB = {over_mib / vol_mib:.2f} × the int16 volume "
          f"(goal ≤ 2.5×)")


if __name__ == "__main__":
    main()
