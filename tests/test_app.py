"""The viewer's start-up (ui/app.py, ui/qt_check.py): command-line values refused before any
window or thread starts, screenshots that tell the truth, the Qt system-library check."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import pytest

from lungviewer.cli import main as cli_main
from lungviewer.ui import qt_check
from lungviewer.ui.app import UsageError, check_screenshot_path, parse_size

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text", ["100", "100x", "x100", "100x100", "axb", "99999x99999"])
def test_bad_window_sizes_are_refused(text):
    with pytest.raises(UsageError, match="--size"):
        parse_size(text)
    assert parse_size("1600x1000") == (1600, 1000)


def test_screenshot_paths_are_checked(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        check_screenshot_path(str(tmp_path / "missing" / "out.png"))
    with pytest.raises(UsageError, match="must end in"):
        check_screenshot_path(str(tmp_path / "out.tiff2"))
    assert check_screenshot_path(str(tmp_path / "OUT.PNG")).name == "OUT.PNG"


@pytest.mark.parametrize("extra", [["--size", "100"], ["--screenshot", "/nonexistent/dir/a.png"],
                                   ["--screenshot", "out.xyz"]])
def test_view_refuses_bad_options_with_exit_2_and_no_thread(extra, capsys, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["view", "--demo", *extra]
    if "--screenshot" not in extra:
        args += ["--screenshot", str(tmp_path / "s.png")]
    assert cli_main(args) == 2
    assert "lungviewer:" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_missing_xcb_libraries_are_named_with_their_packages(monkeypatch):
    monkeypatch.setattr(qt_check.sys, "platform", "linux")
    real = ctypes.util.find_library
    monkeypatch.setattr(qt_check.ctypes.util, "find_library",
                        lambda name: None if name == "xcb-cursor" else real(name) or "lib")
    msg = qt_check.missing_qt_libraries("xcb")
    assert "libxcb-cursor0" in msg and "apt-get install" in msg
    assert qt_check.missing_qt_libraries("offscreen") == ""
    monkeypatch.setattr(qt_check.ctypes.util, "find_library", lambda name: "lib")
    assert qt_check.missing_qt_libraries("xcb") == ""


def test_readme_names_the_same_packages():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert qt_check.APT_LINE in readme
    # a root shell in a fresh container has no sudo: the line starts with apt-get
    line = next(ln for ln in readme.splitlines() if qt_check.APT_LINE in ln)
    assert not line.lstrip().startswith("sudo") and "sudo" not in qt_check.APT_LINE
    # the real-scan tests' folder is named
    assert "../shared/data/real" in readme and "beside" in readme
