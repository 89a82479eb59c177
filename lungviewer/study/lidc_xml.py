"""Parse LIDC-IDRI reader XML files (``LidcReadMessage``) into :class:`ReaderMark` records.

A LIDC XML file holds the reads of one CT series: a ``ResponseHeader`` (with the
``SeriesInstanceUid`` and ``StudyInstanceUID``) and one ``readingSession`` per reader. Each
session lists the reader's

- ``unblindedReadNodule``: a nodule ≥ 3 mm (``noduleID``, the nine ``characteristics`` and
  one ``roi`` outline per slice) or a small nodule < 3 mm (a one-point ``roi``, no
  characteristics);
- ``nonNodule``: a finding the reader judged not to be a nodule (one ``locus`` point).

ROI points are ``(x, y)`` = (column, row) pixel indices (``edgeMap`` ``xCoord``/``yCoord``);
``imageZposition`` is the slice's ImagePositionPatient[2] in mm.

The files come in several namespace variants (``http://www.nih.gov``,
``http://www.nih.gov/idri``, none); tags are matched by their local name, so all read the
same. Parsing goes through ``defusedxml``: a file with entity declarations or external
references is refused (billion-laughs and XXE attacks), as is anything that is not a
well-formed ``LidcReadMessage`` — :class:`LidcXmlError` names the file and the problem.

Reference: Armato SG III et al., Medical Physics 38(2), 2011; "Data From LIDC-IDRI", TCIA.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as DET
import numpy as np

from lungviewer.study.annotations import Characteristics, ReaderMark, Roi
from lungviewer.study.lidc_db import RATING_NAMES

log = logging.getLogger(__name__)

ROOT_TAG = "LidcReadMessage"

#: How far into a file :func:`is_lidc_xml` looks for the root element.
_SNIFF_BYTES = 4096
_ROOT_RE = re.compile(rb"<\s*(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")


class LidcXmlError(ValueError):
    """A LIDC XML file that cannot be read; the message names the file and the problem."""


@dataclass
class LidcXml:
    """The content of one LIDC XML file."""

    path: Path
    series_uid: str
    study_uid: str
    marks: list[ReaderMark] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)  # one per readingSession, in file order
    messages: list[str] = field(default_factory=list)  # non-fatal problems, for the user


def _local(tag: object) -> str:
    """Tag name without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _text(el: ET.Element, name: str) -> str | None:
    c = _child(el, name)
    if c is None or c.text is None:
        return None
    t = c.text.strip()
    return t or None


def _point(el: ET.Element) -> tuple[int, int] | None:
    x, y = _text(el, "xCoord"), _text(el, "yCoord")
    if x is None or y is None:
        return None
    return int(round(float(x))), int(round(float(y)))


