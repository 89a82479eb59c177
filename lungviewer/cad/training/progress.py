"""The progress line that ``lungviewer train`` and ``lungviewer evaluate`` print."""

from __future__ import annotations

import sys


def print_progress(label: str, i: int, n: int, info: dict | None = None) -> None:
    """``label i/n`` (plus the float values of ``info``) on one stderr line, rewritten in
    place until ``i`` reaches ``n``."""
    extra = "".join(f"  {k} {v:.4f}" for k, v in (info or {}).items() if isinstance(v, float))
    print(f"\r{label} {i}/{n}{extra}", end="\n" if i >= n else "", file=sys.stderr, flush=True)
