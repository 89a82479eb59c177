"""Which torch device runs the networks: CUDA when present, else Apple MPS, else the CPU."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    pass


def pick_device(wanted: str = "auto") -> str:
    import torch

    if wanted in ("auto", None):
        if _cuda_works(torch):
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but torch sees no CUDA GPU "
                          f"(torch {torch.__version__}); use --device cpu or auto")
    if wanted not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {wanted!r}")
    return wanted


def _cuda_works(torch) -> bool:
    """True when a CUDA GPU is present and takes a tensor; a broken driver, a busy or
    out-of-memory GPU falls back to the CPU with a warning instead of failing later."""
    try:
        if not torch.cuda.is_available():
            return False
        torch.zeros(1, device="cuda").add_(1)
        return True
    except Exception as exc:  # noqa: BLE001 - CUDA raises RuntimeError, AssertionError, ...
        log.warning("The CUDA GPU cannot be used (%s: %s); the CAD runs on the CPU.",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return False


def describe(device: str) -> str:
    import torch

    if device == "cuda":
        return f"GPU ({torch.cuda.get_device_name(0)})"
    return "Apple GPU (MPS)" if device == "mps" else "CPU"


def limit_threads(n: int = 1) -> None:
    """Let torch use ``n`` CPU threads in this process (a batch worker: one each, so that
    N workers on N cores do not oversubscribe them)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
