"""``lungviewer self-test [--json]``: an offscreen end-to-end check of the installed program.

It runs the path a user takes — the same code in the source tree and in the frozen
(PyInstaller) bundle — and checks each result:

1. ``window``        start Qt and show the main window (time to first frame since process start)
2. ``decoders``      pydicom's compressed-pixel decoders are there (pylibjpeg's plugins for
                     JPEG, JPEG-LS, JPEG 2000, RLE, found through entry points); a JPEG 2000
                     and an RLE round trip are exact
3. ``demo twin``     generate the synthetic LIDC-IDRI-0001 twin (DICOM + XML) into the cache
4. ``open study``    load the twin in the main window (background task)
5. ``parenchyma``    wait for the lung mask; lung volume must be 2–8 L
6. ``annotations``   wait for the readers' nodules (≥ 1 nodule, one near slice 89)
7. ``cad engine``    the CAD worker thread loads the networks; every weights file's sha256 is
                     checked against ``manifest.json`` (again, independently of the engine)
8. ``box scores``    box the known nodule (slice 89) through the window; wait until the panel
                     shows the scores: 5 malignancy probabilities and the disease
                     probabilities each sum to 1, the panel's bars show them
9. ``slice scan``    wait for the whole-study slice scan: a ranking exists
10. ``screenshot``   grab the window into the temporary folder; the slice view is not blank

Every step has its own timeout and the whole run at most :data:`TOTAL_TIMEOUT_S`; nothing
waits without a QTimer behind it, and a watchdog ends the process if shutting down hangs.
The cache and settings go to a temporary folder unless ``LUNGVIEWER_CACHE_DIR`` /
``LUNGVIEWER_CONFIG_DIR`` are set. Exit status 0 when every step passed, else 1 (the
report names the failing step).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lungviewer.contracts import DEMO_PATIENT

log = logging.getLogger(__name__)

_T_IMPORT = time.perf_counter()

PATIENT = DEMO_PATIENT
# the LIDC-IDRI-0001 nodule (readers' outlines on slices ~86-92, rows 340-391, cols 297-340)
NODULE_BOX = (89, 336, 293, 395, 344)
LUNG_LITRES = (2.0, 8.0)
TOTAL_TIMEOUT_S = 300.0
STEP_TIMEOUT_S = {
    "window": 60.0, "decoders": 30.0, "demo twin": 180.0, "open study": 90.0, "parenchyma": 90.0,
    "annotations": 90.0, "cad engine": 120.0, "box scores": 60.0, "slice scan": 180.0,
    "screenshot": 30.0,
}
STEPS = tuple(STEP_TIMEOUT_S)


class StepFailed(Exception):
    """A check of the current step did not hold."""


@dataclass
class StepResult:
    name: str
    ok: bool | None  # None: not run (an earlier step failed)
    seconds: float
    detail: str


def process_age() -> tuple[float, str]:
    """Seconds since this process started, and what the figure is measured from.

    Linux: the kernel's start time of the process (/proc), so a frozen bundle's unpacking
    and imports count. Elsewhere: since this module was imported."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK"), "process start"
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _T_IMPORT, "self-test import"


def verify_weights(folder: Path) -> int:
    """Check every file the weights manifest lists against its sha256; the number checked."""
    from lungviewer.cad.weights import read_manifest, sha256

    manifest = read_manifest(folder)
    n = 0
    for name, entry in manifest.get("models", {}).items():
        for key, file_key in (("sha256", "file"), ("records_sha256", "records")):
            if file_key not in entry:
                continue
            path = folder / entry[file_key]
            if not path.is_file():
                raise StepFailed(f"weights file missing: {path}")
            if sha256(path) != entry[key]:
                raise StepFailed(f"{path.name} ({name}) does not match its sha256 in "
                                 "manifest.json")
            n += 1
    if n == 0:
        raise StepFailed(f"{folder / 'manifest.json'} lists no weights files")
    return n


