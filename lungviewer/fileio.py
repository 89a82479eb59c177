"""Atomic file writes: a temporary file in the target's folder, flushed, then renamed over
the target. A write that fails half-way (disk full, quota, a crash) leaves the old file as
it was and no partial file behind. Every file lungviewer writes for the user goes through
here (masks, screenshots, readings, exports)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write to (by any library); on success it
    replaces ``target``, on an exception it is removed. ``suffix`` defaults to the target's
    own (libraries that pick a format by extension see the right one)."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"the folder {folder} does not exist")
    sfx = "".join(target.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{sfx}", dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # the data is on disk before the rename
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(target: str | Path, mode: str = "w", encoding: str | None = "utf-8"
                ) -> Iterator[IO]:
    """``open()`` for writing that replaces ``target`` only once everything is written."""
    if "b" in mode:
        encoding = None
    with atomic_path(target) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_open(target, "wb") as fh:
        fh.write(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_open(target, "w") as fh:
        fh.write(text)
