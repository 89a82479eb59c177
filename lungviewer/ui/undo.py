"""Undo / redo (Ctrl+Z / Ctrl+Shift+Z, as in Horos, Weasis and syngo) of the reader's edits:
the CAD box's moves, the measurements, the verdicts on CAD findings and the segmentations.

One :class:`History` per window, on Qt's ``QUndoStack``. An edit is recorded *after* it was
made, as a pair of callables that put the state before and after it back; while one of
them runs, :attr:`History.applying` is True so that the change it makes is not recorded
again. A new study empties the history.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject
from PySide6.QtGui import QKeySequence, QUndoCommand, QUndoStack


class _Edit(QUndoCommand):
    def __init__(self, history: History, text: str, undo: Callable[[], None],
                 redo: Callable[[], None]) -> None:
        super().__init__(text)
        self._history, self._undo, self._redo = history, undo, redo
        self._done = True  # pushed after the edit was made: the first redo() is a no-op

    def redo(self) -> None:
        if self._done:
            self._done = False
            return
        self._history._apply(self._redo)

    def undo(self) -> None:
        self._history._apply(self._undo)


class History(QObject):
    """The window's undo stack (see the module docstring)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stack = QUndoStack(self)
        self.applying = False
        self.undo_action = self.stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcut(QKeySequence("Ctrl+Z"))
        self.redo_action = self.stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcut(QKeySequence("Ctrl+Shift+Z"))
        self.actions = [self.undo_action, self.redo_action]

    def push(self, text: str, undo: Callable[[], None], redo: Callable[[], None]) -> None:
        """Record an edit just made (nothing while an undo or redo is being applied)."""
        if not self.applying:
            self.stack.push(_Edit(self, text, undo, redo))

    def _apply(self, fn: Callable[[], None]) -> None:
        self.applying = True
        try:
            fn()
        finally:
            self.applying = False

    def undo(self) -> None:
        self.stack.undo()

    def redo(self) -> None:
        self.stack.redo()

    def clear(self) -> None:
        self.stack.clear()

    @property
    def count(self) -> int:
        return self.stack.count()


class WindowEdits(QObject):
    """Records the main window's box moves and measurement edits in a :class:`History`
    (the reading controller records verdicts and segmentations itself)."""

    def __init__(self, window, history: History) -> None:
        super().__init__(window)
        self.window, self.history = window, history
        self._box = None
        self._measurements: list = []
        window.slice_view.boxChanged.connect(self._box_changed)
        window.mpr.measure_panel.measurementsChanged.connect(self._measurements_changed)
        window.studyLoaded.connect(lambda _v: self.reset())

    def reset(self) -> None:
        """A new study: no history, the state as loaded."""
        self.history.clear()
        self._box = self.window.slice_view.box
        self._measurements = self.window.mpr.measure_panel.measurements()

    # -- the CAD box ---------------------------------------------------------------------------
    def _box_changed(self, *box) -> None:
        old, new = self._box, tuple(int(v) for v in box)
        self._box = new
        if old != new:
            self.history.push("Move the box", lambda: self._put_box(old),
                              lambda: self._put_box(new))

    def _put_box(self, box) -> None:
        sv = self.window.slice_view
        if box is None:
            sv.clear_box()
            self._box = None
        else:
            sv.set_box(*box)  # emits boxChanged: the CAD scores the box again
            self._box = tuple(box)

    # -- measurements --------------------------------------------------------------------------
    def _measurements_changed(self, items: list) -> None:
        old, new = self._measurements, list(items)
        self._measurements = new
        if old != new:
            self.history.push("Edit the measurements", lambda: self._put_measurements(old),
                              lambda: self._put_measurements(new))

    def _put_measurements(self, items: list) -> None:
        self._measurements = list(items)
        self.window.mpr.measure_panel.set_measurements(list(items))
        self.window.session.set_measurements(list(items))
