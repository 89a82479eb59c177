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
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as DET
import numpy as np

from lungviewer.study.annotations import RATING_RANGES, Characteristics, ReaderMark, Roi
from lungviewer.study.lidc_db import RATING_NAMES

log = logging.getLogger(__name__)

ROOT_TAG = "LidcReadMessage"

#: How far into a file :func:`is_lidc_xml` looks for the root element.
_SNIFF_BYTES = 4096
_ROOT_RE = re.compile(rb"<\s*(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")

# Bounds on what one file may hold. Real LIDC files are under 3 MB with at most a few
# hundred marks of outlines of a few hundred points; past these the file is hostile or
# damaged, and reading it on would cost gigabytes (distance matrices, masks).
#: largest file parsed at all (bytes)
MAX_FILE_BYTES = 64 * 2**20
#: most marks (nodules, small nodules, non-nodules of all readers) in one file
MAX_MARKS = 2_000
#: most points of one outline; a longer outline is ignored
MAX_ROI_POINTS = 10_000
#: most points of all outlines of one file
MAX_TOTAL_POINTS = 1_000_000
#: pixel coordinates lie in [0, MAX_COORD) (the loader opens images up to 4096 pixels wide)
MAX_COORD = 4096
#: imageZposition within ±10 m
MAX_Z_MM = 10_000.0
#: problems listed one by one per file; the rest are counted
MAX_MESSAGES = 50


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


def _number(text: str, lo: float, hi: float) -> float:
    """``text`` as a finite number in [lo, hi); ValueError otherwise (also for 'inf', 'nan'
    and numbers too big for a float)."""
    v = float(text)
    if not (math.isfinite(v) and lo <= v < hi):
        raise ValueError(f"{text!r} is outside {lo:g}..{hi:g}")
    return v


def _point(el: ET.Element) -> tuple[int, int] | None:
    """(x, y) pixel indices of an edgeMap/locus, rounded; None when a coordinate is missing;
    ValueError when one is not a number inside [0, MAX_COORD)."""
    x, y = _text(el, "xCoord"), _text(el, "yCoord")
    if x is None or y is None:
        return None
    return round(_number(x, 0, MAX_COORD)), round(_number(y, 0, MAX_COORD))


