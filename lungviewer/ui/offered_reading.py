"""The offered reading (issue 24 point 3): a saved reading of this series made on *other*
images (another folder of the same SeriesInstanceUID) is never applied silently. The
session keeps it in ``session.offered_reading``; this bar above the images says so and
offers Apply / Ignore, non-modal, so the reader can look at the study first.

Apply calls ``session.apply_offered_reading()``: its items are moved to this volume's slices
by SOPInstanceUID and whatever lay on a slice this volume lacks is left out, so nothing is
drawn at a position the volume does not have (``lungviewer.reading.content.fit_reading``).
"""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget


def offer_text(reading) -> str:
    """The bar's question for an offered reading."""
    n_marks, n_nod = len(reading.cad_marks), len(reading.nodules)
    n_meas = len(reading.measurements)
    extra = f", {n_meas} measurement{'s' if n_meas != 1 else ''}" if n_meas else ""
    return (f"A saved reading of this series was made on other images ({n_marks} "
            f"mark{'s' if n_marks != 1 else ''}, {n_nod} nodule{'s' if n_nod != 1 else ''}"
            f"{extra}). Apply it?")


class OfferedReadingBar(QFrame):
    """The bar over the images (hidden unless the open study has an offered reading)."""

    def __init__(self, window) -> None:
        super().__init__()
        self.window = window
        self.setObjectName("offered-reading-bar")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#offered-reading-bar { background: #fff4c2; color: #222; }")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Take over the saved reading's marks, nodules and "
                                     "measurements that lie on images of this folder")
        self.ignore_button = QPushButton("Ignore")
        self.ignore_button.setToolTip("Keep this folder's own reading; the saved one stays "
                                      "as it was")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 8, 4)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.apply_button)
        lay.addWidget(self.ignore_button)
        self.apply_button.clicked.connect(self.apply)
        self.ignore_button.clicked.connect(self.ignore)
        self.hide()

    def refresh(self, volume=None) -> None:
        """Show the offer of the study on screen (``volume``: the one just opened)."""
        s = self.window.session
        current = volume is None or s.volume is volume
        if current and s.offered_reading is not None:
            self.label.setText(offer_text(s.offered_reading))
            self.label.setToolTip("Only what lies on images of this folder is taken over "
                                  "(moved there by SOPInstanceUID); the rest is left out.")
            self.show()
        else:
            self.hide()

    def apply(self) -> list[str]:
        """Take the offered reading over (moved by SOPInstanceUID, off-volume items left
        out); the views redraw from the session's ``reading`` event."""
        s, w = self.window.session, self.window
        self.hide()
        if s.offered_reading is None:
            return []
        msgs = s.apply_offered_reading()
        if s.reading is not None:  # the measurements panel shows the reading's own list
            items = list(s.reading.measurements)
            w.mpr.measure_panel.set_measurements(items)
            edits = getattr(w, "edits", None)
            if edits is not None:  # the taken-over list is the baseline of later undos
                edits._measurements = w.mpr.measure_panel.measurements()
        if msgs:
            w.statusBar().showMessage(msgs[0], 10000)
        return msgs

    def ignore(self) -> None:
        """Keep this folder's own reading; the offer is dropped for this opening."""
        self.window.session.offered_reading = None
        self.hide()
        self.window.statusBar().showMessage("The saved reading of the other images was "
                                            "not applied.", 5000)


def install(window) -> OfferedReadingBar:
    """Put the bar above the window's central widget and show it whenever a study with an
    offered reading opens."""
    bar = OfferedReadingBar(window)
    central = window.takeCentralWidget()
    host = QWidget()
    lay = QVBoxLayout(host)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(0)
    lay.addWidget(bar)
    lay.addWidget(central, 1)
    window.setCentralWidget(host)
    window.studyLoaded.connect(bar.refresh)
    return bar
