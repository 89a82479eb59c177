"""Settings are saved atomically and a corrupt settings file is ignored with a warning."""

from __future__ import annotations

import logging
import os

import pytest

from lungviewer import paths
from lungviewer.ui import settings
from lungviewer.ui.main_window import MainWindow, application

pytestmark = pytest.mark.gui


def _ini():
    return paths.config_dir() / "lungviewer.ini"


def test_save_is_complete_and_replaces_the_file_atomically(qtbot):
    application()
    settings.put("overlay/mask", False)
    for i in range(12):
        settings.add_recent_study(f"/data/study {i}")
    s = settings.settings()
    assert s.isAtomicSyncRequired()
    s.sync()
    ini = _ini()
    before = os.stat(ini).st_ino
    settings.put("window/preset", "bone")
    settings.settings().sync()
    # written as a new file renamed over the old one (QSaveFile), not rewritten in place
    assert os.stat(ini).st_ino != before
    assert not [p.name for p in ini.parent.iterdir() if p.name != ini.name]  # no temp left
    text = ini.read_text(encoding="utf-8")
    assert settings._is_corrupt(ini) == ""
    assert "bone" in text and "study 11" in text
    assert settings.recent_studies() == [f"/data/study {i}" for i in range(11, 3, -1)]
    assert settings.get("overlay/mask", True, bool) is False


def test_window_settings_round_trip_through_a_real_file(qtbot):
    application()
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(812, 611)
    win.show()
    win.set_preset("mediastinum")
    win.close()
    assert settings._is_corrupt(_ini()) == ""  # what Qt writes is accepted by the check
    win2 = MainWindow()
    qtbot.addWidget(win2)
    assert win2.preset_actions["mediastinum"].isChecked()
    win2.close()
    assert not _ini().with_name("lungviewer.ini.corrupt").exists()


@pytest.mark.parametrize("garbage", [
    os.urandom(0) + bytes(range(256)) * 4,  # binary
    b"[General]\nrecent=/a\n\xff\xfe\xfa not utf-8\n",
    b"[General\n<<<<<<< HEAD\nwindow%5Cpreset=bone\n=======\n",  # merge conflict markers
], ids=["binary", "not-utf8", "not-ini"])
def test_corrupt_settings_file_ignored_with_a_warning(qtbot, caplog, garbage):
    ini = _ini()
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_bytes(garbage)
    application()
    with caplog.at_level(logging.WARNING, logger="lungviewer.ui.settings"):
        win = MainWindow()
        qtbot.addWidget(win)
        win.show()
    warn = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert warn and "lungviewer.ini" in warn[0] and "defaults" in warn[0]
    assert win.preset_actions["lung"].isChecked()  # the default preset
    assert settings.recent_studies() == []
    assert ini.with_name("lungviewer.ini.corrupt").read_bytes() == garbage  # kept aside
    win.set_preset("bone")
    win.close()
    assert settings._is_corrupt(ini) == "" and settings.get("window/preset") == "bone"
