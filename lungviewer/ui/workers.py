"""Session jobs on QThreads: a QObject runner moved to its own thread, signals back.

``Task(job)`` drives a :mod:`lungviewer.session` job (a generator of ``Progress``) on a new
QThread. Between two yields it checks its cancel flag and closes the job, which stops
the step with :class:`lungviewer.cancel.Cancelled`. The result arrives in the GUI thread
through ``finished(result)``, an exception through ``failed(message)``, a cancellation
through ``cancelled()``; ``ended`` follows each of them. Nothing heavy runs in the GUI
thread; signals cross threads as queued connections.
"""

from __future__ import annotations

import logging
import threading
import traceback

from PySide6.QtCore import QObject, QThread, Signal, Slot

from lungviewer.cancel import Cancelled
from lungviewer.session import Job

log = logging.getLogger(__name__)


class _Runner(QObject):
    progress = Signal(int, int, str)
    done = Signal(object)
    error = Signal(str)
    stopped = Signal()

    def __init__(self, job: Job, flag: threading.Event) -> None:
        super().__init__()
        self._job, self._flag = job, flag

    @Slot()
    def run(self) -> None:
        job = self._job
        try:
            while True:
                p = next(job)
                if self._flag.is_set():
                    job.close()
                    raise Cancelled("cancelled")
                if p is not None and p.done >= 0:
                    self.progress.emit(p.done, p.total, p.text)
        except StopIteration as stop:
            if self._flag.is_set():
                self.stopped.emit()
            else:
                self.done.emit(stop.value)
        except Cancelled:
            self.stopped.emit()
        except Exception as exc:  # noqa: BLE001 — every failure goes back to the GUI
            if self._flag.is_set():
                self.stopped.emit()
            else:
                log.debug("task failed:\n%s", traceback.format_exc())
                self.error.emit(str(exc) or type(exc).__name__)
        finally:
            self._job = None


#: every started task until its thread has really finished: a QThread destroyed while it
#: runs aborts the process, and a job that cannot stop at once (the CAD engine loading
#: torch) may outlive the window that started it
_LIVE: set["Task"] = set()


class Task(QObject):
    """One session job on its own QThread (kept alive until its thread has finished)."""

    progress = Signal(int, int, str)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    ended = Signal()  # after any of the three above

    def __init__(self, job: Job, name: str = "task", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._flag = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName(f"lungviewer-{self.name}")
        self._runner = _Runner(job, self._flag)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        self._runner.progress.connect(self.progress)
        self._runner.done.connect(self._on_done)
        self._runner.error.connect(self._on_error)
        self._runner.stopped.connect(self._on_stopped)
        self._thread.finished.connect(lambda: _LIVE.discard(self))
        self._running = False
        #: not the open study's work (a PACS query or retrieve in a dialog): opening another
        #: study does not cancel it (closing the window still does)
        self.outlives_study = False

    def start(self) -> "Task":
        self._running = True
        _LIVE.add(self)
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


class SessionBridge(QObject):
    """Re-emits the session's events (called on worker threads) as a queued Qt signal in
    the thread this object lives in (the GUI thread)."""

    event = Signal(str, object)

    def __init__(self, session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.unsubscribe = session.subscribe(lambda name, payload: self.event.emit(name,
                                                                                   payload))