class _Reader:
    """Parsing state for one file (collects messages, knows the file name)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []

    def warn(self, msg: str) -> None:
        self.messages.append(f"{self.path.name}: {msg}")

    def z_of(self, el: ET.Element, where: str) -> float | None:
        z = _text(el, "imageZposition")
        if z is None:
            self.warn(f"{where} has no imageZposition")
            return None
        try:
            return float(z)
        except ValueError:
            self.warn(f"{where} has a non-numeric imageZposition {z!r}")
            return None

    def characteristics(self, el: ET.Element, where: str) -> Characteristics | None:
        ch = _child(el, "characteristics")
        if ch is None:
            return None
        values: dict[str, int | None] = {}
        for name in RATING_NAMES:
            t = _text(ch, name)
            if t is None:
                values[name] = None
                continue
            try:
                values[name] = int(round(float(t)))
            except ValueError:
                self.warn(f"{where}: rating {name} is not a number ({t!r}); ignored")
                values[name] = None
        if all(v is None for v in values.values()):
            return None
        return Characteristics.from_mapping(values)

    def roi(self, el: ET.Element, where: str) -> Roi | None:
        z = self.z_of(el, where)
        if z is None:
            return None
        pts = []
        for em in _children(el, "edgeMap"):
            try:
                p = _point(em)
            except ValueError:
                self.warn(f"{where} has a non-numeric edgeMap point; point ignored")
                continue
            if p is not None:
                pts.append(p)
        if not pts:
            self.warn(f"{where} (z {z:g} mm) has no edgeMap points; ROI ignored")
            return None
        inclusion = (_text(el, "inclusion") or "TRUE").upper() != "FALSE"
        return Roi(
            z_mm=z,
            points=np.asarray(pts, dtype=np.int32).reshape(-1, 2),
            inclusion=inclusion,
            sop_uid=_text(el, "imageSOP_UID"),
        )

    def nodule(self, el: ET.Element, reader: str, k: int) -> ReaderMark | None:
        nid = _text(el, "noduleID") or f"nodule {k}"
        where = f"{reader}, {nid}"
        chars = self.characteristics(el, where)
        rois = [r for i, e in enumerate(_children(el, "roi"))
                if (r := self.roi(e, f"{where}, ROI {i + 1}")) is not None]
        if not rois:
            self.warn(f"{where} has no usable ROI; mark ignored")
            return None
        small = chars is None and all(len(r.points) <= 1 for r in rois)
        return ReaderMark(reader=reader, mark_id=nid, kind="small_nodule" if small else "nodule",
                          rois=rois, characteristics=chars)

    def non_nodule(self, el: ET.Element, reader: str, k: int) -> ReaderMark | None:
        nid = _text(el, "nonNoduleID") or f"non-nodule {k}"
        where = f"{reader}, {nid}"
        z = self.z_of(el, where)
        loci = _children(el, "locus")
        try:
            pts = [p for e in loci if (p := _point(e)) is not None]
        except ValueError:
            pts = []
        if z is None or not pts:
            if z is not None:
                self.warn(f"{where} has no locus point; mark ignored")
            return None
        roi = Roi(z_mm=z, points=np.asarray(pts[:1], dtype=np.int32).reshape(-1, 2),
                  sop_uid=_text(el, "imageSOP_UID"))
        return ReaderMark(reader=reader, mark_id=nid, kind="non_nodule", rois=[roi])


def _reader_labels(sessions: list[ET.Element]) -> list[str]:
    """servicingRadiologistID where every session has a distinct one, else "reader N"."""
    ids = [_text(s, "servicingRadiologistID") for s in sessions]
    usable = all(i is not None and i.lower() not in ("anon", "anonymous", "removed") for i in ids)
    if usable and len(set(ids)) == len(ids):
        return [str(i) for i in ids]
    return [f"reader {k + 1}" for k in range(len(sessions))]


def parse_lidc_xml(path: str | Path) -> LidcXml:
    """Read one LIDC XML file (namespace-agnostic, entity-safe).

    Returns a :class:`LidcXml` with the series/study UIDs from the ``ResponseHeader`` and
    every reader's marks; the reader label is the session's ``servicingRadiologistID``
    (when each session has its own), else ``"reader N"`` in session order.

    Raises:
        LidcXmlError: the file is unreadable, not well-formed XML, declares entities or
            external references, or is not a ``LidcReadMessage``.
    """
    path = Path(path)
    try:
        tree = DET.parse(str(path))
    except defusedxml.DefusedXmlException as exc:
        raise LidcXmlError(
            f"{path}: refused to read this XML file: it declares entities or external "
            f"references ({type(exc).__name__}), which LIDC files never do") from exc
    except ET.ParseError as exc:
        raise LidcXmlError(f"{path}: not well-formed XML ({exc})") from exc
    except OSError as exc:
        raise LidcXmlError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    root = tree.getroot()
    if _local(root.tag) != ROOT_TAG:
        raise LidcXmlError(
            f"{path}: not a LIDC CT read: the root element is <{_local(root.tag)}>, "
            f"expected <{ROOT_TAG}>")
    r = _Reader(path)
    header = _child(root, "ResponseHeader")
    series_uid = study_uid = ""
    if header is None:
        r.warn("no ResponseHeader: the series this file belongs to is unknown")
    else:
        series_uid = _text(header, "SeriesInstanceUid") or _text(header, "SeriesInstanceUID") or ""
        study_uid = _text(header, "StudyInstanceUID") or _text(header, "StudyInstanceUid") or ""
        if not series_uid:
            r.warn("the ResponseHeader has no SeriesInstanceUid")
    sessions = _children(root, "readingSession")
    if not sessions:
        r.warn("no readingSession: the file holds no reads")
    readers = _reader_labels(sessions)
    marks: list[ReaderMark] = []
    for sess, reader in zip(sessions, readers):
        k = 0
        for el in sess:
            name = _local(el.tag)
            if name == "unblindedReadNodule":
                k += 1
                m = r.nodule(el, reader, k)
            elif name == "nonNodule":
                k += 1
                m = r.non_nodule(el, reader, k)
            else:
                continue
            if m is not None:
                marks.append(m)
    for msg in r.messages:
        log.warning("%s", msg)
    return LidcXml(path=path, series_uid=series_uid, study_uid=study_uid, marks=marks,
                   readers=readers, messages=r.messages)


def is_lidc_xml(path: str | Path) -> bool:
    """Cheap check (first few kB only): is the root element a ``LidcReadMessage``?"""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError:
        return False
    i = 0
    while True:
        j = head.find(b"<", i)
        if j < 0 or j + 1 >= len(head):
            return False
        nxt = head[j + 1:j + 2]
        if nxt == b"?":
            e = head.find(b"?>", j)
            if e < 0:
                return False
            i = e + 2
        elif head.startswith(b"<!--", j):
            e = head.find(b"-->", j)
            if e < 0:
                return False
            i = e + 3
        elif nxt == b"!":  # DOCTYPE: LIDC files have none, but let the parser decide
            e = head.find(b">", j)
            if e < 0:
                return False
            i = e + 1
        else:
            m = _ROOT_RE.match(head, j)
            return bool(m) and m.group(1) == ROOT_TAG.encode()


def find_lidc_xml(folder: str | Path, max_depth: int = 3) -> list[Path]:
    """LIDC XML files beside or inside a study folder.

    Looks in ``folder`` and its subfolders (down to ``max_depth`` levels) and, non-recursively,
    in ``folder``'s parent (XML "beside" the DICOM folder). A file given instead of a folder
    means its folder. Only ``*.xml`` files whose root element is ``LidcReadMessage`` are
    returned (the root is sniffed from the first few kB, nothing else is parsed); other XML
    is skipped. Sorted, without duplicates.
    """
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        return []
    found: set[Path] = set()

    def scan(d: Path, depth: int) -> None:
        try:
            entries = list(d.iterdir())
        except OSError:
            return
        for e in entries:
            try:
                if e.is_file() and e.suffix.lower() == ".xml":
                    if is_lidc_xml(e):
                        found.add(e.resolve())
                elif depth > 0 and e.is_dir() and not e.is_symlink():
                    scan(e, depth - 1)
            except OSError:
                continue

    scan(folder, max_depth)
    parent = folder.resolve().parent
    if parent != folder.resolve():
        scan(parent, 0)
    return sorted(found)
