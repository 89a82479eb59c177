"""Multi-planar reading speed: a slice change with every overlay in the 2×2 layout, and thick
slabs, against today's single axial view in the same run.

    QT_QPA_PLATFORM=offscreen python bench/bench_views.py [--real PATH] [--frames 60]

The study is the demo twin (LIDC-IDRI-0001, generated into the cache the first time) or,
with ``--real``, a DICOM folder with its LIDC XML (e.g. ../shared/data/real/LIDC-IDRI-0006).
A frame is: change the image, then let Qt process its events, which paints the views that
changed (as it does on screen; offscreen rendering into the backing store).
Targets: ≤ 16 ms per frame in 2×2 with all overlays; a 10 mm MIP slab at 512² ≤ 30 ms or
cached so that scrolling back over it stays under a frame.

The review steps (issue 24) run in the whole main window (2×2, every overlay, 20 CAD
findings in the reading): N (next finding: its images, panned as needed), Y (accept: the
reading saved), X (reject), Ctrl+Z (undo). Each step is the key's action and the events it
queues (the session's ``reading`` event, the list and the views redrawn); the longest step
is the longest the GUI thread was held by one key. ``--review-only`` runs just these;
``BENCH_PROFILE=1`` prints where their time goes (cProfile).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


class Timing(list):
    """Wall-clock ms per frame, with ``cpu``: this process's CPU ms per frame (what other
    processes on a shared machine do not add)."""

    def __init__(self, wall: list[float], cpu: list[float]) -> None:
        super().__init__(wall)
        self.cpu = cpu


def _frames(widget, step, n: int) -> Timing:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    out, cpu = [], []
    for i in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        step(i)
        app.processEvents()  # Qt paints the views that changed (as on screen)
        out.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return Timing(out, cpu)


def _fmt(name: str, ms: Timing, anchor: Timing | None = None) -> str:
    med = statistics.median(ms)
    p95 = float(np.percentile(ms, 95))
    # min and CPU time: the cost without other processes taking the CPU (shared machines
    # are noisy)
    cpu = statistics.median(ms.cpu)
    ratio = ""
    if anchor is not None:
        ratio = (f"  ×{med / statistics.median(anchor):.2f} wall, "
                 f"×{cpu / statistics.median(anchor.cpu):.2f} cpu vs single axial view")
    return (f"{name:<58} median {med:6.2f}  p95 {p95:6.2f}  min {min(ms):6.2f}  "
            f"cpu {cpu:6.2f} ms{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", help="DICOM folder (with its LIDC XML) instead of the demo twin")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--review-only", action="store_true",
                    help="only the review steps (N / Y / X / undo) in the main window")
    args = ap.parse_args()

    from PySide6.QtWidgets import QApplication

    from lungviewer.imaging import planes
    from lungviewer.imaging.parenchyma import segment_lungs
    from lungviewer.reading.measurements import Measurement
    from lungviewer.study.nodules import load_study_annotations
    from lungviewer.ui.annotations_panel import overlay_items
    from lungviewer.ui.mpr import MprWidget
    from lungviewer.ui.slice_view import SliceView

    app = QApplication.instance() or QApplication([])
    if args.real:
        from lungviewer.study.dicom_series import load_series

        folder = args.real
        vol = load_series(folder)
    else:
        from lungviewer.synth.demo import load_demo

        vol, folder = load_demo()
    print(f"study: {vol.shape} voxels, spacing {tuple(round(s, 3) for s in vol.spacing)} mm")
    mask = segment_lungs(vol.hu).mask
    ann = load_study_annotations(vol, folder)
    polys, marks = overlay_items(ann)
    nod = ann.nodules[0] if ann.nodules else None
    zc, yc, xc = ((int(np.rint(v)) for v in nod.centre) if nod is not None
                  else (vol.n_slices // 2, vol.shape[1] // 2, vol.shape[2] // 2))
    findings = [(zc, yc, xc, 12.0, "proposed"), (zc + 10, yc - 60, xc + 40, 6.0, "accepted")]
    n = args.frames
    if args.review_only:
        review(app, vol, folder, mask, ann, n)
        return
    k0 = max(zc - n // 2, 0)
    ks = [min(k0 + i, vol.n_slices - 1) for i in range(n)]

    # -- anchor: today's single axial view with the mask and the readers' outlines --------
    single = SliceView()
    single.resize(900, 900)
    single.show()
    single.set_volume(vol)
    single.set_mask(mask)
    single.set_polygons(polys, marks)
    app.processEvents()
    _frames(single, lambda i: single.set_slice(ks[i]), 5)  # warm-up
    base = _frames(single, lambda i: single.set_slice(ks[i]), n)
    anchor = base
    print(_fmt("single axial view, mask + outlines (anchor)", base))
    single.close()

    # -- 2×2 with all overlays ----------------------------------------------------------------
    w = MprWidget()
    w.resize(1400, 1000)
    w.show()
    w.set_layout("2x2", remember=False)
    w.set_volume(vol)
    w.set_mask(mask)
    w.set_polygons(polys, marks)
    w.set_marks(findings)
    w.set_point(zc, yc, xc)
    panel = w.measure_panel
    panel.set_measurements([
        Measurement("ruler", "axial", k, [(yc - 10.0, xc - 10.0), (yc + 10.0, xc + 10.0)])
        for k in ks] + [
        Measurement("ellipse", "axial", k, [(yc - 8.0, xc - 8.0), (yc + 8.0, xc + 8.0)])
        for k in ks] + [
        Measurement("ruler", "coronal", yc, [(zc - 5.0, xc - 20.0), (zc + 5.0, xc + 20.0)])])
    app.processEvents()
    # the overview slab view is part of the 2×2 layout (its slab is always on)
    _frames(w, lambda i: w.axial.set_slice(ks[i]), 5)
    w.slab_cache.clear()
    cold = _frames(w, lambda i: w.axial.set_slice(ks[i]), n)
    warm = _frames(w, lambda i: w.axial.set_slice(ks[i]), n)
    print(_fmt("2×2, all overlays, axial scroll (overview slab uncached)", cold, anchor))
    print(_fmt("2×2, all overlays, axial scroll (overview slab cached)", warm, anchor))
    w.set_slab("mip", 10.0)
    w.slab_cache.clear()
    cold = _frames(w, lambda i: w.axial.set_slice(ks[i]), n)
    warm = _frames(w, lambda i: w.axial.set_slice(ks[i]), n)
    print(_fmt("2×2, all overlays, 10 mm MIP in every view (uncached)", cold, anchor))
    print(_fmt("2×2, all overlays, 10 mm MIP in every view (cached)", warm, anchor))
    ys = [min(max(yc - n // 2, 0) + i, vol.shape[1] - 1) for i in range(n)]
    cor = _frames(w, lambda i: w.coronal.set_slice(ys[i]), n)
    print(_fmt("2×2, all overlays, 10 mm MIP, coronal scroll", cor, anchor))
    w.set_slab(None)
    cor = _frames(w, lambda i: w.coronal.set_slice(ys[i]), n)
    print(_fmt("2×2, all overlays, coronal scroll (outlines cut)", cor, anchor))
    clicks = _frames(w, lambda i: w.set_point(ks[i], ys[i], xc), n)
    print(_fmt("2×2, all overlays, crosshair click (every view moves)", clicks, anchor))
    w.close()

    # -- the slab projection alone --------------------------------------------------------------
    for plane, idx in (("axial", zc), ("coronal", yc), ("sagittal", xc)):
        for mode in planes.SLAB_MODES:
            ms, cpu = [], []
            for i in range(15):
                t0, c0 = time.perf_counter(), time.process_time()
                planes.slab_image(vol.hu, plane, idx + i % 3, 10.0, mode, vol.spacing)
                ms.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
            img = planes.plane_image(vol.hu, plane, idx)
            print(_fmt(f"10 mm {mode} slab, {plane} {img.shape[0]}×{img.shape[1]}",
                       Timing(ms, cpu)))
    review(app, vol, folder, mask, ann, n)


def review(app, vol, folder, mask, ann, n: int) -> None:
    """The review keys in the main window (see the module docstring)."""
    import tempfile

    from lungviewer.reading.model import CadMark
    from lungviewer.ui.main_window import MainWindow

    home = tempfile.mkdtemp(prefix="bench-review-")  # no user settings or readings touched
    for key in ("CONFIG", "DATA", "CACHE"):
        os.environ.setdefault(f"LUNGVIEWER_{key}_DIR", os.path.join(home, key.lower()))
    win = MainWindow()
    win.quiet_errors = True
    win.resize(1600, 1000)
    win.show()
    win.mpr.set_layout("2x2", remember=False)
    t_wait = time.perf_counter()  # the warm-up and the CAD models load first, as in use
    while (win._warm_up.running or win.cad.loading) and time.perf_counter() - t_wait < 120:
        app.processEvents()
        time.sleep(0.02)
    win.session.set_volume(vol, folder)
    app.processEvents()
    win.session.mask = mask
    win.session.emit("mask", mask)
    win.session.emit("annotations", ann)
    rng = np.random.default_rng(0)
    nz, ny, nx = vol.shape
    marks = [CadMark("", int(rng.integers(5, nz - 5)), float(rng.integers(120, ny - 120)),
                     float(rng.integers(120, nx - 120)), float(rng.uniform(4, 20)),
                     float(0.99 - 0.01 * i)) for i in range(20)]
    win.session.reading.set_cad_marks(marks)
    win.session.save_reading()
    for _ in range(5):
        app.processEvents()
    ctl = win.reading_ctl
    ctl.panel.marks.setCurrentRow(0)
    app.processEvents()
    steps = {"N (next finding)": ctl.act_next.trigger,
             "Y (accept, stays)": ctl.act_accept.trigger,
             "X (reject, stays)": ctl.act_reject.trigger,
             "Ctrl+Z (undo the verdict)": win.history.undo}
    times = {name: ([], []) for name in steps}
    prof = None
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    for _ in range(n):
        for name, act in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            act()
            app.processEvents()  # the queued reading event, the list, the views
            times[name][0].append((time.perf_counter() - t0) * 1000)
            times[name][1].append((time.process_time() - c0) * 1000)
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    worst = 0.0
    for name, (wall, cpu) in times.items():
        print(_fmt(f"review in the main window, 2×2: {name}", Timing(wall, cpu))
              + f"  max {max(wall):6.2f} ms")
        worst = max(worst, max(wall))
    print(f"review: longest step (the longest event the GUI thread ran) {worst:.1f} ms "
          f"over {n} rounds of N / Y / X / undo; one frame at 60 Hz is 16.7 ms")
    win.close()


if __name__ == "__main__":
    main()
