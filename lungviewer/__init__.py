"""lungviewer — a desktop chest-CT viewer with an embedded CAD assistant.

Research software: the shipped models are trained on synthetic images (the LIDC twin,
with real LIDC-IDRI labels). Not for clinical use.
"""

__version__ = "0.1.0"
