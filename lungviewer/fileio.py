"""Atomic file writes: a temporary file in the target's folder, flushed, then renamed over
the target. A write that fails half-way (disk full, quota, a crash) leaves the old file as
it was and no partial file behind. Every file lungviewer writes for the user goes through
here (masks, screenshots, readings, exports); folders written as a whole (the anonymised
copy) go through :func:`atomic_dir`.

**Permissions.** ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700; the result is set to
what ``open()``/``mkdir`` would give (0666/0777 less the process umask), so a PACS sender
or a shared folder can read an export. A file that must stay private (the PACS secrets)
passes an explicit ``mode`` (e.g. 0o600), which is set instead and never widened by the
umask; the temporary file is 0600 until then, so the content is never readable by others.

**Errors.** Every ``OSError`` while writing becomes a :class:`WriteError`: one line saying
what could not be written, where, and why (:func:`os_error_line`; no traceback text, even
where a library such as pydicom packs one into its message). The temporary file or folder
is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_UMASK_LOCK = threading.Lock()

#: plain words for the errors a write meets most
_WHY = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file is larger than allowed "
        "(file size limit or file system)", errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied", errno.EPERM: "permission denied",
        errno.EROFS: "the file system is read-only", errno.ENOENT: "the folder does not exist",
        errno.ENOTDIR: "a part of the path is not a folder", errno.EEXIST: "it already exists",
        errno.EIO: "input/output error", errno.ENAMETOOLONG: "the name is too long"}


def umask() -> int:
    """The process umask (read without changing it where /proc says it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def _default_mode(path: Path, folder: bool = False) -> None:
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def root_os_error(exc: BaseException) -> OSError | None:
    """The OSError with an errno behind ``exc`` (itself, or in its cause/context chain:
    pydicom re-raises ``OSError(message with a traceback)`` from the real one)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    first = None
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError):
            if e.errno is not None:
                return e
            first = first or e
        todo += [e.__cause__, e.__context__]
    return first


def os_error_line(exc: BaseException, what: str | Path, where: str | Path | None = None,
                  verb: str = "written") -> str:
    """One line: ``what could not be <verb> in where: why``."""
    root = root_os_error(exc)
    if isinstance(exc, WriteError):
        return str(exc)
    if root is not None and root.errno is not None:
        system = root.strerror or os.strerror(root.errno)
        plain = _WHY.get(root.errno)
        # the plain words, and the system's own (what a user would search for)
        why = f"{plain} ({system})" if plain and plain.lower() != system.lower() else system
    else:
        why = (str(root or exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    place = f" in {where}" if where is not None and str(where) else ""
    return f"{what} could not be {verb}{place}: {why}"


class WriteError(OSError):
    """A failed write, as one line (see :func:`os_error_line`); ``errno`` is the cause's."""

    def __init__(self, line: str, err: int | None = None) -> None:
        super().__init__(err, line)
        self.line = line

    def __str__(self) -> str:
        return self.line


def write_error(exc: BaseException, target: str | Path) -> WriteError:
    """``exc`` (an OSError while writing ``target``) as a :class:`WriteError`."""
    if isinstance(exc, WriteError):
        return exc
    target = Path(target)
    root = root_os_error(exc)
    folder = target.parent if str(target.parent) else Path(".")
    return WriteError(os_error_line(exc, target.name, folder),
                      root.errno if root is not None else None)


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None,
                mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write to (by any library); on success it
    replaces ``target`` (with the umask's permissions, or exactly ``mode`` when given), on
    an exception it is removed. An OSError on the way comes out as a one-line
    :class:`WriteError`. ``suffix`` defaults to the target's own (libraries that pick a
    format by extension see the right one)."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise WriteError(f"{target.name} could not be written in {folder}: the folder does "
                         "not exist", errno.ENOENT)
    sfx = "".join(target.suffixes) if suffix is None else suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{sfx}",
                                   dir=folder)
        os.close(fd)
    except OSError as exc:
        raise write_error(exc, target) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # the data is on disk before the rename
            os.fsync(fh.fileno())
        if mode is None:
            _default_mode(tmp_path)
        else:
            os.chmod(tmp_path, mode)
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) or (isinstance(exc, Exception)
                                        and root_os_error(exc) is not None):
            raise write_error(exc, target) from None
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` to fill; when the block ends without an
    exception it becomes ``target`` (an existing ``target`` is replaced only with
    ``force``, and only then), otherwise it is removed: a failed write never leaves a
    half-filled ``target``. OSErrors come out as :class:`WriteError`."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if target.exists() and not force and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists; use --force to replace it")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=parent))
        _default_mode(tmp, folder=True)
    except OSError as exc:
        raise write_error(exc, target) from None
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            os.replace(target, old / "x")
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:  # put the old one back
                os.replace(old / "x", target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, WriteError):
            raise
        if isinstance(exc, OSError) or (isinstance(exc, Exception)
                                        and root_os_error(exc) is not None):
            raise WriteError(os_error_line(exc, target.name, parent),
                             getattr(root_os_error(exc), "errno", None)) from None
        raise


@contextlib.contextmanager
def atomic_open(target: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                perms: int | None = None) -> Iterator[IO]:
    """``open()`` for writing that replaces ``target`` only once everything is written;
    ``perms``: the file's permission bits (default: the umask's, see the module)."""
    if "b" in mode:
        encoding = None
    with atomic_path(target, mode=perms) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh


def atomic_write_bytes(target: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` atomically; ``mode``: permission bits (default: the umask's)."""
    with atomic_open(target, "wb", perms=mode) as fh:
        fh.write(data)


def atomic_write_text(target: str | Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` (UTF-8) atomically; ``mode``: permission bits (default: the
    umask's), e.g. 0o600 for a file that holds secrets."""
    with atomic_open(target, "w", perms=mode) as fh:
        fh.write(text)
