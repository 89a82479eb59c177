"""Remembered settings (recent studies, window preset, overlays, geometry) in an INI file
in the user's config folder (``LUNGVIEWER_CONFIG_DIR`` overrides it).

Saving is atomic: QSettings writes the INI file through ``QSaveFile`` (a temporary file
renamed over the old one), so a crash mid-save leaves the old file. A corrupt file (binary
garbage, lines that are not INI) is moved aside to ``lungviewer.ini.corrupt`` with a
warning and the viewer starts with its defaults."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from PySide6.QtCore import QSettings

from lungviewer import paths

log = logging.getLogger(__name__)

MAX_RECENT = 8
_checked: set[str] = set()
_INI_LINE = re.compile(r"^\s*(\[[^\]]*\]|[;#].*|[^=\[\s][^=]*=.*)?\s*$")


def _is_corrupt(path: Path) -> str:
    """Why the INI file cannot be trusted ("" when it looks fine)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if b"\x00" in data:
        return "binary data"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    bad = [ln for ln in text.splitlines() if not _INI_LINE.match(ln)]
    return f"{len(bad)} line(s) that are not INI" if bad else ""


def _check(path: Path) -> None:
    """Once per file and process: move a corrupt settings file aside (defaults are used)."""
    key = str(path)
    if key in _checked:
        return
    _checked.add(key)
    if not path.is_file():
        return
    why = _is_corrupt(path)
    if not why:
        return
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
        log.warning("Settings file %s is corrupt (%s): moved to %s; starting with defaults.",
                    path, why, aside.name)
    except OSError as exc:
        log.warning("Settings file %s is corrupt (%s) and could not be moved aside (%s); "
                    "starting with defaults.", path, why, exc)


def settings() -> QSettings:
    path = paths.config_dir() / "lungviewer.ini"
    _check(path)
    s = QSettings(str(path), QSettings.Format.IniFormat)
    s.setAtomicSyncRequired(True)  # the default, stated: write a temp file, then rename
    return s


def recent_studies() -> list[str]:
    value = settings().value("recent", [])
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in (value or [])]


def add_recent_study(path: str) -> list[str]:
    items = [path] + [p for p in recent_studies() if p != path]
    items = items[:MAX_RECENT]
    settings().setValue("recent", items)
    return items


def get(key: str, default=None, type_=None):
    s = settings()
    if type_ is None:
        return s.value(key, default)
    return s.value(key, default, type=type_)


def put(key: str, value) -> None:
    settings().setValue(key, value)


def remove(key: str) -> None:
    settings().remove(key)