class SelfTest:
    """Runs the steps in order inside one Qt application; see the module docstring."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.results: list[StepResult] = []
        self.info: dict = {}
        self.events: dict[str, object] = {}  # signal name -> payload, as they arrive
        self.deadline = time.monotonic() + TOTAL_TIMEOUT_S
        self.app = None
        self.win = None

    # -- waiting without hanging ---------------------------------------------------------------
    def wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        """Run the Qt event loop until ``ready()`` (checked every 20 ms), a failure event
        arrives, or ``timeout`` (capped by the overall deadline) passes."""
        from PySide6.QtCore import QEventLoop, QTimer

        limit = min(timeout, self.deadline - time.monotonic())
        end = time.monotonic() + max(limit, 0.0)
        loop = QEventLoop()
        timer = QTimer()
        timer.setInterval(20)

        def check() -> None:
            if ready() or self.events.get("failure") or time.monotonic() >= end:
                loop.quit()

        timer.timeout.connect(check)
        timer.start()
        if not (ready() or self.events.get("failure")):
            loop.exec()
        timer.stop()
        if self.events.get("failure"):
            raise StepFailed(str(self.events["failure"]))
        if not ready():
            overall = limit < timeout
            raise StepFailed(f"timed out after {max(limit, 0):.0f} s"
                             + (" (overall limit of the self-test)" if overall else ""))

    def in_thread(self, name: str, fn: Callable[[], object], timeout: float) -> object:
        """Run blocking non-Qt work on a daemon thread while the event loop keeps going."""
        box: dict = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 — reported as the step's failure
                box["error"] = exc

        t = threading.Thread(target=run, name=f"selftest-{name}", daemon=True)
        t.start()
        if self.app is None:  # before Qt exists: a plain join with a timeout
            t.join(min(timeout, self.deadline - time.monotonic()))
            if t.is_alive():
                raise StepFailed(f"timed out after {timeout:.0f} s")
        else:
            self.wait(name, lambda: not t.is_alive(), timeout)
        if "error" in box:
            exc = box["error"]
            raise StepFailed(f"{type(exc).__name__}: {exc}")
        return box.get("value")

    # -- the steps ------------------------------------------------------------------------------
    def step_decoders(self) -> str:
        """Compressed DICOM needs pylibjpeg's plugins, which are found through package
        entry points: the first thing a frozen bundle can lose."""
        import numpy as np
        from pydicom import uid
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.pixels.decoders.base import get_decoder

        missing = [ts.name for ts in (uid.JPEGBaseline8Bit, uid.JPEGLosslessSV1,
                                      uid.JPEGLSLossless, uid.JPEG2000Lossless, uid.RLELossless)
                   if "pylibjpeg" not in get_decoder(ts).available_plugins]
        if missing:
            raise StepFailed("no pylibjpeg decoder for " + "; ".join(missing))
        arr = (np.arange(64 * 64).reshape(64, 64) % 2400 - 1200).astype(np.int16)  # HU ramp
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = arr.tobytes()
        for ts, enc in ((uid.JPEG2000Lossless, "pylibjpeg"), (uid.RLELossless, "pydicom")):
            ds.compress(ts, arr, encoding_plugin=enc)
            back = get_decoder(ts).as_array(ds, decoding_plugin="pylibjpeg")[0]
            if not np.array_equal(back, arr):
                raise StepFailed(f"{ts.name}: the decoded pixels differ from the encoded ones")
        return "pylibjpeg decodes JPEG, JPEG-LS, JPEG 2000, RLE; J2K and RLE round trips exact"

    def step_demo_twin(self) -> str:
        from lungviewer.synth.demo import ensure_demo

        folder = self.in_thread("demo", lambda: ensure_demo(PATIENT), STEP_TIMEOUT_S["demo twin"])
        n = len(list(Path(folder).glob("**/*.dcm")))
        xml = len(list(Path(folder).glob("**/*.xml")))
        if n == 0 or xml == 0:
            raise StepFailed(f"{folder} holds {n} DICOM and {xml} XML files")
        return f"{n} DICOM slices + {xml} LIDC XML"

    def step_window(self) -> str:
        from PySide6.QtWidgets import QApplication

        from .main_window import MainWindow, application

        self.app = application()
        win = MainWindow()
        win.quiet_errors = True  # a load failure becomes this step's failure, not a dialog
        win.resize(1400, 900)
        win.studyLoaded.connect(lambda v: self.events.__setitem__("study", v))
        win.studyFailed.connect(lambda m: self.events.__setitem__(
            "failure", f"the study could not be opened: {m}"))
        win.maskReady.connect(lambda m: self.events.__setitem__("mask", m))
        win.annotationsReady.connect(lambda a: self.events.__setitem__("annotations", a))
        win.cad.scoresShown.connect(lambda r: self.events.__setitem__("scores", r))
        win.cad.scanDone.connect(lambda s: self.events.__setitem__("scan", s))
        win.show()
        QApplication.processEvents()
        win.repaint()
        age, since = process_age()
        self.info["time_to_first_frame_s"] = round(age, 2)
        self.info["first_frame_measured_from"] = since
        self.win = win
        return f"first frame {age:.2f} s after {since} ({self.app.platformName()})"

    def step_open_study(self) -> str:
        t0 = time.perf_counter()
        self.win.open_demo(PATIENT)
        self.wait("open study", lambda: "study" in self.events, STEP_TIMEOUT_S["open study"])
        self.app.processEvents()
        v = self.events["study"]
        self.info["study_open_s"] = round(time.perf_counter() - t0, 2)
        if v.n_slices < 10 or v.hu.ndim != 3:
            raise StepFailed(f"implausible volume: shape {v.hu.shape}")
        if not v.is_synthetic:
            raise StepFailed("the demo study is not marked SYNTHETIC")
        return f"{v.n_slices} slices {v.shape[1]}×{v.shape[2]}, shown after " \
               f"{self.info['study_open_s']:.2f} s"

    def step_parenchyma(self) -> str:
        self.wait("parenchyma", lambda: "mask" in self.events, STEP_TIMEOUT_S["parenchyma"])
        v, mask = self.events["study"], self.events["mask"]
        if mask.shape != v.hu.shape:
            raise StepFailed(f"mask shape {mask.shape} != volume {v.hu.shape}")
        litres = float(mask.sum()) * v.voxel_volume_ml / 1000.0
        lo, hi = LUNG_LITRES
        if not lo <= litres <= hi:
            raise StepFailed(f"lung volume {litres:.2f} L outside {lo}–{hi} L")
        return f"lung volume {litres:.2f} L"

    def step_annotations(self) -> str:
        self.wait("annotations", lambda: "annotations" in self.events,
                  STEP_TIMEOUT_S["annotations"])
        ann = self.events["annotations"]
        n = len(ann.nodules)
        if n < 1:
            raise StepFailed(f"no nodules found (source {ann.source!r})")
        k = NODULE_BOX[0]
        near = [nd for nd in ann.nodules if nd.slice_range and
                nd.slice_range[0] - 2 <= k <= nd.slice_range[1] + 2]
        if not near:
            raise StepFailed(f"{n} nodule(s), none near slice {k}")
        return f"{n} nodule(s), {len(ann.marks)} reader marks ({ann.source.split(':')[0]})"

    def step_cad_engine(self) -> str:
        from lungviewer import paths

        cad = self.win.cad
        self.wait("cad engine", lambda: cad.engine is not None or cad.error is not None,
                  STEP_TIMEOUT_S["cad engine"])
        if cad.error is not None:
            raise StepFailed(f"the CAD engine did not load: {cad.error}")
        n = self.in_thread("weights", lambda: verify_weights(paths.weights_dir()), 60)
        engine = cad.engine
        self.info["device"] = engine.device_name
        return f"{n} weights files match their sha256; device {engine.device_name}"

    def step_box_scores(self) -> str:
        import numpy as np

        cad = self.win.cad
        self.events.pop("scores", None)
        self.win.request_box(*NODULE_BOX)
        self.wait("box scores", lambda: "scores" in self.events, STEP_TIMEOUT_S["box scores"])
        res = self.events["scores"]
        mal = np.asarray(res.malignancy_probs, dtype=float)
        dis = np.asarray(res.disease_probs, dtype=float)
        if mal.shape != (5,) or not np.all((mal >= 0) & (mal <= 1)) or \
                abs(mal.sum() - 1) > 1e-3:
            raise StepFailed(f"malignancy probabilities {mal.round(4).tolist()} are not 5 "
                             "probabilities summing to 1")
        if dis.size < 2 or len(res.disease_names) != dis.size or abs(dis.sum() - 1) > 1e-3:
            raise StepFailed(f"disease probabilities {dis.round(4).tolist()} for "
                             f"{res.disease_names} do not sum to 1")
        if tuple(res.box) != NODULE_BOX:
            raise StepFailed(f"scores are for box {res.box}, not {NODULE_BOX}")
        shown = [b.value() for b in cad.panel.mal_bars]
        if any(abs(s - round(p * 1000)) > 1 for s, p in zip(shown, mal)):
            raise StepFailed(f"panel bars {shown} do not show {mal.round(3).tolist()}")
        self.info["box_ms"] = round(float(res.timings.get("total_ms", 0.0)), 1)
        top = int(np.argmax(mal)) + 1
        return (f"malignancy level {top} (p={mal.max():.2f}), disease "
                f"{res.disease_names[int(np.argmax(dis))]}, nodule or mass: "
                f"{'—' if res.nodule_prob is None else f'{res.nodule_prob:.2f}'}, "
                f"{self.info['box_ms']:.0f} ms")

    def step_slice_scan(self) -> str:
        import numpy as np

        self.wait("slice scan", lambda: "scan" in self.events, STEP_TIMEOUT_S["slice scan"])
        scan = self.events["scan"]
        ranking = np.asarray(scan.ranking())
        v = self.events["study"]
        if ranking.size == 0 or len(scan.scores) != v.n_slices:
            raise StepFailed(f"no slice ranking ({ranking.size} ranked of {v.n_slices})")
        k = NODULE_BOX[0]
        near = np.nonzero(np.abs(ranking - k) <= 3)[0]
        rank = int(near[0]) + 1 if near.size else None
        self.info["nodule_slice_rank"] = rank
        return f"{ranking.size} slices ranked; first within ±3 of slice {k}: " + \
            (f"#{rank}" if rank else "not ranked")

    def step_screenshot(self) -> str:
        import numpy as np
        from PySide6.QtGui import QImage

        self.app.processEvents()
        out = self.workdir / "selftest-screenshot.png"
        if not self.win.grab().save(str(out)):
            raise StepFailed(f"could not save {out}")
        img = self.win.slice_view.grab().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
        w, h, bpl = img.width(), img.height(), img.bytesPerLine()
        if w < 50 or h < 50:
            raise StepFailed(f"slice view is only {w}×{h} px")
        arr = np.frombuffer(img.constBits(), np.uint8, count=bpl * h).reshape(h, bpl)[:, :w]
        spread = float(arr.std())
        if spread < 10 or len(np.unique(arr)) < 16:
            raise StepFailed(f"the slice view looks blank (grey std {spread:.1f})")
        self.info["screenshot"] = str(out)
        return f"{out.name} {self.win.width()}×{self.win.height()}, slice view grey std " \
               f"{spread:.0f}"

    # -- driver ------------------------------------------------------------------------------
    def run(self) -> bool:
        failed = False
        for name in STEPS:
            if failed:
                self.results.append(StepResult(name, None, 0.0, "not run"))
                continue
            t0 = time.perf_counter()
            try:
                detail = getattr(self, "step_" + name.replace(" ", "_"))()
                ok = True
            except StepFailed as exc:
                detail, ok = str(exc), False
            except Exception as exc:  # noqa: BLE001 — any crash is this step's failure
                log.debug("self-test step %s crashed", name, exc_info=True)
                detail, ok = f"{type(exc).__name__}: {exc}", False
            self.results.append(StepResult(name, ok, round(time.perf_counter() - t0, 2), detail))
            failed = not ok
        return not failed

    def shutdown(self) -> None:
        if self.win is not None:
            self.win.cancel_work()
            self.win.close()
        if self.app is not None:
            self.app.processEvents()


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("lungviewer", "PySide6-Essentials", "torch", "numpy", "pydicom"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "?"
    return out


def format_report(report: dict) -> str:
    lines = [f"lungviewer self-test — {'frozen bundle' if report['frozen'] else 'source'}, "
             f"{report['platform']}",
             f"{'step':<12} {'ok':<4} {'seconds':>7}  detail"]
    for s in report["steps"]:
        mark = {True: "ok", False: "FAIL", None: "-"}[s["ok"]]
        lines.append(f"{s['name']:<12} {mark:<4} {s['seconds']:>7.2f}  {s['detail']}")
    lines.append(f"total {report['total_s']:.1f} s; time to first frame "
                 f"{report.get('time_to_first_frame_s', '?')} s; device "
                 f"{report.get('device', '?')}")
    lines.append("RESULT: PASS" if report["ok"] else
                 f"RESULT: FAIL at step '{report['failed_step']}'")
    return "\n".join(lines)


def main(args) -> int:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="lungviewer-selftest-"))
    own_cache = not os.environ.get("LUNGVIEWER_CACHE_DIR")
    if own_cache:
        os.environ["LUNGVIEWER_CACHE_DIR"] = str(tmp / "cache")
    if not os.environ.get("LUNGVIEWER_CONFIG_DIR"):
        os.environ["LUNGVIEWER_CONFIG_DIR"] = str(tmp / "config")
    test = SelfTest(tmp)
    ok = test.run()
    failed = next((r.name for r in test.results if r.ok is False), None)
    report = {
        "ok": ok, "failed_step": failed,
        "frozen": bool(getattr(sys, "frozen", False)),
        "platform": f"{platform.system()} {platform.machine()}",
        "total_s": round(time.perf_counter() - t_start, 2),
        **test.info,
        "cache_dir": os.environ["LUNGVIEWER_CACHE_DIR"],
        "versions": _versions(),
        "steps": [asdict(r) for r in test.results],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    sys.stdout.flush()
    # whatever happens while shutting down (threads finishing), the process ends
    watchdog = threading.Timer(30.0, lambda: os._exit(0 if ok else 1))
    watchdog.daemon = True
    watchdog.start()
    try:
        test.shutdown()
    except Exception:  # noqa: BLE001
        log.debug("shutdown failed", exc_info=True)
    if own_cache:  # keep the screenshot (its path is in the report), drop the study
        shutil.rmtree(tmp / "cache", ignore_errors=True)
    watchdog.cancel()
    return 0 if ok else 1
