"""The reading of one study as plain data: CAD marks with the reader's verdict, box scores,
measurements, segmented nodules with their Lung-RADS suggestion and the reader's note.

Qt-free and numpy-light; saved as JSON (never pickle) by :mod:`lungviewer.reading.store`
and exported as DICOM SR/SEG and PDF by :mod:`lungviewer.reading.export_dicom` and
:mod:`lungviewer.reading.report_pdf`.

Voxel indices are ``(slice, row, col)`` = ``(z, y, x)`` of the loaded
:class:`~lungviewer.study.volume.Volume` (slice 0 = lowest position along the normal);
boxes are ``(slice, row0, col0, row1, col1)``, 0-based, ends exclusive; lengths in mm,
volumes in mm³.

JSON layout (``format`` = ``lungviewer-reading``, ``schema_version`` = 1)::

    {"format", "schema_version", "study_uid", "series_uid", "synthetic", "app_version",
     "created", "modified", "note",
     "cad_marks": [{"id", "slice", "row", "col", "diameter_mm", "score", "class", "status"}],
     "box_scores": [{"box", "malignancy" (5 probabilities, levels 1..5), "malignancy_expected",
                     "disease_names", "disease_probs", "disease_source",
                     "nodule_probability", "model_version"}],
     "measurements": [Measurement.to_dict(), ...],
     "nodules": [{"id", "box", "volume_mm3", "long_axis_mm", "short_axis_mm",
                  "mean_diameter_mm", "mean_hu", "type", "lung_rads": {"category", "rule"},
                  "axis_slice", "long_axis_points", "short_axis_points", "status",
                  "source", "cad_mark_id", "note",
                  "mask": {"offset", "shape", "encoding", "data", "voxels"} | null}]}

The mask is a boolean sub-block of the volume at ``offset`` (z0, y0, x0), stored as
``numpy.packbits`` of the C-order array, zlib-compressed, base64 text.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from lungviewer import __version__

if TYPE_CHECKING:  # pragma: no cover
    from lungviewer.reading.measurements import Measurement

FORMAT = "lungviewer-reading"
SCHEMA_VERSION = 1
STATUSES = ("unreviewed", "accepted", "rejected")
MASK_ENCODING = "packbits-zlib-base64"
#: a stored mask larger than this many voxels is refused (a nodule block, not a volume)
MAX_MASK_VOXELS = 64_000_000
#: what one reading may hold (the CAD keeps at most 100 findings per study; a reader's
#: study has tens of measurements): more is refused with a message, never worked through.
#: An exported mark costs about 35 ms in highdicom, so 200 accepted marks export in ~7 s.
MAX_ITEMS = {"cad_marks": 200, "box_scores": 500, "measurements": 500, "nodules": 100}
#: the longest note or label (characters)
MAX_TEXT_CHARS = 20_000
#: a saved reading file larger than this is not parsed (a reading with 200 nodule masks is a
#: few MB)
MAX_READING_BYTES = 32 * 1024 * 1024
#: the deepest JSON nesting a reading has is 6 (reading, list, nodule, mask/points, pair);
#: deeper values are cut out before parsing (Python's json recurses per level)
MAX_JSON_DEPTH = 16
#: JSON values (commas outside strings) a reading file may hold before it is parsed
MAX_JSON_ITEMS = 1_000_000


class ReadingLimitError(ValueError):
    """The reading holds more than :data:`MAX_ITEMS` / :data:`MAX_TEXT_CHARS` allow."""


def _limit_message(what: str, n: int, limit: int) -> str:
    names = {"cad_marks": "CAD marks", "box_scores": "box scores",
             "measurements": "measurements", "nodules": "nodules"}
    return (f"the reading holds {n} {names.get(what, what)}, more than the {limit} a reading "
            "may hold")


def check_limits(reading: Reading) -> None:
    """ReadingLimitError naming the first list or text over its bound (exports call this
    before any per-item work)."""
    for key, limit in MAX_ITEMS.items():
        n = len(getattr(reading, key))
        if n > limit:
            raise ReadingLimitError(_limit_message(key, n, limit))
    if len(reading.note) > MAX_TEXT_CHARS:
        raise ReadingLimitError(f"the reading's note has {len(reading.note)} characters, more "
                                f"than the {MAX_TEXT_CHARS} a note may hold")
    for n in reading.nodules:
        if len(n.note) > MAX_TEXT_CHARS:
            raise ReadingLimitError(f"nodule {n.id}'s note has {len(n.note)} characters, more "
                                    f"than the {MAX_TEXT_CHARS} a note may hold")
    for m in reading.measurements:
        if len(m.label) > MAX_TEXT_CHARS:
            raise ReadingLimitError(f"a measurement's label has {len(m.label)} characters, "
                                    f"more than the {MAX_TEXT_CHARS} a label may hold")


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _blank_strings(data: bytes) -> bytes:
    """``data`` with every JSON string's content replaced by as many spaces (same length, so
    positions map 1:1; brackets and commas inside strings no longer count)."""
    return _STRING.sub(lambda m: b'"' + b" " * (len(m.group()) - 2) + b'"', data)


def _bounded_json(data: bytes, problems: list[str] | None) -> Any:
    """``json.loads`` of a reading file with its size, item count and depth bounded before
    parsing. A value nested deeper than :data:`MAX_JSON_DEPTH` inside a record is cut out
    (replaced by null, so only that record fails) when ``problems`` collects what was cut;
    otherwise it is refused. ValueError for anything that cannot be parsed."""
    if len(data) > MAX_READING_BYTES:
        raise ValueError(f"the file is {len(data) / 2 ** 20:.0f} MB, more than the "
                         f"{MAX_READING_BYTES // 2 ** 20} MB a reading may be")
    blank = _blank_strings(data)
    if blank.count(b",") > MAX_JSON_ITEMS:
        raise ValueError(f"the file holds more than {MAX_JSON_ITEMS} values")
    code = np.frombuffer(blank, np.uint8)
    step = (np.isin(code, (ord("["), ord("{"))).astype(np.int32)
            - np.isin(code, (ord("]"), ord("}"))).astype(np.int32))
    for _ in range(100):
        depth = np.cumsum(step)
        too_deep = np.flatnonzero(depth > MAX_JSON_DEPTH)
        if not len(too_deep):
            break
        level = 4  # reading {, list [, record {, a field's value: 4
        if problems is None or depth[too_deep[0]] <= level:
            raise ValueError(f"the file nests deeper than {MAX_JSON_DEPTH} levels")
        i = int(too_deep[0])
        opens = np.flatnonzero((step[:i] == 1) & (depth[:i] == level))
        if not len(opens):
            raise ValueError(f"the file nests deeper than {MAX_JSON_DEPTH} levels")
        o = int(opens[-1])
        after = np.flatnonzero(depth[o:] < level)
        if not len(after):
            raise ValueError("the file ends inside a nested value (truncated)")
        c = o + int(after[0])  # the closing bracket of the value opened at o
        blank = blank[:o] + b"null" + b" " * (c - o + 1 - 4) + blank[c + 1:]
        data = data[:o] + b"null" + b" " * (c - o + 1 - 4) + data[c + 1:]
        step[o:c + 1] = 0
        problems.append(f"a value nested deeper than {MAX_JSON_DEPTH} levels was cut out")
    else:
        raise ValueError(f"the file nests deeper than {MAX_JSON_DEPTH} levels in too many "
                         "places")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a lungviewer reading: the file is not valid JSON ({exc})"
                         ) from exc
    except (RecursionError, MemoryError) as exc:  # bounded above; never a traceback
        raise ValueError(f"not a lungviewer reading: the file could not be parsed "
                         f"({type(exc).__name__})") from exc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Fields:
    """Reads typed fields out of one JSON object, naming the record and field on error."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise ValueError(  # noqa: TRY004 - bad file content is a ValueError here
                f"{where}: expected an object, got {type(obj).__name__}")
        self.obj, self.where = obj, where

    def _get(self, key: str, default: Any, required: bool) -> Any:
        if key not in self.obj or self.obj[key] is None:
            if required:
                raise ValueError(f"{self.where}: '{key}' is missing")
            return default
        return self.obj[key]

    def num(self, key: str, default: float | None = None, required: bool = True
            ) -> float | None:
        v = self._get(key, default, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{self.where}: '{key}' must be a finite number, got {v!r}")
        return float(v)

    def int(self, key: str, default: int | None = None, required: bool = True) -> int | None:
        v = self._get(key, default, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(  # noqa: TRY004
                f"{self.where}: '{key}' must be an integer, got {v!r}")
        return v

    def str(self, key: str, default: str = "", required: bool = False) -> str:
        v = self._get(key, default, required)
        if not isinstance(v, str):
            raise ValueError(  # noqa: TRY004
                f"{self.where}: '{key}' must be text, got {type(v).__name__}")
        return v

    def box(self, key: str = "box") -> tuple[int, int, int, int, int]:
        v = self._get(key, None, True)
        if (not isinstance(v, list) or len(v) != 5
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
            raise ValueError(f"{self.where}: '{key}' must be five integers "
                             "(slice, row0, col0, row1, col1)")
        return _check_box(v, self.where)

    def nums(self, key: str, n: int | None = None) -> list[float]:
        v = self._get(key, [], False)
        if not isinstance(v, list) or (n is not None and len(v) != n) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in v):
            size = f"{n} " if n is not None else ""
            raise ValueError(f"{self.where}: '{key}' must be a list of {size}finite numbers")
        return [float(x) for x in v]

    def status(self, default: str) -> str:
        s = self.str("status", default)
        if s not in STATUSES:
            raise ValueError(f"{self.where}: status {s!r} is not one of {', '.join(STATUSES)}")
        return s


def _check_box(v, where: str = "box") -> tuple[int, int, int, int, int]:
    k, r0, c0, r1, c1 = (int(x) for x in v)
    if k < 0 or r0 < 0 or c0 < 0 or r1 <= r0 or c1 <= c0:
        raise ValueError(f"{where}: box {tuple(v)} is empty or negative "
                         "(slice, row0, col0, row1, col1 with row1 > row0, col1 > col0)")
    return k, r0, c0, r1, c1


# -- records ------------------------------------------------------------------------------------
@dataclass
class CadMark:
    """One CAD finding and the reader's verdict on it (rejected marks are kept).

    ``score`` is the finding's calibrated probability of a nodule or mass; ``cls`` its kind
    ("nodule" or "mass"). The size comes from the finding's own segmentation when
    ``extent`` (z0, z1, y0, y1, x0, x1 voxels, end-exclusive) is set; ``malignancy`` is the
    expected malignancy level 1..5 (0: not computed, below every operating point)."""

    id: str
    slice: int
    row: float
    col: float
    diameter_mm: float
    score: float
    cls: str = "nodule"
    status: str = "unreviewed"
    long_axis_mm: float = 0.0
    short_axis_mm: float = 0.0
    volume_mm3: float = 0.0
    extent: tuple[int, int, int, int, int, int] | None = None
    malignancy: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CAD mark status {self.status!r} is not one of "
                             f"{', '.join(STATUSES)}")
        if self.extent is not None:
            e = tuple(int(v) for v in self.extent)
            if len(e) != 6 or e[0] >= e[1] or e[2] >= e[3] or e[4] >= e[5] or min(e) < 0:
                raise ValueError(f"CAD mark extent {self.extent!r} is not six voxel bounds "
                                 "z0 < z1, y0 < y1, x0 < x1")
            self.extent = e  # type: ignore[assignment]

    @classmethod
    def from_finding(cls, finding, mark_id: str) -> CadMark:
        """From a :class:`lungviewer.cad.findings.Finding` (or anything with its fields)."""
        return cls(mark_id, int(finding.slice), float(finding.row), float(finding.col),
                   float(finding.diameter_mm), float(finding.score),
                   str(getattr(finding, "kind", "nodule")),
                   long_axis_mm=float(getattr(finding, "long_axis_mm", 0.0)),
                   short_axis_mm=float(getattr(finding, "short_axis_mm", 0.0)),
                   volume_mm3=float(getattr(finding, "volume_mm3", 0.0)),
                   extent=getattr(finding, "extent", None),
                   malignancy=float(getattr(finding, "malignancy", 0.0)))

    def to_dict(self) -> dict:
        d = {"id": self.id, "slice": self.slice, "row": round(self.row, 2),
             "col": round(self.col, 2), "diameter_mm": round(self.diameter_mm, 3),
             "score": round(self.score, 5), "class": self.cls, "status": self.status}
        if self.extent is not None:
            d.update(long_axis_mm=round(self.long_axis_mm, 2),
                     short_axis_mm=round(self.short_axis_mm, 2),
                     volume_mm3=round(self.volume_mm3, 1), extent=list(self.extent))
        if self.malignancy:
            d["malignancy"] = round(self.malignancy, 3)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "CAD mark") -> CadMark:
        f = _Fields(d, where)
        ext = d.get("extent")
        if ext is not None and (not isinstance(ext, list) or len(ext) != 6 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in ext)):
            raise ValueError(f"{where}: 'extent' must be a list of 6 integers")
        return cls(f.str("id", required=True), f.int("slice"), f.num("row"), f.num("col"),
                   f.num("diameter_mm"), f.num("score"), f.str("class", "nodule"),
                   f.status("unreviewed"), f.num("long_axis_mm", 0.0, required=False),
                   f.num("short_axis_mm", 0.0, required=False),
                   f.num("volume_mm3", 0.0, required=False),
                   tuple(ext) if ext is not None else None,
                   f.num("malignancy", 0.0, required=False))