class _Reader:
    """Parsing state for one file (collects messages, knows the file name)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self.more = 0  # problems past MAX_MESSAGES, counted only
        self.points = 0  # outline points read so far

    def warn(self, msg: str) -> None:
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(f"{self.path.name}: {msg}")
        else:
            self.more += 1

    def finish(self) -> list[str]:
        if self.more:
            self.messages.append(f"{self.path.name}: {self.more} more problem(s) of the same "
                                 "kinds")
            self.more = 0
        return self.messages

    def z_of(self, el: ET.Element, where: str) -> float | None:
        z = _text(el, "imageZposition")
        if z is None:
            self.warn(f"{where} has no imageZposition")
            return None
        try:
            return _number(z, -MAX_Z_MM, MAX_Z_MM)
        except ValueError:
            self.warn(f"{where} has an imageZposition that is not a number within "
                      f"±{MAX_Z_MM:g} mm ({z[:40]!r}); ignored")
            return None

    def characteristics(self, el: ET.Element, where: str) -> Characteristics | None:
        ch = _child(el, "characteristics")
        if ch is None:
            return None
        values: dict[str, int | None] = {}
        for name in RATING_NAMES:
            t = _text(ch, name)
            values[name] = None
            if t is None:
                continue
            lo, hi = RATING_RANGES[name]
            try:
                v = float(t)
            except ValueError:
                self.warn(f"{where}: rating {name} is not a number ({t[:40]!r}); ignored")
                continue
            if not (math.isfinite(v) and v == round(v) and lo <= v <= hi):
                self.warn(f"{where}: rating {name} {t[:40]} is not one of {lo}..{hi}; ignored")
                continue
            values[name] = int(v)
        if all(v is None for v in values.values()):
            return None
        return Characteristics.from_mapping(values)

    def roi(self, el: ET.Element, where: str) -> Roi | None:
        z = self.z_of(el, where)
        if z is None:
            return None
        maps = _children(el, "edgeMap")
        if len(maps) > MAX_ROI_POINTS:
            self.warn(f"{where} (z {z:g} mm) has {len(maps)} outline points, more than "
                      f"{MAX_ROI_POINTS} an outline can have; ROI ignored")
            return None
        pts, bad = [], 0
        for em in maps:
            try:
                p = _point(em)
            except ValueError:
                bad += 1
                continue
            if p is not None:
                pts.append(p)
        if bad:
            self.warn(f"{where} (z {z:g} mm) has {bad} edgeMap point(s) that are not pixel "
                      f"coordinates in 0..{MAX_COORD - 1}; ignored")
        if not pts:
            self.warn(f"{where} (z {z:g} mm) has no edgeMap points; ROI ignored")
            return None
        self.points += len(pts)
        if self.points > MAX_TOTAL_POINTS:
            raise LidcXmlError(f"{self.path}: holds more than {MAX_TOTAL_POINTS} outline "
                               "points, far more than a LIDC read; refused")
        inclusion = (_text(el, "inclusion") or "TRUE").upper() != "FALSE"
        return Roi(
            z_mm=z,
            points=np.asarray(pts, dtype=np.int32).reshape(-1, 2),
            inclusion=inclusion,
            sop_uid=_text(el, "imageSOP_UID"),
        )

    def nodule(self, el: ET.Element, reader: str, k: int) -> ReaderMark | None:
        nid = _text(el, "noduleID") or f"nodule {k}"
        where = f"{reader}, {nid[:60]}"
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
        where = f"{reader}, {nid[:60]}"
        z = self.z_of(el, where)
        pts = []
        for e in _children(el, "locus")[:1]:
            try:
                p = _point(e)
            except ValueError:
                self.warn(f"{where} has a locus that is not pixel coordinates in "
                          f"0..{MAX_COORD - 1}; mark ignored")
                return None
            if p is not None:
                pts.append(p)
        if z is None or not pts:
            if z is not None:
                self.warn(f"{where} has no locus point; mark ignored")
            return None
        roi = Roi(z_mm=z, points=np.asarray(pts, dtype=np.int32).reshape(-1, 2),
                  sop_uid=_text(el, "imageSOP_UID"))
        return ReaderMark(reader=reader, mark_id=nid, kind="non_nodule", rois=[roi])


#: LIDC's anonymised reader IDs are (signed) numbers, e.g. "-599886082", "867131873"
_ANONYMOUS_ID = re.compile(r"-?\d{1,12}")


def _reader_labels(sessions: list[ET.Element]) -> list[str]:
    """The sessions' servicingRadiologistID where every one is a distinct LIDC-style
    anonymous number, else "reader 1".."reader k" in session order: an ID that could be a
    person's name (or anything else) is never shown."""
    ids = [_text(s, "servicingRadiologistID") for s in sessions]
    if all(i is not None and _ANONYMOUS_ID.fullmatch(i) for i in ids) and \
            len(set(ids)) == len(ids):
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
        size = path.stat().st_size
    except OSError as exc:
        raise LidcXmlError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if size > MAX_FILE_BYTES:
        raise LidcXmlError(f"{path}: {size / 2**20:.0f} MB, far larger than a LIDC XML file "
                           f"(at most a few MB); refused")
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
    n_marks = sum(1 for sess in sessions for el in sess
                  if _local(el.tag) in ("unblindedReadNodule", "nonNodule"))
    if n_marks > MAX_MARKS:
        raise LidcXmlError(f"{path}: holds {n_marks} marks, more than the {MAX_MARKS} a LIDC "
                           "read of one series can have; refused")
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
    r.finish()
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
