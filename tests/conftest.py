"""Shared test set-up: offscreen Qt, no user settings touched, small fixtures."""

from __future__ import annotations

import os

# Qt must never need a display in tests, and must not read or write the user's settings.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


import pytest


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Point the cache/config folders (platformdirs, Qt settings) at a temporary folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LUNGVIEWER_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("LUNGVIEWER_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("LUNGVIEWER_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    yield


@pytest.fixture(scope="session")
def twin_0001():
    """The rendered LIDC twin of LIDC-IDRI-0001 (133 slices, one nodule read by 4 readers)."""
    from lungviewer.synth.twin import render_twin

    return render_twin("LIDC-IDRI-0001")


@pytest.fixture(scope="session")
def twin_0001_dir(twin_0001, tmp_path_factory):
    """Folder with the LIDC-IDRI-0001 twin written as DICOM + LIDC XML."""
    from lungviewer.synth.writer import write_twin

    out = tmp_path_factory.mktemp("twin0001")
    return write_twin("LIDC-IDRI-0001", out, twin=twin_0001)


def shown_window(qtbot, size: tuple[int, int] = (1000, 700)):
    """A MainWindow as the viewer makes it (its own QApplication set-up), errors kept out of
    modal dialogs, shown at ``size``; closed by the caller (qtbot also cleans it up)."""
    from lungviewer.ui.main_window import MainWindow, application

    application()
    win = MainWindow()
    win.quiet_errors = True
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    return win


def _thread_run_queue_ms() -> float | None:
    """Milliseconds the calling thread has spent runnable but waiting for a CPU (Linux
    ``/proc/thread-self/schedstat``, second field); None where the kernel does not say."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as fh:
            return int(fh.read().split()[1]) / 1e6
    except (OSError, ValueError, IndexError):
        return None


class GuiTicks:
    """A 10 ms QTimer on the GUI thread. ``gaps()`` are the wall-clock times between ticks;
    ``blocked()`` the same less the time the GUI thread waited in the kernel's run queue
    (ready to run, but the shared machine gave it no CPU). What is left is the time the GUI
    thread worked, slept on a lock or the GIL, or idled: the application's own share. Where
    the kernel gives no run-queue figure, ``blocked()`` is ``gaps()``."""

    def __init__(self, interval_ms: int = 10) -> None:
        import time

        from PySide6.QtCore import QTimer

        self._clock = time.perf_counter
        self.ticks: list[tuple[float, float]] = []
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)
        self.interval_ms = interval_ms

    def _tick(self) -> None:
        self.ticks.append((self._clock(), _thread_run_queue_ms() or 0.0))

    def start(self) -> None:
        self._tick()
        self.timer.start(self.interval_ms)

    def stop(self) -> None:
        self.timer.stop()

    def gaps(self):
        import numpy as np

        t = np.array([w for w, _ in self.ticks])
        return np.diff(t) * 1000.0

    def blocked(self):
        import numpy as np

        rq = np.diff(np.array([r for _, r in self.ticks]))
        return self.gaps() - rq

    def report(self) -> str:
        """The longest gap: wall ms, run-queue ms, the rest (for an assertion's message)."""
        import numpy as np

        gaps, blocked = self.gaps(), self.blocked()
        i = int(np.argmax(blocked))
        return (f"GUI thread blocked for {blocked[i]:.0f} ms (a {gaps[i]:.0f} ms gap, "
                f"{gaps[i] - blocked[i]:.0f} ms of it waiting for a CPU); longest gap "
                f"{gaps.max():.0f} ms")
