"""The one "the user cancelled this job" exception of lungviewer (docs/ARCHITECTURE.md,
"Jobs"). Every long job — loading, segmentation, the CAD scan — raises it between two
steps once its cancel check says so; the session drops the job's partial results and the
views show "cancelled"."""

from __future__ import annotations

from collections.abc import Callable


class Cancelled(Exception):
    """Raised inside a job when its cancel() became true; partial results are dropped."""


def check(cancel: Callable[[], bool] | None, what: str = "the job") -> None:
    """Raise :class:`Cancelled` if ``cancel`` is given and says so."""
    if cancel is not None and cancel():
        raise Cancelled(f"{what} was cancelled")
