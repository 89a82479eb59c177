"""Remembered settings (recent studies, window preset, overlays, geometry) in an INI file
in the user's config folder (``LUNGVIEWER_CONFIG_DIR`` overrides it)."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from lungviewer import paths

MAX_RECENT = 8


def settings() -> QSettings:
    return QSettings(str(paths.config_dir() / "lungviewer.ini"), QSettings.Format.IniFormat)


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
