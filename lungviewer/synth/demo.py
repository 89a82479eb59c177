"""The embedded demo study: the LIDC twin of one patient, generated once into the user's
cache folder (``platformdirs``; ``LUNGVIEWER_CACHE_DIR`` overrides it) and reused after."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lungviewer import paths
from lungviewer.contracts import DEMO_COMPLETE_MARKER, DEMO_PATIENT

from .twin import twin_version
from .writer import write_twin

log = logging.getLogger(__name__)

_DONE = DEMO_COMPLETE_MARKER


def demo_dir(patient_id: str = DEMO_PATIENT, realistic: bool = False) -> Path:
    return paths.cache_dir() / "twins" / f"{patient_id}-{twin_version(realistic)}"


def ensure_demo(patient_id: str = DEMO_PATIENT,
                progress: Callable[[int, int], None] | None = None,
                realistic: bool = False) -> Path:
    """Folder with the twin of ``patient_id`` (DICOM + LIDC XML; ``realistic``: the
    realistic twin), generating it on first use.

    Generation writes into a temporary sibling folder and renames it into place, so an
    interrupted run never leaves a half-written study behind."""
    target = demo_dir(patient_id, realistic)
    if (target / _DONE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{patient_id}-", dir=target.parent))
    try:
        log.info("generating the synthetic demo study (first run only)")
        write_twin(patient_id, tmp, progress=progress, realistic=realistic)
        (tmp / _DONE).write_text(twin_version(realistic) + "\n", encoding="utf-8")
        if target.exists():  # a stale, incomplete folder from an older run
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / _DONE).is_file():  # not just another process finishing first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_demo(patient_id: str = DEMO_PATIENT,
              progress: Callable[[int, int], None] | None = None,
              cancel: Callable[[], bool] | None = None, realistic: bool = False):
    """Generate the demo twin (``realistic``: the realistic twin) if needed, then load it:
    ``(Volume, folder)``."""
    from lungviewer.study.dicom_series import load_series

    folder = ensure_demo(patient_id, progress=progress, realistic=realistic)
    return load_series(folder, progress=progress, cancel=cancel), folder
