"""The patient identifiers held by a folder's DICOM headers, and text with them removed.

``info`` prints what the loader found (descriptions, warnings, reasons); a file with
broken patient tags can carry a patient's name or ID into one of those (a mis-encoded
element read as part of another, a library's message quoting a value). Instead of trusting
every path that produces text, the command removes, from everything it prints, each value
the headers hold in a patient-identifying attribute. The raw bytes are read (no VR
validation, so a broken value is still found); values shorter than 3 characters are not
removed (they would blank ordinary words).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

#: (0010,xxxx) attributes that identify a patient: name, ID, issuer, birth date/time/name,
#: other IDs/names, mother's birth name, address, telephone numbers
PATIENT_TAGS = (0x00100010, 0x00100020, 0x00100021, 0x00100030, 0x00100032, 0x00101000,
                0x00101001, 0x00101005, 0x00101060, 0x00101040, 0x00102154)
REMOVED = "[patient identifier removed]"


def _tokens(raw: bytes) -> set[str]:
    text = raw.decode("utf-8", "replace").replace("\x00", " ")
    out = set()
    for whole in re.split(r"[\\=]", text):  # values and PN component groups
        whole = whole.strip()
        if len(whole) >= 3:
            out.add(whole)
        for part in re.split(r"[\^\s]+", whole):  # a name's components on their own
            if len(part) >= 3:
                out.add(part)
    return out


def patient_identifiers(files: Iterable[str | Path]) -> set[str]:
    """Every patient-identifying value (and name component) in the headers of ``files``."""
    import pydicom

    found: set[str] = set()
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True,
                                     specific_tags=list(PATIENT_TAGS))
        except Exception:  # noqa: BLE001 - not DICOM or unreadable: nothing to collect
            continue
        for tag in PATIENT_TAGS:
            elem = ds.get_item(tag, keep_deferred=True)
            if elem is None:
                continue
            value = elem.value
            if isinstance(value, bytes):
                found |= _tokens(value)
            elif value is not None:
                found |= _tokens(str(value).encode("utf-8", "replace"))
    return found


def scrub(text: str, identifiers: set[str]) -> str:
    """``text`` with every identifier replaced by :data:`REMOVED` (longest first)."""
    for ident in sorted(identifiers, key=len, reverse=True):
        if ident in text:
            text = text.replace(ident, REMOVED)
    return text


def scrub_all(value, identifiers: set[str]):
    """``value`` (JSON-like: dicts, lists, text, numbers) with :func:`scrub` applied to
    every text in it."""
    if isinstance(value, str):
        return scrub(value, identifiers)
    if isinstance(value, dict):
        return {k: scrub_all(v, identifiers) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_all(v, identifiers) for v in value]
    return value
