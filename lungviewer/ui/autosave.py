"""The reading saved off the GUI thread.

The session saves the reading after every change (a verdict, a measurement, the note);
the file is written atomically with an fsync, which took about 8 ms of a 25 ms verdict on
the GUI thread (bench/bench_views.py review steps). In the viewer the session hands the
reading to a :class:`ReadingSaver` instead: changes within ``delay_ms`` are written once,
from a JSON snapshot taken on the GUI thread, by one worker thread (so writes stay in
order). Another study's reading, closing the window and :meth:`ReadingSaver.flush` write
what is pending at once.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from PySide6.QtCore import QObject, QThread, QTimer

log = logging.getLogger(__name__)


class ReadingSaver(QObject):
    def __init__(self, session, delay_ms: int = 250, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._pending = None  # the Reading to write
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self._write)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lungviewer-save")
        self._last: Future | None = None
        self._closed = False
        session.saver = self

    def __call__(self, reading) -> None:
        """Save ``reading`` soon (called by the session instead of writing it)."""
        if self._closed:
            self._save(reading.to_json())
            return
        if QThread.currentThread() is not self.thread():  # a session job (the CAD scan)
            self._last = self._pool.submit(self._save, reading.to_json())  # in order
            return
        if self._pending is not None and self._pending is not reading:
            self._write()  # the previous study's reading: its own snapshot, now
        self._pending = reading
        self._timer.start()

    def _write(self) -> None:
        self._timer.stop()
        reading, self._pending = self._pending, None
        if reading is not None:
            self._last = self._pool.submit(self._save, reading.to_json())

    def _save(self, text: str) -> None:
        from lungviewer.reading import store
        from lungviewer.reading.model import Reading

        try:
            store.save_reading(Reading.from_json(text))
        except (OSError, ValueError) as exc:
            self.session.emit("message", f"The reading could not be saved: {exc}")

    def flush(self, timeout: float = 30.0) -> None:
        """Write what is pending and wait until it is on disk."""
        self._write()
        if self._last is not None:
            try:
                self._last.result(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 — reported, never raised at close
                log.warning("the reading could not be saved: %s", exc)

    def close(self) -> None:
        """The window closes: flush, then later saves are written at once."""
        self.flush()
        self._closed = True
        self._pool.shutdown(wait=True)
        if self.session.saver is self:
            self.session.saver = None
