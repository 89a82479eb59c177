"""Where lungviewer keeps its cache (demo twins, extracted data) and settings.

``platformdirs`` gives the per-OS user folders; ``LUNGVIEWER_CACHE_DIR`` and
``LUNGVIEWER_CONFIG_DIR`` (and ``LUNGVIEWER_DATA_DIR``) override them (tests, portable installs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

APP = "lungviewer"


def cache_dir() -> Path:
    path = Path(os.environ.get("LUNGVIEWER_CACHE_DIR") or platformdirs.user_cache_dir(APP))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    path = Path(os.environ.get("LUNGVIEWER_CONFIG_DIR") or platformdirs.user_config_dir(APP))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """The user's data folder (saved readings and measurements); ``LUNGVIEWER_DATA_DIR``
    overrides it. Never the study's DICOM folder."""
    path = Path(os.environ.get("LUNGVIEWER_DATA_DIR") or platformdirs.user_data_dir(APP))
    path.mkdir(parents=True, exist_ok=True)
    return path


def project_root() -> Path:
    """The folder holding ``resources/`` and ``model_weights/`` (source tree or frozen bundle)."""
    if getattr(sys, "frozen", False):
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent))
    return Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    return project_root() / "resources"


def weights_dir() -> Path:
    return project_root() / "model_weights"
