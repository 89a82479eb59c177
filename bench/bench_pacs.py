"""PACS retrieve speed: lungviewer's C-GET (pynetdicom, into the study cache) against dcmtk's
``getscu`` in the same run, from a loopback Orthanc holding the synthetic twin of
LIDC-IDRI-0001 (133 slices, 512 x 512). Prints the best of N for each (interleaved) and the
ratio (target: lungviewer within 1.5x of getscu); ``--move`` adds C-MOVE against
``movescu``. dcmtk is timed with ``TCP_NODELAY=1`` (its fastest: with Nagle's algorithm on,
as installed, each instance waits for a delayed ACK) and as installed.

    python bench/bench_pacs.py [--repeat 5] [--move] [--shots DIR]

``--shots DIR`` also sends a reading (SR + SEG of a small phantom, as the viewer exports
them) to the Orthanc, saves its REST listing ``/studies/{id}/series`` as
``DIR/orthanc_sent_reading_series.json`` and an offscreen grab of the Query/Retrieve dialog
(search and series of the twin study) as ``DIR/pacs_dialog.png``, then retrieves the study
from the dialog and prints the longest stall of the GUI thread meanwhile.

Needs the Debian packages orthanc, orthanc-dicomweb and dcmtk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

ME = "LVBENCH"


def _twin(folder: Path) -> list[Path]:
    from lungviewer.synth.twin import render_twin
    from lungviewer.synth.writer import write_dicom

    write_dicom(render_twin("LIDC-IDRI-0001"), folder)
    return sorted(folder.glob("*.dcm"))


def _best(fns, repeat: int) -> list[float]:
    """Best time of each function over ``repeat`` rounds, the functions interleaved in each
    round (a busy machine slows both alike)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main() -> int:
    import orthanc_server as osv
    import pydicom

    from lungviewer import pacs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--move", action="store_true", help="also C-MOVE against movescu")
    ap.add_argument("--shots", type=Path, help="folder for the dialog grab and REST listing")
    args = ap.parse_args()
    why = osv.missing()
    if why or not shutil.which("getscu"):
        print(f"bench_pacs: {why or 'dcmtk getscu is missing (Debian package dcmtk)'}")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_pacs_"))
    os.environ.setdefault("LUNGVIEWER_CONFIG_DIR", str(tmp / "config"))
    os.environ.setdefault("LUNGVIEWER_CACHE_DIR", str(tmp / "cache"))
    scp_port = osv.free_port()
    o = osv.start(tmp / "orthanc", {"bench": (ME, scp_port)})
    try:
        files = _twin(tmp / "twin")
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        mb = sum(f.stat().st_size for f in files) / 1e6
        o.upload(files)
        print(f"Orthanc {o.dicom_port}: {len(files)} instances, {mb:.0f} MB "
              "(SYNTHETIC twin of LIDC-IDRI-0001)")
        node = pacs.Node("orthanc", host="127.0.0.1", port=o.dicom_port, aet="ORTHANC",
                         calling_aet=ME, local_port=scp_port, timeout=30)
        n = {"i": 0}

        def ours(method: str):
            def run():
                n["i"] += 1
                cache = pacs.StudyCache(tmp / f"c{n['i']}")
                entry = pacs.retrieve(node, study, method=method, cache=cache)
                assert entry.complete and sum(s.files for s in entry.series) == len(files)
                shutil.rmtree(cache.root)
            return run

        def dcmtk(tool: str, nodelay: bool = True):
            env = {**os.environ, "TCP_NODELAY": "1"} if nodelay else dict(os.environ)

            def run():
                n["i"] += 1
                out = tmp / f"d{n['i']}"
                out.mkdir()
                cmd = [tool, "-S", "-aet", ME, "-aec", "ORTHANC", "-k",
                       "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                       "-od", str(out)]
                if tool == "movescu":
                    cmd += ["-aem", ME, "--port", str(scp_port)]
                subprocess.run(cmd + ["127.0.0.1", str(o.dicom_port)], check=True,
                               capture_output=True, env=env)
                got = len(list(out.iterdir()))
                assert got == len(files), f"{tool} wrote {got} files"
                shutil.rmtree(out)
            return run

        ours("get")()  # warm-up: Orthanc's cache, imports
        rows = [("C-GET", "get", "getscu")] + ([("C-MOVE", "move", "movescu")]
                                                if args.move else [])
        for name, method, tool in rows:
            t_mine, t_ref, t_stock = _best([ours(method), dcmtk(tool), dcmtk(tool, False)],
                                           args.repeat)
            print(f"{name}: lungviewer {t_mine:.2f} s, dcmtk {tool} {t_ref:.2f} s "
                  f"(TCP_NODELAY=1; {t_stock:.2f} s as installed, Nagle on), "
                  f"ratio {t_mine / t_ref:.2f}x ({t_mine / t_stock:.2f}x) "
                  f"[best of {args.repeat}; {mb / t_mine:.0f} vs {mb / t_ref:.0f} MB/s]")
        if args.shots:
            _shots(args.shots, o, node, tmp)
    finally:
        o.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _shots(out: Path, o, node, tmp: Path) -> None:
    from test_export import make_reading, write_phantom

    from lungviewer import pacs
    from lungviewer.reading.export_dicom import export_dicom
    from lungviewer.study.dicom_series import load_series

    out.mkdir(parents=True, exist_ok=True)
    ct = write_phantom(tmp / "phantom")
    o.upload(sorted(ct.glob("*.dcm")))
    vol = load_series(ct)
    exp = export_dicom(make_reading(vol), vol, tmp / "export")
    res = pacs.send(node, [exp.sr, exp.seg])
    print("sent reading:", ", ".join(f"{Path(r.path).name} {r.status}" for r in res))
    uid = str(vol.study_uid) if getattr(vol, "study_uid", "") else str(
        __import__("pydicom").dcmread(exp.sr).StudyInstanceUID)
    found = o.rest("/tools/lookup", uid.encode(), method="POST")
    sid = next(x["ID"] for x in found if x["Type"] == "Study")
    listing = o.rest(f"/studies/{sid}/series")
    path = out / "orthanc_sent_reading_series.json"
    path.write_text(json.dumps(listing, indent=2))
    print(f"Orthanc /studies/{sid}/series: "
          + ", ".join(s["MainDicomTags"].get("Modality", "?") for s in listing) + f" -> {path}")

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from lungviewer.ui.pacs_dialog import PacsDialog

    app = QApplication.instance() or QApplication([])
    pacs.save_nodes([node, pacs.Node("hospital-web", kind="dicomweb", url=o.dicomweb,
                                     retrieve="wado")])
    dlg = PacsDialog()
    dlg.show()
    dlg.f_mod.setCurrentText("")
    dlg.search()

    def wait(cond, secs=20.0):
        """Run the event loop (as the viewer does) until ``cond()`` or ``secs``."""
        from PySide6.QtCore import QEventLoop, QTimer

        if cond():
            return
        loop, poll = QEventLoop(), QTimer()
        poll.timeout.connect(lambda: loop.quit() if cond() else None)
        poll.start(2)
        QTimer.singleShot(int(secs * 1000), loop.quit)
        loop.exec()
        poll.stop()
    wait(lambda: dlg.t_studies.rowCount() > 0)
    dlg.t_studies.selectRow(0)
    wait(lambda: dlg.t_series.rowCount() > 0)
    app.processEvents()
    png = out / "pacs_dialog.png"
    dlg.grab().save(str(png))
    print(f"dialog grab -> {png}")

    # the GUI during a retrieve: the gaps between ticks of a 5 ms timer on the GUI thread
    from PySide6.QtCore import QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    def gaps_ms() -> str:
        g = sorted(b - a for a, b in zip(ticks, ticks[1:]))
        if not g:
            return "no ticks"
        return (f"longest gap between 5 ms timer ticks {g[-1] * 1000:.0f} ms, 99th percentile "
                f"{g[int(0.99 * (len(g) - 1))] * 1000:.0f} ms ({len(g)} gaps; a frame is 16.7 ms)")
    timer.start(5)  # the same timer with nothing running: what this machine allows
    wait(lambda: False, 1.5)
    timer.stop()
    print(f"GUI idle for 1.5 s: {gaps_ms()}")
    ticks.clear()
    done: list = []
    dlg.seriesReady.connect(lambda *a: done.append(a))
    dlg.t_series.clearSelection()
    timer.start(5)
    t0 = time.perf_counter()
    dlg.retrieve()
    wait(lambda: bool(done) or "⚠" in dlg.message.text(), 120)
    timer.stop()
    print(f"GUI during the dialog's C-GET of the study ({time.perf_counter() - t0:.1f} s): "
          f"{gaps_ms()}")
    dlg.close()


if __name__ == "__main__":
    raise SystemExit(main())
