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
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    yield
