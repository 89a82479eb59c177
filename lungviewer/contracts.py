"""Names and formats that more than one package relies on, in one place.

Each constant here is a contract between a writer and a reader in different packages
(the twin writer and the DICOM loader, the demo cache and the self-test, ...). Change one
only together with every user, which an import of this module shows.
"""

from __future__ import annotations

import re

#: the LIDC scan whose synthetic twin is the embedded demo study and the self-test's study
DEMO_PATIENT = "LIDC-IDRI-0001"

#: the twin's own marker: written into ``SeriesDescription``/``ImageComments`` by
#: ``synth.writer`` and the only evidence ``study.dicom_series`` accepts for "synthetic"
#: (a real dual-energy "Synthetic Mono 70keV" series is not a twin)
TWIN_MARKER = "SYNTHETIC"
#: the twin's ``Manufacturer``
TWIN_MANUFACTURER = "lungviewer (synthetic)"

#: the phrase in a twin's ``ImageComments`` naming the LIDC series it was rendered from
TWIN_SOURCE_PREFIX = "source LIDC series "
_TWIN_SOURCE = re.compile(re.escape(TWIN_SOURCE_PREFIX) + r"([0-9.]+)")


def twin_source_text(series_uid: str) -> str:
    """The ``ImageComments`` fragment that names the LIDC series of a twin."""
    return f"{TWIN_SOURCE_PREFIX}{series_uid}"


def twin_source_uid(comments: str) -> str:
    """The LIDC SeriesInstanceUID a twin names in its ``ImageComments`` ('' if none)."""
    m = _TWIN_SOURCE.search(comments or "")
    return m.group(1) if m else ""


#: the file a finished demo twin folder holds (written last, so a half-written folder is
#: regenerated); the DICOM loader skips it as a companion file
DEMO_COMPLETE_MARKER = "COMPLETE"
