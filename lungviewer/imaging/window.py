"""Window/level presets and the HU → display mapping (pure numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPreset:
    name: str
    level: float  # centre, HU
    width: float  # HU
    key: str  # keyboard shortcut in the viewer

    @property
    def range(self) -> tuple[float, float]:
        return (self.level - self.width / 2.0, self.level + self.width / 2.0)


PRESETS: dict[str, WindowPreset] = {
    "lung": WindowPreset("lung", -600.0, 1500.0, "1"),
    "mediastinum": WindowPreset("mediastinum", 40.0, 400.0, "2"),
    "bone": WindowPreset("bone", 400.0, 1800.0, "3"),
}


def apply_window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map HU to uint8 grey values for display with the given window (level, width)."""
    lo = level - width / 2.0
    scale = 255.0 / max(width, 1.0)
    out = (hu.astype(np.float32) - lo) * scale
    return np.clip(out, 0, 255).astype(np.uint8)
