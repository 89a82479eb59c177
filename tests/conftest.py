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