def model_version(manifest: dict | None) -> str:
    """The CAD models' version: the manifest's ``version`` when it has one, else the short
    sha256 of the multi-task and detector weights it lists (they give the box scores)."""
    if not manifest:
        return "unknown"
    if manifest.get("version"):
        return str(manifest["version"])
    models = manifest.get("models", {})
    parts = [f"{name} {str(models[name].get('sha256', ''))[:12]}"
             for name in ("multitask", "detector") if name in models]
    return ", ".join(parts) or "unknown"


@dataclass
class BoxScore:
    """The CAD scores of one box (what the CAD panel shows), with the models' version."""

    box: tuple[int, int, int, int, int]
    malignancy: list[float]  # probabilities of malignancy levels 1..5
    disease_names: list[str]
    disease_probs: list[float]
    nodule_probability: float | None  # the CAD finding's calibrated probability; None: none
    model_version: str = "unknown"
    disease_source: str = ""
    #: why the disease head's output is not to be read as a class (empty: it is reliable)
    disease_note: str = ""

    def __post_init__(self) -> None:
        self.box = _check_box(self.box)
        if len(self.malignancy) != 5:
            raise ValueError(f"box score: {len(self.malignancy)} malignancy probabilities, "
                             "expected 5 (levels 1..5)")
        if len(self.disease_names) != len(self.disease_probs):
            raise ValueError("box score: disease names and probabilities differ in number")

    @property
    def malignancy_expected(self) -> float:
        return float(np.dot(self.malignancy, np.arange(1, 6)))

    @classmethod
    def from_scores(cls, scores, manifest: dict | None = None, disease_source: str = "",
                    disease_note: str = "") -> BoxScore:
        """From :class:`lungviewer.cad.engine.BoxScores`; ``manifest`` is the engine's,
        ``disease_note`` the engine's :meth:`~lungviewer.cad.engine.CadEngine.
        disease_assessment` ``why`` when the head is not reliable."""
        return cls(tuple(int(v) for v in scores.box),  # type: ignore[arg-type]
                   [float(p) for p in scores.malignancy_probs], list(scores.disease_names),
                   [float(p) for p in scores.disease_probs],
                   None if scores.nodule_prob is None else float(scores.nodule_prob),
                   model_version(manifest), disease_source, disease_note)

    def to_dict(self) -> dict:
        return {"box": list(self.box), "malignancy": [round(p, 5) for p in self.malignancy],
                "malignancy_expected": round(self.malignancy_expected, 4),
                "disease_names": list(self.disease_names),
                "disease_probs": [round(p, 5) for p in self.disease_probs],
                "disease_source": self.disease_source, "disease_note": self.disease_note,
                "nodule_probability": (None if self.nodule_probability is None
                                       else round(self.nodule_probability, 5)),
                "model_version": self.model_version}

    @classmethod
    def from_dict(cls, d: Any, where: str = "box score") -> BoxScore:
        f = _Fields(d, where)
        names = d.get("disease_names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: 'disease_names' must be a list of text")
        return cls(f.box(), f.nums("malignancy", 5), names, f.nums("disease_probs", len(names)),
                   f.num("nodule_probability", None, required=False),
                   f.str("model_version", "unknown"),
                   f.str("disease_source"), f.str("disease_note"))


