"""``lungviewer [view] [PATH] [--demo] ...``: start the viewer.

With ``--screenshot OUT.png`` the window is rendered offscreen once the study, its lung
mask, annotations and any requested CAD result are ready, saved, and the program exits
(documentation, and checking what a user sees).
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger(__name__)


def main(args) -> int:
    if args.screenshot and "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    box = args.box  # parsed by the CLI: (slice, row0, col0, row1, col1)
    from PySide6.QtCore import QTimer

    from .main_window import MainWindow, application

    app = application()
    t0 = time.perf_counter()
    win = MainWindow()
    if args.screenshot:
        w, _, h = args.size.partition("x")
        win.resize(int(w), int(h))
        win.quiet_errors = True
    win.show()
    if args.preset:
        win.set_preset(args.preset)
        win.preset_actions[args.preset].setChecked(True)
    state = {"error": None, "loaded": False, "box_sent": False}

    def loaded(volume) -> None:
        state["loaded"] = True
        log.info("first frame %.2f s after start", time.perf_counter() - t0)
        if args.slice is not None:
            win.slice_view.set_slice(args.slice)
        if box is not None:
            win.request_box(*box)
            state["box_sent"] = True

    def failed(message: str) -> None:
        state["error"] = message
        print(f"lungviewer: {message}", file=sys.stderr)

    win.studyLoaded.connect(loaded)
    win.studyFailed.connect(failed)
    if args.demo:
        win.open_demo(args.patient)
    elif args.path:
        win.open_study(args.path, args.series)

    if args.screenshot:
        deadline = time.monotonic() + 600

        def poll() -> None:
            if state["error"]:
                app.exit(1)
            elif state["loaded"] and not win.busy:
                app.processEvents()
                win.grab().save(args.screenshot)
                print(f"screenshot saved to {args.screenshot}")
                app.exit(0)
            elif time.monotonic() > deadline:
                print("lungviewer: timed out waiting for the study", file=sys.stderr)
                app.exit(1)

        if not (args.demo or args.path):
            QTimer.singleShot(200, lambda: (win.grab().save(args.screenshot), app.exit(0)))
        else:
            timer = QTimer(win)
            timer.timeout.connect(poll)
            timer.start(100)
    rc = app.exec()
    win.close()
    return rc
