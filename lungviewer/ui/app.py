"""``lungviewer [view] [PATH] [--demo] ...``: start the viewer.

With ``--screenshot OUT.png`` the window is rendered offscreen once the study, its lung
mask, annotations and any requested CAD result are ready (the window reports itself idle),
saved, and the program exits (documentation, and checking what a user sees). The exit code
says whether the file was written.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: image formats Qt writes without plugins beyond the ones we ship
SCREENSHOT_FORMATS = {".png", ".jpg", ".jpeg", ".bmp"}
SCREENSHOT_TIMEOUT_S = 600
MIN_SIZE = (640, 480)


class UsageError(ValueError):
    """A command-line value that cannot work; said before any window or thread starts."""


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` in pixels, at least :data:`MIN_SIZE`."""
    w, sep, h = str(text).lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = (0, 0)
    if not sep or size[0] < MIN_SIZE[0] or size[1] < MIN_SIZE[1] or max(size) > 16384:
        raise UsageError(f"--size must be WIDTHxHEIGHT with at least {MIN_SIZE[0]}x"
                         f"{MIN_SIZE[1]} pixels (e.g. 1600x1000), got {text!r}")
    return size


def check_screenshot_path(text: str) -> Path:
    out = Path(text)
    if out.suffix.lower() not in SCREENSHOT_FORMATS:
        raise UsageError(f"--screenshot must end in one of {', '.join(sorted(SCREENSHOT_FORMATS))}"
                         f", got {out.name!r}")
    if not out.parent.is_dir() and str(out.parent) not in ("", "."):
        raise UsageError(f"--screenshot: the folder {out.parent} does not exist")
    return out


def save_widget(widget, out: Path) -> None:
    """Grab ``widget`` into ``out`` atomically; raises OSError when Qt could not write it."""
    from lungviewer.fileio import atomic_path

    with atomic_path(out) as tmp:
        if not widget.grab().save(str(tmp)):
            raise OSError(f"could not write the screenshot {out}")


def main(args) -> int:
    try:
        size = parse_size(args.size) if args.screenshot else None
        out = check_screenshot_path(args.screenshot) if args.screenshot else None
    except UsageError as exc:
        print(f"lungviewer: {exc}", file=sys.stderr)
        return 2
    if args.screenshot and "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from .qt_check import missing_qt_libraries

    missing = missing_qt_libraries()
    if missing:  # said before Qt can abort; Qt may still find them elsewhere, so go on
        print(missing, file=sys.stderr)
    box = args.box  # parsed by the CLI: (slice, row0, col0, row1, col1)
    from PySide6.QtCore import Qt, QTimer

    from .main_window import MainWindow, application

    app = application()
    t0 = time.perf_counter()
    win = MainWindow()
    if size is not None:  # exactly this size, not the first start's fit to the screen
        win.setWindowState(win.windowState() & ~Qt.WindowState.WindowMaximized)
        win.resize(*size)
        win.quiet_errors = True
    win.show()
    if args.preset:
        win.set_preset(args.preset)
        win.preset_actions[args.preset].setChecked(True)
    win.mpr.apply_options(getattr(args, "layout", None), getattr(args, "slab", None))
    state = {"error": None, "loaded": False, "saved": False}

    def loaded(volume) -> None:
        state["loaded"] = True
        log.info("first frame %.2f s after start", time.perf_counter() - t0)
        if args.slice is not None:
            win.slice_view.set_slice(args.slice)
        if box is not None:
            win.request_box(*box)
            if getattr(args, "segment", False):
                win.reading_ctl.segment_box()

    def failed(message: str) -> None:
        state["error"] = message
        print(f"lungviewer: {message}", file=sys.stderr)
        if out is not None:
            app.exit(1)

    def finish_screenshot() -> None:
        if state["saved"] or out is None:
            return
        state["saved"] = True
        app.processEvents()
        try:
            save_widget(win, out)
        except OSError as exc:
            print(f"lungviewer: {exc}", file=sys.stderr)
            app.exit(1)
            return
        print(f"screenshot saved to {out}")
        app.exit(0)

    def maybe_done(*_) -> None:
        # idle = the study's chain has ended and any requested box has been answered
        if state["loaded"] and not win.busy:
            QTimer.singleShot(0, finish_screenshot)

    win.studyLoaded.connect(loaded)
    win.studyFailed.connect(failed)
    if out is not None:
        win.busyChanged.connect(maybe_done)
        win.cad.boxEnded.connect(maybe_done)

        def timed_out() -> None:
            if not state["saved"]:
                print("lungviewer: timed out waiting for the study", file=sys.stderr)
                app.exit(1)

        QTimer.singleShot(SCREENSHOT_TIMEOUT_S * 1000, timed_out)
        if not (args.demo or args.path):
            QTimer.singleShot(200, finish_screenshot)
    if args.demo:
        win.open_demo(args.patient)
    elif args.path:
        win.open_study(args.path, args.series)
    rc = app.exec()
    win.close()
    return rc