@dataclass
class PackedMask:
    """A boolean (z, y, x) sub-block of the volume at ``offset``, packed for JSON."""

    offset: tuple[int, int, int]
    shape: tuple[int, int, int]
    data: str  # base64 of zlib(packbits(mask.ravel()))
    voxels: int  # number of True voxels (a check on decoding)

    @classmethod
    def from_array(cls, mask: np.ndarray, offset=(0, 0, 0)) -> PackedMask:
        m = np.asarray(mask, dtype=bool)
        if m.ndim != 3:
            raise ValueError(f"a nodule mask must be 3-D (z, y, x), got shape {m.shape}")
        raw = zlib.compress(np.packbits(m.ravel()).tobytes(), 6)
        off = tuple(int(v) for v in offset)
        return cls(off, tuple(int(v) for v in m.shape),  # type: ignore[arg-type]
                   base64.b64encode(raw).decode("ascii"), int(m.sum()))

    def to_array(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        try:
            raw = zlib.decompress(base64.b64decode(self.data, validate=True), bufsize=n // 8 + 1)
        except (binascii.Error, zlib.error, ValueError) as exc:
            raise ValueError(f"nodule mask: the packed bits cannot be decoded ({exc})") from exc
        bits = np.unpackbits(np.frombuffer(raw, np.uint8), count=n) if n else np.zeros(0, np.uint8)
        if bits.size != n:
            raise ValueError(f"nodule mask: {bits.size} bits for a block of {n} voxels")
        m = bits.astype(bool).reshape(self.shape)
        if int(m.sum()) != self.voxels:
            raise ValueError("nodule mask: the decoded voxel count does not match")
        return m

    def full(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The mask placed in a volume of ``shape`` (z, y, x); parts outside are cut off."""
        out = np.zeros(shape, dtype=bool)
        block = self.to_array()
        src, dst = [], []
        for o, s, full in zip(self.offset, block.shape, shape):
            a, b = max(o, 0), min(o + s, full)
            if b <= a:
                return out
            dst.append(slice(a, b))
            src.append(slice(a - o, b - o))
        out[tuple(dst)] = block[tuple(src)]
        return out

    def to_dict(self) -> dict:
        return {"offset": list(self.offset), "shape": list(self.shape),
                "encoding": MASK_ENCODING, "data": self.data, "voxels": self.voxels}

    @classmethod
    def from_dict(cls, d: Any, where: str = "nodule mask") -> PackedMask:
        f = _Fields(d, where)
        if f.str("encoding", MASK_ENCODING) != MASK_ENCODING:
            raise ValueError(f"{where}: unknown encoding {d.get('encoding')!r} "
                             f"(expected {MASK_ENCODING})")
        off, shp = d.get("offset"), d.get("shape")
        for name, v, lo in (("offset", off, -(2**31)), ("shape", shp, 0)):
            if (not isinstance(v, list) or len(v) != 3
                    or not all(isinstance(x, int) and not isinstance(x, bool) and x >= lo
                               for x in v)):
                raise ValueError(f"{where}: '{name}' must be three integers (z, y, x)")
        if int(np.prod(shp)) > MAX_MASK_VOXELS:
            raise ValueError(f"{where}: a block of {shp} voxels is too large for a nodule")
        mask = cls(tuple(off), tuple(shp), f.str("data", required=True),  # type: ignore[arg-type]
                   f.int("voxels"))
        try:
            mask.to_array()  # decoded once here, so a damaged file fails on loading
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        return mask


@dataclass
class NoduleRecord:
    """A segmented nodule: measurements, type, Lung-RADS suggestion, its mask and a note.

    ``source`` is ``"box"`` (segmented from a box the reader drew) or ``"cad"`` (from a CAD
    mark, ``cad_mark_id``); ``status`` says whether it goes into the exports (accepted)."""

    id: str
    box: tuple[int, int, int, int, int]
    volume_mm3: float
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    mean_hu: float
    type: str
    lung_rads: dict = field(default_factory=dict)  # {"category": str, "rule": str}
    axis_slice: int | None = None
    mask: PackedMask | None = None
    note: str = ""
    status: str = "accepted"
    source: str = "box"
    cad_mark_id: str | None = None
    #: end points ((row, col), (row, col)) of the long and short axis on ``axis_slice``
    long_axis_points: list | None = None
    short_axis_points: list | None = None

    def __post_init__(self) -> None:
        self.box = _check_box(self.box, f"nodule {self.id}")
        if self.status not in STATUSES:
            raise ValueError(f"nodule status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def category(self) -> str:
        return str(self.lung_rads.get("category", ""))

    @classmethod
    def from_segmentation(cls, seg, nodule_id: str = "", box=None, note: str = "",
                          source: str = "box", cad_mark_id: str | None = None) -> NoduleRecord:
        """From :class:`lungviewer.reading.volumetry.NoduleSegmentation` (``as_dict()``,
        ``mask`` at ``offset``)."""
        d = seg.as_dict()
        b = box if box is not None else d.get("box")
        if b is None:
            raise ValueError("the nodule segmentation names no box")
        lr = d.get("lung_rads") or {}
        mask = getattr(seg, "mask", None)
        packed = (PackedMask.from_array(mask, getattr(seg, "offset", (0, 0, 0)))
                  if mask is not None else None)
        axis = d.get("axis_slice")
        b = tuple(int(v) for v in b)
        return cls(nodule_id, b, float(d["volume_mm3"]),  # type: ignore[arg-type]
                   float(d["long_axis_mm"]), float(d["short_axis_mm"]),
                   float(d.get("mean_diameter_mm",
                               (d["long_axis_mm"] + d["short_axis_mm"]) / 2)),
                   float(d["mean_hu"]), str(d["type"]),
                   {"category": str(lr.get("category", "")), "rule": str(lr.get("rule", ""))},
                   int(axis) if axis is not None else None, packed, note, "accepted", source,
                   cad_mark_id, _points(d.get("long_axis_points")),
                   _points(d.get("short_axis_points")))

    def to_dict(self) -> dict:
        return {"id": self.id, "box": list(self.box), "volume_mm3": round(self.volume_mm3, 3),
                "long_axis_mm": round(self.long_axis_mm, 3),
                "short_axis_mm": round(self.short_axis_mm, 3),
                "mean_diameter_mm": round(self.mean_diameter_mm, 3),
                "mean_hu": round(self.mean_hu, 2), "type": self.type,
                "lung_rads": dict(self.lung_rads), "axis_slice": self.axis_slice,
                "status": self.status, "source": self.source, "cad_mark_id": self.cad_mark_id,
                "note": self.note, "long_axis_points": self.long_axis_points,
                "short_axis_points": self.short_axis_points,
                "mask": self.mask.to_dict() if self.mask is not None else None}

    @classmethod
    def from_dict(cls, d: Any, where: str = "nodule") -> NoduleRecord:
        f = _Fields(d, where)
        lr = d.get("lung_rads") or {}
        if not isinstance(lr, dict) or not all(isinstance(v, str) for v in lr.values()):
            raise ValueError(f"{where}: 'lung_rads' must be an object of text "
                             "({category, rule})")
        mark = d.get("cad_mark_id")
        if mark is not None and not isinstance(mark, str):
            raise ValueError(f"{where}: 'cad_mark_id' must be text")
        return cls(f.str("id", required=True), f.box(), f.num("volume_mm3"),
                   f.num("long_axis_mm"), f.num("short_axis_mm"),
                   f.num("mean_diameter_mm"), f.num("mean_hu"), f.str("type", required=True),
                   dict(lr), f.int("axis_slice", None, required=False),
                   PackedMask.from_dict(d["mask"], f"{where} mask")
                   if d.get("mask") is not None else None,
                   f.str("note"), f.status("accepted"), f.str("source", "box"), mark,
                   _points(d.get("long_axis_points"), where),
                   _points(d.get("short_axis_points"), where))


def _points(v: Any, where: str = "nodule") -> list | None:
    """Two (row, col) end points, or None."""
    if v is None:
        return None
    try:
        pts = [[float(a), float(b)] for a, b in v]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: axis end points must be two (row, col) pairs") from exc
    if len(pts) != 2 or not all(math.isfinite(x) for p in pts for x in p):
        raise ValueError(f"{where}: axis end points must be two finite (row, col) pairs")
    return pts


def _measurement_from_dict(d: Any, where: str):
    from lungviewer.reading.measurements import Measurement

    try:
        return Measurement.from_dict(d)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where}: not a measurement ({type(exc).__name__}: {exc})") from exc


# -- the reading ---------------------------------------------------------------------------------
@dataclass
class Reading:
    """Everything the reader found or decided in one study (one CT series)."""

    study_uid: str
    series_uid: str = ""
    synthetic: bool = False
    app_version: str = __version__
    created: str = field(default_factory=_now)
    modified: str = field(default_factory=_now)
    note: str = ""
    cad_marks: list[CadMark] = field(default_factory=list)
    box_scores: list[BoxScore] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    nodules: list[NoduleRecord] = field(default_factory=list)
    #: the follow-up comparison with the prior (``followup.compare.Comparison.as_dict()``:
    #: the prior's identity, the pairs with their verdicts, the registration); None: none.
    #: Saved only when set, so older readings and older lungviewers are unaffected.
    followup: dict | None = None
    #: what the reading was made on (:mod:`lungviewer.reading.content`): a hash of the
    #: slices' SOPInstanceUIDs and positions, and the SOPInstanceUID of each slice index
    #: ("" / []: a reading saved before these were kept)
    content_key: str = ""
    slice_uids: list[str] = field(default_factory=list)

    @classmethod
    def for_volume(cls, volume) -> Reading:
        """An empty reading of a loaded :class:`~lungviewer.study.volume.Volume`."""
        from .content import content_key

        return cls(volume.study_uid, volume.series_uid, bool(volume.is_synthetic),
                   content_key=content_key(volume), slice_uids=list(volume.sop_uids or []))

    def touch(self) -> None:
        self.modified = _now()

    @property
    def is_empty(self) -> bool:
        return not (self.cad_marks or self.box_scores or self.measurements or self.nodules
                    or self.note)

    # -- CAD marks --------------------------------------------------------------------------
    def set_cad_marks(self, findings) -> list[CadMark]:
        """Replace the marks by ``findings`` (CAD ``Finding`` objects or :class:`CadMark`),
        highest score first. A new mark at the place of an earlier one (same slice ±1,
        centres within max(larger diameter in mm, 4) pixels: chest CT pixels are ≤ 1 mm, so
        at least one diameter) keeps the earlier verdict and id, so a re-scan does not undo
        the reader's review."""
        old = list(self.cad_marks)
        used: set[str] = set()
        new: list[CadMark] = []
        n = 1 + max((_num_of(m.id) for m in old), default=0)
        # the CAD keeps at most 100 findings; more are never worked through
        by_slice: dict[int, list[CadMark]] = {}  # the earlier marks near a slice: linear work
        order = {id(m): i for i, m in enumerate(old)}
        for m in old:
            by_slice.setdefault(int(m.slice), []).append(m)
        new_ids: set[str] = set()
        for f in sorted(findings, key=lambda f: -float(f.score))[:MAX_ITEMS["cad_marks"]]:
            mark = f if isinstance(f, CadMark) else CadMark.from_finding(f, "")
            near = sorted((m for k in (mark.slice - 1, mark.slice, mark.slice + 1)
                           for m in by_slice.get(int(k), ())), key=lambda m: order[id(m)])
            prev = next((m for m in near if m.id not in used
                         and math.hypot(m.row - mark.row, m.col - mark.col)
                         <= max(m.diameter_mm, mark.diameter_mm, 4.0)), None)
            if prev is not None:
                used.add(prev.id)
                mark.id, mark.status = prev.id, prev.status
            elif not mark.id or mark.id in new_ids:
                mark.id, n = f"c{n}", n + 1
            new_ids.add(mark.id)
            new.append(mark)
        self.cad_marks = new
        self.touch()
        return new

    def mark(self, mark_id: str) -> CadMark:
        for m in self.cad_marks:
            if m.id == mark_id:
                return m
        raise KeyError(f"no CAD mark {mark_id!r} in this reading")

    def set_status(self, mark_id: str, status: str) -> CadMark:
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        m = self.mark(mark_id)
        m.status = status
        for nod in self.nodules:  # a nodule segmented from the mark follows its verdict
            if nod.cad_mark_id == mark_id:
                nod.status = "rejected" if status == "rejected" else "accepted"
        self.touch()
        return m

    def accept(self, mark_id: str) -> CadMark:
        return self.set_status(mark_id, "accepted")

    def reject(self, mark_id: str) -> CadMark:
        return self.set_status(mark_id, "rejected")

    def accepted_marks(self) -> list[CadMark]:
        return [m for m in self.cad_marks if m.status == "accepted"]

    # -- box scores -------------------------------------------------------------------------
    def add_box_score(self, score: BoxScore) -> BoxScore:
        """Add the scores of a box, replacing earlier scores of the same box."""
        kept = [s for s in self.box_scores if s.box != score.box]
        self._room("box_scores", len(kept) + 1)
        self.box_scores = kept + [score]
        self.touch()
        return score

    def score_for(self, box) -> BoxScore | None:
        """The box scores of ``box``: the same box, else the latest box on the same slice
        whose centre lies inside it."""
        box = tuple(int(v) for v in box)
        for s in reversed(self.box_scores):
            if s.box == box:
                return s
        k, r0, c0, r1, c1 = box
        for s in reversed(self.box_scores):
            rc, cc = (s.box[1] + s.box[3]) / 2, (s.box[2] + s.box[4]) / 2
            if s.box[0] == k and r0 <= rc < r1 and c0 <= cc < c1:
                return s
        return None

    # -- nodules ----------------------------------------------------------------------------
    def add_nodule(self, nodule: NoduleRecord) -> NoduleRecord:
        """Add a nodule; one with the id or the box of an earlier nodule replaces it (the
        note and verdict of the earlier one are kept when the new one has none)."""
        prev = next((x for x in self.nodules if (nodule.id and x.id == nodule.id)
                     or x.box == nodule.box), None)
        if prev is not None:
            nodule.id = prev.id
            nodule.note = nodule.note or prev.note
            self.nodules[self.nodules.index(prev)] = nodule
        else:
            self._room("nodules", len(self.nodules) + 1)
            if not nodule.id or any(x.id == nodule.id for x in self.nodules):
                nodule.id = f"n{1 + max((_num_of(x.id) for x in self.nodules), default=0)}"
            self.nodules.append(nodule)
        self.touch()
        return nodule

    def nodule(self, nodule_id: str) -> NoduleRecord:
        for x in self.nodules:
            if x.id == nodule_id:
                return x
        raise KeyError(f"no nodule {nodule_id!r} in this reading")

    def remove_nodule(self, nodule_id: str) -> None:
        self.nodules.remove(self.nodule(nodule_id))
        self.touch()

    def accepted_nodules(self) -> list[NoduleRecord]:
        return [x for x in self.nodules if x.status == "accepted"]

    # -- measurements -----------------------------------------------------------------------
    def add_measurement(self, m: Measurement) -> Measurement:
        self._room("measurements", len(self.measurements) + 1)
        _check_text(m, "the measurement")
        self.measurements.append(m)
        self.touch()
        return m

    def replace_measurement(self, index: int, m: Measurement) -> None:
        self.measurements[index] = m
        self.touch()

    def remove_measurement(self, index: int) -> None:
        del self.measurements[index]
        self.touch()

    def _room(self, key: str, n: int) -> None:
        """ReadingLimitError when the reading would hold ``n`` items of ``key``."""
        if n > MAX_ITEMS[key]:
            raise ReadingLimitError(_limit_message(key, n, MAX_ITEMS[key]))

    def set_measurements(self, measurements) -> None:
        """Replace the measurements (bounded like :meth:`add_measurement`)."""
        measurements = list(measurements)
        self._room("measurements", len(measurements))
        for m in measurements:
            _check_text(m, "a measurement")
        self.measurements = measurements
        self.touch()

    def set_nodules(self, nodules) -> None:
        """Replace the nodules (bounded like :meth:`add_nodule`)."""
        nodules = list(nodules)
        self._room("nodules", len(nodules))
        self.nodules = nodules
        self.touch()

    def set_note(self, text: str) -> None:
        if len(str(text)) > MAX_TEXT_CHARS:
            raise ReadingLimitError(f"the note has {len(str(text))} characters, more than the "
                                    f"{MAX_TEXT_CHARS} a note may hold")
        self.note = str(text)
        self.touch()

    def set_followup(self, comparison: dict | None) -> None:
        """Keep the follow-up comparison (a JSON-able dict) with the reading."""
        if comparison is not None:
            json.dumps(comparison, allow_nan=False)  # ValueError now, not at saving
        self.followup = None if comparison is None else dict(comparison)
        self.touch()

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION,
                "study_uid": self.study_uid, "series_uid": self.series_uid,
                "synthetic": self.synthetic, "app_version": self.app_version,
                "created": self.created, "modified": self.modified, "note": self.note,
                "cad_marks": [m.to_dict() for m in self.cad_marks],
                "box_scores": [s.to_dict() for s in self.box_scores],
                "measurements": [m.to_dict() for m in self.measurements],
                "nodules": [x.to_dict() for x in self.nodules],
                "content_key": self.content_key, "slice_uids": list(self.slice_uids),
                **({"followup": self.followup} if self.followup is not None else {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Any, problems: list[str] | None = None) -> Reading:
        """The reading of a parsed JSON object. Strict (``problems`` None): the first bad
        record raises ValueError naming it. Lenient (``problems`` a list): a bad record is
        left out, a list over :data:`MAX_ITEMS` keeps its first items and a text over
        :data:`MAX_TEXT_CHARS` is cut, each noted in ``problems`` — what can be kept is kept.
        The file's identity (format, schema, study) is never relaxed."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError("not a lungviewer reading (its 'format' is not "
                             f"{FORMAT!r})")
        f = _Fields(d, "reading")
        version = f.int("schema_version")
        if version < 1 or version > SCHEMA_VERSION:
            raise ValueError(f"reading schema version {version} is not supported (this "
                             f"lungviewer reads version 1..{SCHEMA_VERSION}; update lungviewer)")
        lenient = problems is not None
        parsers = {"cad_marks": (CadMark.from_dict, "CAD mark"),
                   "box_scores": (BoxScore.from_dict, "box score"),
                   "measurements": (_measurement_from_dict, "measurement"),
                   "nodules": (NoduleRecord.from_dict, "nodule")}
        lists: dict[str, list] = {}
        for key, (parse, what) in parsers.items():
            v = d.get(key, [])
            if not isinstance(v, list):
                if not lenient:
                    raise ValueError(f"reading: '{key}' must be a list")  # noqa: TRY004
                problems.append(f"reading: '{key}' is not a list; left out")
                v = []
            limit = MAX_ITEMS[key]
            if len(v) > limit:
                if not lenient:
                    raise ReadingLimitError(_limit_message(key, len(v), limit))
                problems.append(_limit_message(key, len(v), limit) + f"; the first {limit} "
                                "were kept")
                v = v[:limit]
            out = []
            for i, x in enumerate(v):
                try:
                    item = parse(x, f"{what} {i + 1}")
                    _check_text(item, f"{what} {i + 1}")
                except (ValueError, TypeError, RecursionError) as exc:
                    if not lenient:
                        raise ValueError(str(exc)) from exc
                    problems.append(f"{exc}; left out")
                    continue
                out.append(item)
            lists[key] = out
        synthetic = d.get("synthetic", False)
        if not isinstance(synthetic, bool):
            raise ValueError("reading: 'synthetic' is not true/false")  # noqa: TRY004
        texts = {}
        for key, default in (("app_version", "unknown"), ("created", ""), ("modified", ""),
                             ("note", "")):
            try:
                texts[key] = f.str(key, default)
            except ValueError:
                if not lenient:
                    raise
                problems.append(f"reading: '{key}' is not text; left out")
                texts[key] = default
            if len(texts[key]) > MAX_TEXT_CHARS:
                if not lenient:
                    raise ReadingLimitError(f"reading: '{key}' has {len(texts[key])} "
                                            f"characters, more than {MAX_TEXT_CHARS}")
                problems.append(f"reading: '{key}' was cut to {MAX_TEXT_CHARS} characters")
                texts[key] = texts[key][:MAX_TEXT_CHARS]
        uids = d.get("slice_uids", [])
        if not isinstance(uids, list) or not all(isinstance(u, str) and len(u) <= 64
                                                 for u in uids) or len(uids) > 100_000:
            if not lenient:
                raise ValueError("reading: 'slice_uids' must be a list of UIDs")
            problems.append("reading: 'slice_uids' is not a list of UIDs; left out")
            uids = []
        try:
            ckey = f.str("content_key")
        except ValueError:
            if not lenient:
                raise
            ckey = ""
        try:
            followup = _followup_of(d.get("followup"))
        except ValueError as exc:
            if not lenient:
                raise
            problems.append(f"{exc}; left out")
            followup = None
        return cls(
            f.str("study_uid", required=True), f.str("series_uid"), synthetic,
            texts["app_version"], texts["created"], texts["modified"], texts["note"],
            lists["cad_marks"], lists["box_scores"], lists["measurements"], lists["nodules"],
            followup, ckey[:64], list(uids))

    @classmethod
    def from_json(cls, text: str | bytes, problems: list[str] | None = None) -> Reading:
        """Parse a saved reading; anything else (bad JSON, another program's file, a newer
        schema, wrong field types, a file over the bounds of :func:`_bounded_json`) raises
        ValueError naming the problem. With a ``problems`` list, see :meth:`from_dict`."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return cls.from_dict(_bounded_json(data, problems), problems)


def _check_text(item: Any, where: str) -> None:
    for name in ("note", "label"):
        v = getattr(item, name, "")
        if isinstance(v, str) and len(v) > MAX_TEXT_CHARS:
            raise ReadingLimitError(f"{where}: its {name} has {len(v)} characters, more than "
                                    f"the {MAX_TEXT_CHARS} allowed")


def _followup_of(v: Any) -> dict | None:
    if v is None:
        return None
    if not isinstance(v, dict) or not isinstance(v.get("pairs", []), list):
        raise ValueError("reading: 'followup' must be an object with a 'pairs' list")  # noqa: TRY004
    return v


def _num_of(ident: str) -> int:
    digits = "".join(ch for ch in ident[1:] if ch.isdigit())
    return int(digits) if digits and ident[1:].isdigit() else 0
