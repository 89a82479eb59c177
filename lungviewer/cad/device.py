"""Which torch device runs the networks: CUDA when present, else Apple MPS, else the CPU."""

from __future__ import annotations


class DeviceError(RuntimeError):
    pass


def pick_device(wanted: str = "auto") -> str:
    import torch

    if wanted in ("auto", None):
        if torch.cuda.is_available():
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


def describe(device: str) -> str:
    import torch

    if device == "cuda":
        return f"GPU ({torch.cuda.get_device_name(0)})"
    return "Apple GPU (MPS)" if device == "mps" else "CPU"
