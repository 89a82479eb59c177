"""Background work on QThreads: a QObject worker moved to its own thread, signals back.

``Task(fn, *args, **kwargs)`` runs ``fn(*args, progress=..., cancel=..., **kwargs)`` on a
new QThread. ``fn`` reports progress with ``progress(done, total)`` and polls
``cancel()``; the result arrives in the GUI thread through ``finished(result)``, an
exception through ``failed(message)``, a cancellation through ``cancelled()``. Nothing
heavy runs in the GUI thread; signals cross threads as queued connections.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a task function when ``cancel()`` became true."""


class _Runner(QObject):
    progress = Signal(int, int)
    done = Signal(object)
    error = Signal(str)
    stopped = Signal()

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, flag: threading.Event) -> None:
        super().__init__()
        self._fn, self._args, self._kwargs, self._flag = fn, args, kwargs, flag

    @Slot()
    def run(self) -> None:
        try:
            result = self._fn(*self._args, progress=self._progress, cancel=self._flag.is_set,
                              **self._kwargs)
        except Exception as exc:  # noqa: BLE001 — every failure goes back to the GUI
            if self._flag.is_set() or type(exc).__name__ in ("Cancelled", "LoadCancelled"):
                self.stopped.emit()
            else:
                log.debug("task failed:\n%s", traceback.format_exc())
                self.error.emit(str(exc) or type(exc).__name__)
        else:
            if self._flag.is_set():
                self.stopped.emit()
            else:
                self.done.emit(result)

    def _progress(self, done: int, total: int) -> None:
        self.progress.emit(int(done), int(total))


class Task(QObject):
    """One background job on its own QThread. Keep a reference until it has finished."""

    progress = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    ended = Signal()  # after any of the three above

    def __init__(self, fn: Callable, *args, name: str = "", parent: QObject | None = None,
                 **kwargs) -> None:
        super().__init__(parent)
        self.name = name or getattr(fn, "__name__", "task")
        self._flag = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName(f"lungviewer-{self.name}")
        self._runner = _Runner(fn, args, kwargs, self._flag)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        self._runner.progress.connect(self.progress)
        self._runner.done.connect(self._on_done)
        self._runner.error.connect(self._on_error)
        self._runner.stopped.connect(self._on_stopped)
        self._running = False

    def start(self) -> "Task":
        self._running = True
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._flag.set()

    @property
    def is_cancelled(self) -> bool:
        return self._flag.is_set()

    @property
    def running(self) -> bool:
        return self._running

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the thread has ended (only for shutdown and tests)."""
        return self._thread.wait(msecs)

    def _finish(self) -> None:
        self._running = False
        self._thread.quit()
        self.ended.emit()

    def _on_done(self, result) -> None:
        self._thread.quit()
        self.finished.emit(result)
        self._finish()

    def _on_error(self, message: str) -> None:
        self._thread.quit()
        self.failed.emit(message)
        self._finish()

    def _on_stopped(self) -> None:
        self._thread.quit()
        self.cancelled.emit()
        self._finish()

    def shutdown(self, msecs: int = 10000) -> None:
        """Cancel and wait for the thread (window closing)."""
        self.cancel()
        self._thread.quit()
        self._thread.wait(msecs)
