"""Batch CAD on Dask: throughput of 1 vs 2 workers, per-series time against ``analyze`` and
memory per worker (issue 27's targets).

* scaling: the same archive of ``--series`` SYNTHETIC chest series (tests/batchgen.py) run
  into a fresh database by a LocalCluster of 1, then 2 worker processes (one torch thread
  each); throughput = series / compute time (first task submitted .. last result written;
  the cluster's start-up is printed apart). Target: 2 workers ≥ 1.7× on 2 free cores.
* overhead: the batch's per-series time (the task on a warm worker, CAD models already
  loaded) against ``lungviewer analyze``'s (``commands.analyze.analyze`` in this process,
  its model loading measured apart and taken off) on the same series. Target ≤ 1.15×.
* memory: peak RSS per worker; with ``--big N`` also one N-slice series (``--big-size``
  pixels square) on a fresh worker: (peak RSS − RSS before the task) / its int16 size.
  Target < 2.5× for 600 slices.

    python bench/bench_batch.py [--series 20] [--slices 14] [--size 96] [--big 600]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _run(root: Path, db: Path, workers: int, timeout: float = 1800):
    from lungviewer.batch.runner import run_batch

    return run_batch(root, db, workers=workers, timeout=timeout)


def main() -> None:
    import logging

    for name in ("distributed", "dask"):  # Dask's INFO lines and its shutdown chatter
        logging.getLogger(name).setLevel(logging.CRITICAL)
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--slices", type=int, default=14)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--analyze", type=int, default=5, help="series timed with analyze")
    ap.add_argument("--big", type=int, default=0, help="slices of the memory series (0: none)")
    ap.add_argument("--big-size", type=int, default=256)
    a = ap.parse_args()
    from batchgen import write_chest

    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    root = tmp / "archive"
    for i in range(a.series):
        write_chest(root / f"B{i:03d}" / "ct", n=a.slices, size=a.size, seed=100 + i,
                    patient_id=f"BENCH-{i:04d}")
    print(f"{a.series} SYNTHETIC series of {a.slices} × {a.size} × {a.size} under {root}")

    res = {}
    for w in (1, 2):
        s = _run(root, tmp / f"w{w}.sqlite", w)
        assert s.done == a.series, s.as_dict()
        res[w] = s
        warm = [p["seconds"] for p in s.per_series if p["engine_s"] < 0.01]
        print(f"{w} worker(s): cluster start {s.cluster_s:.1f} s, compute {s.compute_s:.1f} s "
              f"→ {a.series / s.compute_s:.2f} series/s; per series on a warm worker "
              f"{statistics.median(warm):.2f} s (median); peak RSS per worker "
              + ", ".join(f"{v:.0f} MiB" for v in s.workers.values()))
    ratio = res[1].compute_s / res[2].compute_s
    print(f"scaling: 2 workers = {ratio:.2f}× the throughput of 1 (target ≥ 1.7)")

    from lungviewer.batch.units import discover
    from lungviewer.cad.engine import CadEngine
    from lungviewer.commands.analyze import analyze

    from lungviewer.cad.device import limit_threads

    limit_threads(1)  # as on a batch worker: the comparison is of the pipeline, not of threads
    units = sorted((u for u in discover(root) if u.kind == "series"), key=lambda u: u.folder)
    analyze(units[0].folder, device="cpu")  # imports and first-call costs, not timed
    loads = []
    for _ in range(2):
        t, c = time.perf_counter(), time.process_time()
        CadEngine.load(device="cpu")
        loads.append((time.perf_counter() - t, time.process_time() - c))
    load_s, load_cpu = min(loads)
    by_label = {p["label"]: p for p in res[1].per_series}
    pairs, cpu_pairs = [], []
    for u in units[: a.analyze]:
        c = time.process_time()
        out = analyze(u.folder, device="cpu")
        an_cpu = time.process_time() - c - load_cpu
        an = out["total_seconds"] - load_s
        p = by_label[u.label]
        if p["engine_s"] > 0.01:  # the worker's first series loaded the models: not comparable
            continue
        pairs.append((p["seconds"], an, p["seconds"] - p["lung_rads_s"]))
        cpu_pairs.append((p["cpu_s"], an_cpu, p["cpu_s"] - p["lung_rads_cpu_s"]))
    b = statistics.median(x[0] for x in pairs)
    an = statistics.median(x[1] for x in pairs)
    b_like = statistics.median(x[2] for x in pairs)
    bc = statistics.median(x[0] for x in cpu_pairs)
    ac = statistics.median(x[1] for x in cpu_pairs)
    bc_like = statistics.median(x[2] for x in cpu_pairs)
    print(f"overhead: batch per series {b:.2f} s wall / {bc:.2f} s CPU vs analyze {an:.2f} s "
          f"wall / {ac:.2f} s CPU (its model load, {load_s:.2f} s wall / {load_cpu:.2f} s CPU, "
          f"taken off) → {b / an:.2f}× wall, {bc / ac:.2f}× CPU (target ≤ 1.15; the same "
          f"{len(pairs)} series on a warm worker, 1 worker; analyze with 1 torch thread)")
    print(f"  like for like (the batch's Lung-RADS step, which analyze does not run, taken "
          f"off): {b_like:.2f} s wall / {bc_like:.2f} s CPU → {b_like / an:.2f}× wall, "
          f"{bc_like / ac:.2f}× CPU")

    if a.big:
        big = tmp / "big"
        write_chest(big / "ct", n=a.big, size=a.big_size, seed=7, patient_id="BENCH-BIG")
        s = _run(big, tmp / "big.sqlite", 1)
        p = s.per_series[0]
        size_mb = a.big * a.big_size * a.big_size * 2 / 2**20
        grow = p["peak_rss_mb"] - p["rss_start_mb"]
        print(f"memory: {a.big} × {a.big_size}² series ({size_mb:.0f} MiB int16) {p['status']} in "
              f"{p['seconds']:.1f} s; worker RSS {p['rss_start_mb']:.0f} → peak "
              f"{p['peak_rss_mb']:.0f} MiB: +{grow:.0f} MiB = {grow / size_mb:.2f}× its int16 "
              "size (target < 2.5)")


if __name__ == "__main__":
    main()
