"""Reading a CT series from DICOM files into a :class:`~lungviewer.study.volume.Volume`.

Two passes, both on a thread pool: first the headers only (``stop_before_pixels``) to find
the series, drop what is not an axial CT image (scouts, dose reports, SR, other modalities,
multi-frame objects without per-frame geometry, non-DICOM files; an Enhanced CT file gives
one slice per frame, with the frame's own position, spacing and rescale) and sort the slices by ImagePositionPatient projected
on the slice normal (never by file name or InstanceNumber); then the pixels, written
straight into one preallocated ``int16`` array ``(z, y, x)`` in HU (RescaleSlope/
RescaleIntercept applied per slice). Uncompressed little-endian pixel data is read with
``numpy`` at the offset the header pass found (bits above BitsStored masked, signed values
sign-extended, as pydicom's own decoder does); anything else goes through pydicom's decoders
(pylibjpeg, openjpeg, RLE plugins).

The header pass is one validated model (:class:`_Header`): every value the loader uses is
decoded from the file's raw bytes by this module (pydicom's global reading settings are
never touched) and checked once per file — image size, bits, pixel representation, rescale,
pixel spacing, orientation and position. A file whose header is implausible is skipped with
a note naming it and the problem. Images that share a SeriesInstanceUID but differ in
geometry (size, pixel spacing, orientation beyond 1e-4) are split into separate stacks and
the largest is opened, with a warning naming the split.

Problems that still allow reading (missing slices, uneven spacing, duplicate positions,
split geometry, gantry tilt, other series present) become ``Volume.warnings``; problems that
do not raise :class:`StudyLoadError` with a message that names the file and what to do.
Messages and logs never contain patient names or IDs.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import mmap
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from lungviewer.cancel import Cancelled
from lungviewer.contracts import (
    DEMO_COMPLETE_MARKER,
    TWIN_MANUFACTURER,
    TWIN_MARKER,
    twin_source_uid,
)
from lungviewer.study.volume import Volume

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]

#: Uncompressed little-endian syntaxes whose PixelData we read with numpy directly.
_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_DEFLATED = "1.2.840.10008.1.2.1.99"
#: Hard limit against absurd headers (a 2000×1024×1024 int16 volume is 4 GiB).
MAX_VOXELS = 2_200_000_000
#: Memory a loaded study needs per volume byte: the int16 volume itself (peak 1.01× when
#: loading, bench/bench_memory.py) plus the viewer's bool lung mask (0.5×) and some slack.
MEMORY_FACTOR = 1.7
#: Plausible PixelSpacing (mm): a 512-pixel chest CT has 0.4–1.0 mm pixels; below 0.01 mm
#: or above 10 mm (a 5 m field of view) the value is damaged, not a reconstruction.
PIXEL_SPACING_RANGE_MM = (0.01, 10.0)
#: ImagePositionPatient beyond ±10 m is a damaged value.
MAX_POSITION_MM = 10_000.0
#: Two images belong to one stack when their row/column cosines differ by at most this
#: (DICOM writers round the cosines differently; real reformats differ by far more).
ORIENTATION_TOLERANCE = 1e-4
#: ... and their pixel spacings by at most this fraction (decimal-string rounding).
SPACING_TOLERANCE = 1e-3
#: HU above this in an unsigned series are negative values that wrapped around (metal and
#: the extended CT scale stay below it).
WRAPPED_HU = 15_000
#: Multi-frame CT storage classes (the frames and their geometry are in functional groups).
_ENHANCED_CT = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
#: The twin's ``ImageComments`` begin with this (``synth.writer``).
_TWIN_COMMENT = f"{TWIN_MARKER} image"


def _available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class StudyLoadError(Exception):
    """The folder or files do not hold a CT series that can be shown."""


# cancelling a load raises lungviewer.cancel.Cancelled (one exception for every job)


@dataclass
class _Header:
    """What the loader uses of one file's header, decoded and checked once."""

    path: Path
    series_uid: str
    study_uid: str
    sop_uid: str
    modality: str
    image_type: tuple[str, ...]
    description: str
    comments: str
    patient_id: str
    position: np.ndarray | None
    orientation: np.ndarray | None
    rows: int
    cols: int
    pixel_spacing: tuple[float, float] | None
    thickness: float | None
    slope: float
    intercept: float
    transfer_syntax: str
    has_pixels: bool
    # fast path: byte offset of the PixelData element and numpy dtype of its values, for
    # uncompressed little-endian 16-bit grey images (None: decode through pydicom)
    pixel_offset: int | None = None
    pixel_dtype: str = ""
    manufacturer: str = ""
    sop_class: str = ""
    frames: int = 1
    frame: int | None = None  # a frame of a multi-frame file, read with its own geometry
    bits_allocated: int = 16
    bits_stored: int = 16
    signed: bool = True
    forced: bool = False  # no 128-byte preamble: read with pydicom's force=True

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_multiframe(self) -> bool:
        """A multi-frame file whose frames could not be read as slices (no per-frame
        geometry); a frame that could is not."""
        return self.frame is None and (self.frames > 1 or self.sop_class in _ENHANCED_CT)

    @property
    def is_synthetic(self) -> bool:
        """The twin's own marker only (its Manufacturer or its ImageComments), never a word
        in a free-text field: a dual-energy "Synthetic Mono 70keV" series is a patient."""
        return self.manufacturer == TWIN_MANUFACTURER or self.comments.startswith(_TWIN_COMMENT)

    @property
    def normal(self) -> np.ndarray | None:
        """Unit slice normal (row × column cosines; plain arithmetic: np.cross costs more
        than the rest of a header's checks)."""
        if self.orientation is None:
            return None
        a, b, c, d, e, f = self.orientation.tolist()
        n = (b * f - c * e, c * d - a * f, a * e - b * d)
        norm = math.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2)
        return np.array(n) / norm if norm > 0 else None

    @property
    def complete(self) -> bool:
        """A single-frame image with pixels and geometry (can be part of a stack)."""
        return (self.has_pixels and not self.is_localizer and not self.is_multiframe
                and self.position is not None and self.normal is not None)

    def geometry_text(self, orientation: bool = True) -> str:
        """E.g. "512×512, 0.68×0.68 mm pixels, orientation 1,0,0,0,1,0"."""
        sp = (f"{self.pixel_spacing[0]:.3g}×{self.pixel_spacing[1]:.3g} mm pixels"
              if self.pixel_spacing else "no PixelSpacing")
        orient = "" if self.orientation is None or not orientation else (
            ", orientation " + ",".join(f"{v:.3g}" for v in self.orientation))
        return f"{self.rows}×{self.cols}, {sp}{orient}"


@dataclass
class SeriesSummary:
    """One series found in a folder (headers only). A SeriesInstanceUID whose images differ
    in geometry gives one summary per stack, with the same ``series_uid``."""

    series_uid: str
    description: str
    modality: str
    n_files: int
    rows: int
    cols: int
    usable: bool  # an axial CT image series that load_series can open
    reason: str = ""  # why not usable
    geometry: str = ""  # image size, pixel spacing and orientation of the stack


@dataclass
class _Scan:
    headers: list[_Header] = field(default_factory=list)
    not_dicom: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)  # implausible header
    archives: list[tuple[Path, str]] = field(default_factory=list)


@contextmanager
def _mapped(path: Path) -> Iterator[io.BytesIO | mmap.mmap]:
    """The file as a read-only memory map, for pydicom.

    pydicom reads an element's value with ``fp.read(length)``, and Python's buffered file
    read allocates ``length`` bytes before it reads: a damaged or hostile length field (up
    to 4 GiB) in a 1 KB file made the header scan allocate gigabytes for a moment. A map's
    ``read`` returns at most the bytes left, without copying the file; it is also faster
    than a buffered file for pydicom's many small reads."""
    with open(path, "rb") as fp:
        if os.fstat(fp.fileno()).st_size == 0:  # an empty file cannot be mapped
            yield io.BytesIO(b"")
            return
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield mm


# --------------------------------------------------------------------------- archives
_ARCHIVE_MAGIC = [
    (0, b"PK\x03\x04", "ZIP"), (0, b"PK\x05\x06", "ZIP"), (0, b"\x1f\x8b", "gzip"),
    (0, b"7z\xbc\xaf\x27\x1c", "7-Zip"), (0, b"Rar!\x1a\x07", "RAR"), (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"), (0, b"\x28\xb5\x2f\xfd", "zstd"), (257, b"ustar", "tar"),
]
_ARCHIVE_SUFFIXES = {".zip": "ZIP", ".7z": "7-Zip", ".rar": "RAR", ".tar": "tar",
                     ".tgz": "tar", ".tbz2": "tar", ".txz": "tar", ".bz2": "bzip2",
                     ".xz": "xz", ".zst": "zstd"}


def _archive_kind(path: Path, head: bytes | None = None) -> str | None:
    """'ZIP', 'tar', ... when the file is an archive (by its first bytes, else its name)."""
    if head is None:
        try:
            with open(path, "rb") as fh:
                head = fh.read(512)
        except OSError:
            head = b""
    if head[128:132] == b"DICM":  # a DICOM file (its preamble may hold anything)
        return None
    for at, magic, kind in _ARCHIVE_MAGIC:
        if head[at:at + len(magic)] == magic:
            return kind
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tar.bz2", ".tar.xz")):
        return "tar"
    return _ARCHIVE_SUFFIXES.get(path.suffix.lower())


def _archive_name(reason: str) -> str:
    """'ZIP' from the reason string 'archive (ZIP)'."""
    return reason.removeprefix("archive (").removesuffix(")")


def _archive_advice(path: Path, kind: str) -> str:
    return (f"{path.name} is a {kind} archive: archives must be unpacked first. Unpack it "
            "and open the folder it makes.")


# --------------------------------------------------------------------------- raw values
# The values the loader uses are decoded here from the raw element bytes: pydicom's own
# conversion validates every value against its VR under a process-wide setting
# (``pydicom.config.settings.reading_validation_mode``), which a library must not change
# for its host; the loader checks the values it uses itself, and decoding them here is
# faster than pydicom's conversion plus validation.
_BINARY = {"US": "u2", "SS": "i2", "UL": "u4", "SL": "i4", "FL": "f4", "FD": "f8"}
_TAG_VR = {
    0x00080008: "CS", 0x00080016: "UI", 0x00080018: "UI", 0x00080060: "CS", 0x00080070: "LO",
    0x0008103E: "LO", 0x00100020: "LO", 0x00180050: "DS", 0x0020000D: "UI", 0x0020000E: "UI",
    0x00200032: "DS", 0x00200037: "DS", 0x00204000: "LT", 0x00280002: "US", 0x00280008: "IS",
    0x00280010: "US", 0x00280011: "US", 0x00280030: "DS", 0x00280100: "US", 0x00280101: "US",
    0x00280103: "US", 0x00281052: "DS", 0x00281053: "DS",
}


class _Raw:
    """Typed access to the raw elements of one dataset read by pydicom."""

    def __init__(self, ds: pydicom.Dataset) -> None:
        self.ds = ds

    def _elem(self, tag: int) -> tuple[str, object] | None:
        """(VR, value) of the element: raw bytes, or a value pydicom already converted."""
        elem = self.ds.get_item(tag, keep_deferred=True)
        if elem is None:
            return None
        vr = elem.VR or _TAG_VR.get(tag, "UN")
        if isinstance(elem, pydicom.dataelem.RawDataElement):
            return vr, (elem.value or b"", elem.is_little_endian)
        return vr, elem.value

    def has(self, tag: int) -> bool:
        return self.ds.get_item(tag, keep_deferred=True) is not None

    def strings(self, tag: int) -> list[str]:
        """The element's values as text (backslash-separated values split)."""
        got = self._elem(tag)
        if got is None:
            return []
        vr, value = got
        if isinstance(value, tuple):  # raw bytes
            data, little = value
            if vr in _BINARY:
                dt = np.dtype(_BINARY[vr]).newbyteorder("<" if little else ">")
                n = len(data) // dt.itemsize
                return [str(v) for v in np.frombuffer(data, dt, count=n).tolist()]
            try:
                text = data.decode("ascii")
            except UnicodeDecodeError:
                text = self._decode_text(data)
            if vr in ("LT", "ST", "UT"):  # one value, backslashes are text
                return [text.rstrip("\x00 ")]
            return [v.strip("\x00 ") for v in text.split("\\")]
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            return [str(v) for v in value]
        return [] if value is None else [str(value)]

    def _decode_text(self, data: bytes) -> str:
        try:
            from pydicom.charset import decode_bytes

            return decode_bytes(data, self.ds._character_set, set())
        except Exception:  # noqa: BLE001 - an unknown character set: keep what is legible
            return data.decode("latin-1")

    def text(self, tag: int) -> str:
        return "\\".join(self.strings(tag))

    def numbers(self, tag: int) -> list[float] | None:
        """Every value as a float; None when absent, empty or any value is not a number."""
        vals = [v for v in self.strings(tag) if v != ""]
        if not vals:
            return None
        try:
            return [float(v) for v in vals]
        except ValueError:
            return None

    def integer(self, tag: int, default: int | None = None) -> int | None:
        """The first value as an int (default when absent or empty); raises ValueError for
        a value that is not a whole number."""
        vals = [v for v in self.strings(tag) if v != ""]
        if not vals:
            return default
        f = float(vals[0])
        if not math.isfinite(f) or f != int(f):
            raise ValueError(f"{vals[0]!r} is not a whole number")
        return int(f)


def _tag_name(tag: int) -> str:
    return pydicom.datadict.keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Refused(Exception):
    """A header value that makes the file unusable (the message says which and why)."""


def _transfer_syntax(ds: pydicom.Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = ""
    if meta is not None and meta.get_item(0x00020010) is not None:
        ts = _Raw(meta).text(0x00020010)
    if ts:
        return ts
    implicit, little = ds.original_encoding
    if little is False:
        return "1.2.840.10008.1.2.2"
    return "1.2.840.10008.1.2" if implicit in (True, None) else "1.2.840.10008.1.2.1"


def _looks_like_dataset(head: bytes) -> bool:
    """First bytes of a DICOM data set without the 128-byte preamble: a group 0002 (file
    meta) or 0008 (identification) element, little or big endian."""
    return head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _parse_header(path: Path, ds: pydicom.Dataset, offset: int, pixel_tag: bytes,
                  forced: bool) -> _Header:
    """The checked header model of one file; raises :class:`_Refused` for a value that
    makes the file unusable and ValueError for one that cannot be decoded."""
    r = _Raw(ds)
    ts = _transfer_syntax(ds)
    rows = r.integer(0x00280010)
    cols = r.integer(0x00280011)
    bits = r.integer(0x00280100)
    # the header pass stops where PixelData begins: its tag is there unless the data set
    # is deflated (pydicom then reads an inflated copy, and the file offset means nothing)
    has_pixels = (rows is not None and cols is not None and bits is not None
                  and (pixel_tag in (_PIXEL_TAG, _PIXEL_TAG_BE) or ts == _DEFLATED))
    rows, cols, bits = rows or 0, cols or 0, bits or 0
    stored = r.integer(0x00280101, bits) or bits
    rep = r.integer(0x00280103, 0)
    samples = r.integer(0x00280002, 1)
    frames = r.integer(0x00280008, 1) or 1
    if has_pixels:
        if rows < 1 or cols < 1:
            raise _Refused(f"Rows × Columns is {rows} × {cols}: the image has no pixels")
        if bits not in (8, 16, 32):
            raise _Refused(f"BitsAllocated {bits} is not 8, 16 or 32")
        if not 1 <= stored <= bits:
            raise _Refused(f"BitsStored {stored} does not fit in BitsAllocated {bits}")
        if rep not in (0, 1):
            raise _Refused(f"PixelRepresentation {rep} is neither 0 (unsigned) nor 1 (signed)")
        if samples != 1:
            raise _Refused(f"colour image ({samples} samples per pixel), not CT")
        if frames < 1:
            raise _Refused(f"NumberOfFrames {frames} is not a frame count")
    signed = rep == 1
    vals = _checked_values(r)
    fast = (has_pixels and ts in _NATIVE_LE and bits == 16 and not _big_endian(ds)
            and pixel_tag == _PIXEL_TAG)
    return _Header(
        path=path,
        series_uid=r.text(0x0020000E),
        study_uid=r.text(0x0020000D),
        sop_uid=r.text(0x00080018),
        modality=r.text(0x00080060).upper(),
        image_type=tuple(v.upper() for v in r.strings(0x00080008)),
        description=r.text(0x0008103E),
        comments=r.text(0x00204000),
        patient_id=r.text(0x00100020),
        rows=rows,
        cols=cols,
        transfer_syntax=ts,
        has_pixels=has_pixels,
        pixel_offset=offset if fast else None,
        pixel_dtype=("<i2" if signed else "<u2") if fast else "",
        manufacturer=r.text(0x00080070),
        sop_class=r.text(0x00080016),
        frames=frames,
        bits_allocated=bits,
        bits_stored=stored,
        signed=signed,
        forced=forced,
        **vals,
    )


def _checked_values(r: _Raw | _Chain) -> dict:
    """Rescale, pixel spacing, position, orientation and thickness of one image, checked
    (:class:`_Refused` for a value that makes it unusable), as _Header fields."""
    slope_vals, icpt_vals = r.numbers(0x00281053), r.numbers(0x00281052)
    if r.strings(0x00281053) and slope_vals is None:
        raise _Refused(f"RescaleSlope {r.text(0x00281053)!r} is not a number")
    if r.strings(0x00281052) and icpt_vals is None:
        raise _Refused(f"RescaleIntercept {r.text(0x00281052)!r} is not a number")
    slope = slope_vals[0] if slope_vals else 1.0
    intercept = icpt_vals[0] if icpt_vals else 0.0
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise _Refused("malformed header (RescaleSlope/RescaleIntercept is not a finite "
                       "number)")
    if slope == 0:
        raise _Refused("RescaleSlope is 0 (every pixel would have the same HU)")
    spacing = r.numbers(0x00280030)
    pixel_spacing: tuple[float, float] | None = None
    if spacing is not None and len(spacing) == 2:
        lo, hi = PIXEL_SPACING_RANGE_MM
        if not all(math.isfinite(s) and lo <= s <= hi for s in spacing):
            raise _Refused(f"PixelSpacing {spacing[0]:g} × {spacing[1]:g} mm is not a "
                           f"plausible pixel size (expected {lo:g} to {hi:g} mm)")
        pixel_spacing = (spacing[0], spacing[1])
    position = _vector(r.numbers(0x00200032), 3)
    if position is not None and np.max(np.abs(position)) > MAX_POSITION_MM:
        raise _Refused("ImagePositionPatient is more than 10 m from the scanner's origin")
    orientation = _vector(r.numbers(0x00200037), 6)
    if orientation is not None and not _is_orientation(orientation):
        raise _Refused("ImageOrientationPatient is not two unit vectors at right angles")
    thick = r.numbers(0x00180050)
    thickness = thick[0] if thick and math.isfinite(thick[0]) and thick[0] > 0 else None
    return {"slope": slope, "intercept": intercept, "pixel_spacing": pixel_spacing,
            "position": position, "orientation": orientation, "thickness": thickness}


class _Chain:
    """Values looked up in several data sets, first one holding the tag wins: a frame's
    functional groups, then the shared ones, then the top level."""

    def __init__(self, sources: list[_Raw]) -> None:
        self.sources = sources

    def _src(self, tag: int) -> _Raw | None:
        return next((x for x in self.sources if x.has(tag)), None)

    def strings(self, tag: int) -> list[str]:
        src = self._src(tag)
        return src.strings(tag) if src else []

    def numbers(self, tag: int) -> list[float] | None:
        src = self._src(tag)
        return src.numbers(tag) if src else None

    def text(self, tag: int) -> str:
        return "\\".join(self.strings(tag))


def _items(ds: pydicom.Dataset, tag: int) -> list[pydicom.Dataset]:
    """The items of a sequence element ([] when absent or not a sequence)."""
    if ds.get_item(tag, keep_deferred=True) is None:
        return []
    value = ds[tag].value
    return list(value) if isinstance(value, pydicom.sequence.Sequence) else []


#: functional-group macros holding what a slice needs: plane position, plane orientation,
#: pixel measures, pixel value transformation (rescale)
_FRAME_MACROS = (0x00209113, 0x00209116, 0x00289110, 0x00289145)


def _frame_headers(h: _Header, ds: pydicom.Dataset) -> list[_Header] | None:
    """One header per frame of a multi-frame file, each with its own geometry and rescale
    from the per-frame and shared functional groups (Enhanced CT); None when the file does
    not give every frame a position (a legacy multi-frame image: refused by name)."""
    per = _items(ds, 0x52009230)  # PerFrameFunctionalGroupsSequence
    if not h.has_pixels or len(per) != h.frames:
        return None
    shared = _items(ds, 0x52009229)[:1]  # SharedFunctionalGroupsSequence

    def macros(group: list[pydicom.Dataset]) -> list[_Raw]:
        return [_Raw(it) for g in group for tag in _FRAME_MACROS for it in _items(g, tag)[:1]]

    top, common = _Raw(ds), macros(shared)
    out = []
    for k, item in enumerate(per):
        try:
            vals = _checked_values(_Chain([*macros([item]), *common, top]))
        except _Refused as exc:
            raise _Refused(f"frame {k + 1}: {exc}") from exc
        if vals["position"] is None or vals["orientation"] is None:
            return None
        out.append(dataclasses.replace(h, frame=k, **vals))
    return out


def _big_endian(ds: pydicom.Dataset) -> bool:
    """Whether the data set was decoded as big endian (then the fast path does not apply)."""
    return ds.original_encoding[1] is False


def _vector(values: list[float] | None, n: int) -> np.ndarray | None:
    if values is None or len(values) != n:
        return None
    arr = np.asarray(values, dtype=float)
    return arr if np.all(np.isfinite(arr)) else None


def _is_orientation(o: np.ndarray) -> bool:
    r, c = o[:3], o[3:]
    return (abs(np.linalg.norm(r) - 1) < 0.01 and abs(np.linalg.norm(c) - 1) < 0.01
            and abs(float(r @ c)) < 0.01)


_PIXEL_TAG = b"\xe0\x7f\x10\x00"
_PIXEL_TAG_BE = b"\x7f\xe0\x00\x10"


def _read_header(path: Path) -> _Header | str:
    """Header of one file (its first frame's for a multi-frame file), or a string saying
    why it is not a usable DICOM object ("not DICOM", "archive (ZIP)", "unreadable (...)",
    "permission denied", "malformed header (...)", or the implausible value)."""
    res = _read_headers(path)
    return res if isinstance(res, str) else res[0]


def _read_headers(path: Path) -> list[_Header] | str:
    """The headers of one file: one, or one per frame of a multi-frame file with per-frame
    geometry; or a string saying why the file is not usable (see :func:`_read_header`)."""
    forced = False
    try:
        with _mapped(path) as fp:
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
            except InvalidDicomError:
                fp.seek(0)
                head = fp.read(512)
                kind = _archive_kind(path, head)
                if kind is not None:
                    return f"archive ({kind})"
                if not _looks_like_dataset(head):
                    return "not DICOM"
                ds = _read_forced(fp)
                if ds is None:
                    return "not DICOM"
                forced = True
            offset = fp.tell()  # pydicom stops at the PixelData element's first byte
            pixel_tag = fp.read(4)
    except InvalidDicomError:
        return "not DICOM"
    except PermissionError:
        return "permission denied"
    except Exception as exc:  # noqa: BLE001 - any parser failure (BytesLengthException, ...) is a bad file
        return f"unreadable ({type(exc).__name__})"
    try:
        h = _parse_header(path, ds, offset, pixel_tag, forced)
        return (_frame_headers(h, ds) if h.is_multiframe else None) or [h]
    except _Refused as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a value that cannot be decoded is a bad header
        return f"malformed header ({type(exc).__name__})"


#: an image needs these: Modality, SeriesInstanceUID, SOPInstanceUID
_ESSENTIAL = (0x00080060, 0x0020000E, 0x00080018)


def _read_forced(fp) -> pydicom.Dataset | None:
    """A data set without the 128-byte preamble, read with pydicom's ``force=True``; force
    reads anything, so the result counts only when it holds the essential tags of an image
    (None otherwise, or when it does not parse)."""
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        ok = all(ds.get_item(t, keep_deferred=True) is not None for t in _ESSENTIAL)
    except Exception:  # noqa: BLE001 - not a data set after all
        return None
    return ds if ok else None


def _kind_of(reason: str) -> str:
    """Which pile of :class:`_Scan` a reason string of :func:`_read_header` goes to."""
    if reason == "not DICOM":
        return "not_dicom"
    if reason.startswith("archive ("):
        return "archives"
    if reason.startswith(("unreadable", "permission denied", "malformed header")):
        return "unreadable"
    return "refused"


# --------------------------------------------------------------------------- files
def _list_files(path: str | Path | Sequence[str | Path]) -> tuple[list[Path], Path]:
    if isinstance(path, (str, os.PathLike)):
        root = Path(path)
        if not root.exists():
            raise StudyLoadError(f"{root} does not exist.")
        if root.is_file():
            kind = _archive_kind(root)
            if kind is not None:
                raise StudyLoadError(_archive_advice(root, kind))
            return [root], root.parent
        try:
            files = sorted(p for p in root.rglob("*") if p.is_file()
                           and not p.name.startswith(".") and not _is_companion(p))
        except PermissionError as exc:
            raise StudyLoadError(f"Cannot list {root}: permission denied ({exc.filename}).") from exc
        return files, root
    files = [Path(p) for p in path]
    return files, (files[0].parent if files else Path("."))


def _empty_folder_message(root: Path) -> str:
    """Why a folder gave no file to read: empty, or only hidden/companion files."""
    try:
        found = sorted(p for p in root.rglob("*") if p.is_file())
    except OSError:
        found = []
    if not found:
        return f"{root} is empty: choose a folder that holds a CT series."
    hidden = [p for p in found if p.name.startswith(".")]
    e_g = ", ".join(p.name for p in found[:3]) + (" …" if len(found) > 3 else "")
    if len(hidden) == len(found):
        return (f"{root} holds only hidden files ({len(found)}: {e_g}), which are not read, "
                "and no CT images: choose a folder that holds a CT series.")
    return (f"{root} holds no CT images, only {len(found)} hidden or companion file(s) "
            f"({e_g}): choose a folder that holds a CT series.")


# files that live beside DICOM series and are not images: not worth a warning
_COMPANIONS = {".xml", ".txt", ".json", ".csv", ".md", ".nii", ".npy", ".png", ".jpg"}


def _is_companion(path: Path) -> bool:
    name = path.name.lower()
    return (path.suffix.lower() in _COMPANIONS or name.endswith(".nii.gz")
            or path.name in (DEMO_COMPLETE_MARKER, "LICENSE"))


def _pool_size() -> int:
    return min(8, (os.cpu_count() or 2) * 2)


def _scan(files: list[Path], progress: Progress | None, cancel: Cancel | None,
          total: int) -> _Scan:
    out = _Scan()
    with ThreadPoolExecutor(_pool_size()) as pool:
        for i, (path, res) in enumerate(zip(files, pool.map(_read_headers, files))):
            if cancel is not None and cancel():
                pool.shutdown(cancel_futures=True)
                raise Cancelled("loading was cancelled")
            if isinstance(res, str):
                kind = _kind_of(res)
                if kind == "not_dicom":
                    out.not_dicom.append(path)
                else:
                    getattr(out, kind).append((path, res))
            else:
                out.headers.extend(res)
            if progress is not None and (i % 16 == 0 or i == len(files) - 1):
                progress(i + 1, total)
    return out


# --------------------------------------------------------------------------- series
_MULTIFRAME_ADVICE = ("lungviewer reads multi-frame CT only with per-frame geometry "
                      "(Enhanced CT) and otherwise one slice per file; convert it to "
                      "single-frame files first (for example with dcm4che's emf2sf)")


def _why_unusable(headers: list[_Header]) -> str:
    # the series' modality by majority: one file with a missing/odd tag must not hide the rest
    modality = Counter(x.modality for x in headers).most_common(1)[0][0]
    if modality != "CT":
        return f"modality {modality or 'unknown'}, not CT"
    if all(x.is_multiframe for x in headers):
        frames = max(x.frames for x in headers)
        what = (f"{frames} frames in one file" if frames > 1 else "enhanced CT storage")
        return (f"multi-frame image ({what}, without a position for each frame): "
                f"{_MULTIFRAME_ADVICE}")
    if not any(x.has_pixels for x in headers):
        return "no image data"
    if all(x.is_localizer for x in headers):
        return "localizer (scout) image"
    normals = [x.normal for x in headers if x.normal is not None and x.position is not None]
    if not normals:
        return "no ImagePositionPatient/ImageOrientationPatient"
    if 2 * sum(abs(n[2]) >= 0.8 for n in normals) <= len(normals):  # by majority, not file 1
        return "not an axial series"
    return ""


def _split_by_geometry(headers: list[_Header]) -> list[list[_Header]]:
    """The stacks of one SeriesInstanceUID: images of one geometry each, largest first. Two
    images can be stacked when they have the same size, the same pixel spacing (within
    SPACING_TOLERANCE, or both none) and orientation (cosines within
    ORIENTATION_TOLERANCE).
    Images that cannot be stacked anyway (no pixels or position, localizers, multi-frame)
    join the largest stack, where they are reported as such.

    Vectorised: one comparison of a stack's first image against all images not yet placed
    per stack, so a hostile folder of thousands of distinct geometries stays fast."""
    complete = [h for h in headers if h.complete]
    rest = [h for h in headers if not h.complete]
    if not complete:
        return [rest]
    # one row per image: rows, cols, has spacing, spacing (2), orientation (6)
    g = np.array([(h.rows, h.cols, h.pixel_spacing is not None, *(h.pixel_spacing or (0, 0)),
                   *h.orientation) for h in complete], dtype=float)
    parts: list[list[_Header]] = []
    todo = np.arange(len(complete))
    while todo.size:
        ref = g[todo[0]]
        tol = np.concatenate([[0.0, 0.0, 0.0], SPACING_TOLERANCE * np.abs(ref[3:5]) + 1e-6,
                              np.full(6, ORIENTATION_TOLERANCE)])
        same = (np.abs(g[todo] - ref) <= tol).all(1)
        parts.append([complete[k] for k in todo[same]])
        todo = todo[~same]
    parts.sort(key=len, reverse=True)  # stable: equal sizes keep the order found
    parts[0].extend(rest)
    return parts


def _group(headers: Iterable[_Header]) -> dict[str, list[list[_Header]]]:
    """SeriesInstanceUID → its stacks (:func:`_split_by_geometry`)."""
    by_uid: dict[str, list[_Header]] = {}
    for h in headers:
        by_uid.setdefault(h.series_uid, []).append(h)
    return {uid: _split_by_geometry(hs) for uid, hs in by_uid.items()}


def _geometry(part: list[_Header], orientation: bool = True) -> str:
    ref = next((h for h in part if h.complete), part[0])
    return ref.geometry_text(orientation) if ref.complete else ""


def scan_folder(path: str | Path | Sequence[str | Path]) -> list[SeriesSummary]:
    """The series found under ``path`` (headers only), biggest usable series first; a
    series split by geometry gives one summary per stack."""
    files, _ = _list_files(path)
    scan = _scan(files, None, None, len(files))
    out = []
    for uid, parts in _group(scan.headers).items():
        for hs in parts:
            why = _why_unusable(hs)
            out.append(SeriesSummary(uid, hs[0].description, hs[0].modality, len(hs),
                                     hs[0].rows, hs[0].cols, not why, why, _geometry(hs)))
    return sorted(out, key=lambda s: (not s.usable, -s.n_files))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _split_warning(chosen: list[_Header], others: list[list[_Header]]) -> str:
    """The warning for a SeriesInstanceUID split by geometry: what was opened, what was left
    out and how it differs."""
    ref = next(h for h in chosen if h.complete)
    reps = [next((h for h in p if h.complete), p[0]) for p in others]
    resized = [len(p) for p, h in zip(others, reps) if (h.rows, h.cols) != (ref.rows, ref.cols)]
    turned = [len(p) for p, h in zip(others, reps) if h.orientation is not None
              and np.max(np.abs(h.orientation - ref.orientation)) > ORIENTATION_TOLERANCE]
    kinds = []
    if resized:
        kinds.append(f"Mixed image sizes: kept {ref.rows}×{ref.cols}, dropped {sum(resized)} "
                     "image(s) of another size.")
    if turned:
        kinds.append(f"Mixed orientations: dropped {sum(turned)} image(s).")
    spaced = [len(p) for p, h in zip(others, reps)
              if (h.pixel_spacing is None) != (ref.pixel_spacing is None)
              or (h.pixel_spacing is not None and ref.pixel_spacing is not None
                  and not np.allclose(h.pixel_spacing, ref.pixel_spacing,
                                      rtol=SPACING_TOLERANCE, atol=1e-6))]
    if spaced:
        sp = ref.pixel_spacing or (1.0, 1.0)
        kinds.append(f"Mixed pixel spacing (two fields of view?): kept {sp[0]:g}×{sp[1]:g} mm, "
                     f"dropped {sum(spaced)} image(s) of another pixel spacing.")
    left = sum(len(p) for p in others)
    parts = "; ".join(f"{len(p)} image(s) of {_geometry(p, bool(turned)) or 'unknown geometry'}"
                      for p in others[:3]) + (" …" if len(others) > 3 else "")
    split = (f"Series split by geometry: its images do not form one stack. Opened the "
             f"{len(chosen)} image(s) of {ref.geometry_text(bool(turned))} and left out "
             f"{left}: {parts}. To open another stack, put its files in a folder of their "
             "own; check how the series was exported.")
    return " ".join([*kinds, split])


def _choose_series(scan: _Scan, series_uid: str | None, root: Path
                   ) -> tuple[list[_Header], list[str]]:
    groups = _group(scan.headers)
    notes: list[str] = []
    stacks = [(uid, part) for uid, parts in groups.items() for part in parts]
    if series_uid is not None:
        if series_uid not in groups:
            raise StudyLoadError(f"Series {series_uid} was not found under {root}.")
        usable = [p for p in groups[series_uid] if not _why_unusable(p)]
        if not usable:
            raise StudyLoadError(
                f"Series {series_uid} cannot be shown: {_why_unusable(groups[series_uid][0])}.")
        chosen = usable[0]
    else:
        usable_stacks = [(uid, p) for uid, p in stacks if not _why_unusable(p)]
        if not usable_stacks:
            raise StudyLoadError(_nothing_usable(scan, stacks, root))
        uid, chosen = max(usable_stacks, key=lambda s: len(s[1]))
        others = len({u for u, _ in usable_stacks if u != uid})
        if others:
            notes.append(
                f"{others} other CT series in this folder; opened the one with the most slices "
                f"({len(chosen)} images, '{chosen[0].description}')."
            )
    uid = chosen[0].series_uid
    siblings = [p for p in groups[uid] if p is not chosen and not all(
        h.is_localizer for h in p)]
    if siblings:
        notes.append(_split_warning(chosen, siblings))
    unusable = [(hs, _why_unusable(hs)) for u, hs in stacks if u != uid]
    unusable = [(hs, why) for hs, why in unusable
                if why and why != "localizer (scout) image"]
    if unusable:
        hs, why = unusable[0]
        notes.append(f"{sum(len(h) for h, _ in unusable)} file(s) of other series that cannot "
                     f"be shown were ignored (e.g. {_rel(hs[0].path, root)}: {why}).")
    if scan.not_dicom:
        notes.append(f"{len(scan.not_dicom)} non-DICOM file(s) ignored.")
    if scan.archives:
        p, why = scan.archives[0]
        notes.append(f"{len(scan.archives)} archive file(s) ignored (e.g. {_rel(p, root)}, "
                     f"{_archive_name(why)}): archives must be unpacked first.")
    if scan.unreadable:
        p, why = scan.unreadable[0]
        notes.append(f"{len(scan.unreadable)} file(s) could not be read and were skipped "
                     f"(e.g. {_rel(p, root)}: {why}).")
    if scan.refused:
        p, why = scan.refused[0]
        notes.append(f"{len(scan.refused)} file(s) with an implausible header were skipped "
                     f"(e.g. {_rel(p, root)}: {why}).")
    n_loc = sum(1 for h in scan.headers if h.is_localizer)
    if n_loc:
        notes.append(f"{n_loc} localizer/scout image(s) ignored.")
    return chosen, notes


def _nothing_usable(scan: _Scan, stacks: list[tuple[str, list[_Header]]], root: Path) -> str:
    """The error when no stack under ``root`` can be opened: what was found instead."""
    extra = []
    if scan.archives:
        p, why = scan.archives[0]
        extra.append(f"{len(scan.archives)} archive file(s), e.g. {_rel(p, root)} "
                     f"({_archive_name(why)}): archives must be unpacked first.")
    if scan.refused:
        p, why = scan.refused[0]
        extra.append(f"{len(scan.refused)} file(s) have an implausible header, e.g. "
                     f"{_rel(p, root)}: {why}.")
    if scan.unreadable:
        p, why = scan.unreadable[0]
        extra.append(f"{len(scan.unreadable)} file(s) could not be read, e.g. "
                     f"{_rel(p, root)}: {why}.")
    more = (" " + " ".join(extra)) if extra else ""
    if not stacks:
        if scan.refused or scan.unreadable:
            return (f"No usable CT image under {root}:{more} Replace or remove these files, "
                    "or choose a folder that holds a CT series.")
        if scan.archives:
            return f"No DICOM files under {root}: {extra[0]}"
        return f"No DICOM files found under {root}. Choose a folder that holds a CT series."
    found = ", ".join(sorted({f"{hs[0].modality or '?'}: {_why_unusable(hs)}"
                              for _, hs in stacks}))
    return (f"No axial CT image series under {root} (found {found}).{more} "
            "lungviewer opens axial CT series.")


def _sort_and_check(headers: list[_Header], root: Path) -> tuple[list[_Header], np.ndarray, list[str]]:
    """Keep the slices that form one stack, sort them along the normal; warnings."""
    warnings: list[str] = []
    multi = [h for h in headers if h.is_multiframe]
    if multi:
        warnings.append(f"{len(multi)} multi-frame image file(s) were left out (e.g. "
                        f"{_rel(multi[0].path, root)}): {_MULTIFRAME_ADVICE}.")
    incomplete = [h for h in headers if not h.is_localizer and not h.is_multiframe
                  and not h.complete]
    if incomplete:
        warnings.append(f"{len(incomplete)} image(s) without pixel data or position were skipped "
                        f"(e.g. {_rel(incomplete[0].path, root)}).")
    headers = [h for h in headers if h.complete]
    normal = headers[0].normal
    assert normal is not None
    proj = np.array([float(h.position @ normal) for h in headers])
    order = np.argsort(proj, kind="stable")
    headers = [headers[i] for i in order]
    proj = proj[order]
    # duplicate positions
    if len(proj) > 1:
        dup = np.concatenate([[False], np.diff(proj) < 1e-3])
        if dup.any():
            warnings.append(
                f"{int(dup.sum())} image(s) duplicate the position of another and were dropped."
            )
            headers = [h for h, d in zip(headers, dup) if not d]
            proj = proj[~dup]
    if len(proj) > 2:
        steps = np.diff(proj)
        step = float(np.median(steps))
        gaps = np.nonzero(steps > 1.5 * step)[0]
        if gaps.size:
            missing = int(np.sum(np.round(steps[gaps] / step) - 1))
            where = ", ".join(f"between images {i + 1} and {i + 2} (z {proj[i]:.1f}→{proj[i + 1]:.1f} mm)"
                              for i in gaps[:3])
            warnings.append(f"About {missing} slice(s) missing: {where}"
                            f"{' …' if gaps.size > 3 else ''}. Distances across the gap are not to scale.")
        elif np.max(np.abs(steps - step)) > 0.1 * step + 0.01:
            warnings.append(f"Uneven slice spacing: steps from {steps.min():.2f} to {steps.max():.2f} mm "
                            f"(median {step:.2f} mm used).")
    # pixel spacing that varies within the tolerance of one stack
    spacings = np.array([h.pixel_spacing for h in headers if h.pixel_spacing is not None])
    if len(spacings) > 1 and np.ptp(spacings, axis=0).max() > 1e-6:
        lo, hi = spacings.min(), spacings.max()
        warnings.append(f"Mixed pixel spacing: {lo:.4f} to {hi:.4f} mm between slices; "
                        f"{headers[0].pixel_spacing[0]:.4f} mm is used (distances may be off by "
                        f"up to {100 * (hi - lo) / lo:.2f} %).")
    # in-plane positions that jump between slices (two fields of view interleaved): not a
    # tilt, which moves them along a straight line
    interleaved = False
    if len(headers) > 2:
        first = headers[0]
        r_hat = first.orientation[:3] / np.linalg.norm(first.orientation[:3])
        c_hat = first.orientation[3:] / np.linalg.norm(first.orientation[3:])
        rel = np.stack([h.position for h in headers]) - first.position
        px = min(first.pixel_spacing or (1.0, 1.0))
        worst = 0.0
        for axis in (r_hat, c_hat):
            u = rel @ axis
            fit = np.polyval(np.polyfit(proj, u, 1), proj)
            worst = max(worst, float(np.max(np.abs(u - fit))))
        if worst > 0.5 * px:
            interleaved = True
            warnings.append(f"Slices of this series lie at different in-plane positions (up to "
                            f"{worst:.1f} mm off a straight line; two fields of view or "
                            "reconstruction centres interleaved?): the slices are not aligned "
                            "and distances across slices are not to scale; open each field of "
                            "view as its own series.")
    # gantry tilt: positions do not advance along the normal
    if len(headers) > 1 and not interleaved:
        d = headers[-1].position - headers[0].position
        norm = np.linalg.norm(d)
        if norm > 0:
            cosang = abs(float(d @ normal)) / norm
            angle = float(np.degrees(np.arccos(np.clip(cosang, -1, 1))))
            if angle > 0.5:
                warnings.append(f"Gantry tilt of about {angle:.1f}°: slices are shown as acquired, "
                                "without tilt correction; 3-D distances are approximate.")
    return headers, proj, warnings


# --------------------------------------------------------------------------- pixels
def _correct_unused_bits(px: np.ndarray, bits_stored: int) -> np.ndarray:
    """Clear the bits above BitsStored (unsigned) or fill them with the sign bit (signed),
    in place, as pydicom's decoder does: a shift left then back right (logical for
    unsigned dtypes, arithmetic for signed)."""
    shift = px.dtype.itemsize * 8 - bits_stored
    if shift > 0:
        np.left_shift(px, shift, out=px)
        np.right_shift(px, shift, out=px)
    return px


def _read_native(h: _Header) -> np.ndarray | None:
    """Uncompressed 16-bit pixels straight from the file at the offset found by the header
    pass (no second parse of the header); None when the element is not as expected."""
    n = h.rows * h.cols
    with open(h.path, "rb") as fp:
        fp.seek(h.pixel_offset)
        head = fp.read(12)
        if len(head) < 8 or head[:4] != _PIXEL_TAG:
            return None
        if h.transfer_syntax == "1.2.840.10008.1.2":  # implicit VR: tag + 4-byte length
            length = int.from_bytes(head[4:8], "little")
            fp.seek(h.pixel_offset + 8)
        elif head[4:6] in (b"OW", b"OB"):  # explicit VR: tag, VR, 2 reserved, length
            length = int.from_bytes(head[8:12], "little")
        else:
            return None
        frame = h.frame or 0
        if length < 2 * n * (frame + 1) or length == 0xFFFFFFFF:
            return None
        if frame:
            fp.seek(2 * n * frame, os.SEEK_CUR)
        px = np.fromfile(fp, dtype=h.pixel_dtype, count=n)
    if px.size != n:
        return None
    return _correct_unused_bits(px, h.bits_stored).reshape(h.rows, h.cols)


def _to_hu(px: np.ndarray, slope: float, intercept: float, out: np.ndarray) -> None:
    if slope == 1.0 and float(intercept).is_integer():
        hu = px.astype(np.int32)
        hu += int(intercept)
    else:
        hu = px.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        np.rint(hu, out=hu)
    np.clip(hu, -32768, 32767, out=hu)
    out[...] = hu


def _read_pixels(h: _Header, out: np.ndarray, root: Path) -> None:
    """Read one slice's pixels as HU into ``out`` (a (rows, cols) int16 view).

    pydicom decodes elements lazily, so a damaged element (an unknown VR, a bad number)
    raises only when it is first read, with any exception type: all of them become a
    :class:`StudyLoadError` naming the file."""
    try:
        _read_pixels_unchecked(h, out, root)
    except StudyLoadError:
        raise
    except Exception as exc:  # any type: see above
        raise StudyLoadError(
            f"{_rel(h.path, root)}: the file is damaged ({type(exc).__name__}: {exc}).") from exc


# pydicom's decoders log every failed plugin attempt with its full traceback (about 15 lines
# per plugin and file): while a slice is decoded here, their records are diverted from the
# user's log into ours at debug level, and the failure is reported once, by the error.
_DECODER_LOGGERS = ("pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils",
                    "pydicom.pixels.decoders.pylibjpeg", "pydicom.pixels.decoders.pillow",
                    "openjpeg", "openjpeg.utils", "libjpeg", "pylibjpeg", "PIL")
_decoding = threading.local()
_filter_lock = threading.Lock()
_filter_users = 0


class _DivertDecoderLogs(logging.Filter):
    """Drops the decoder libraries' records made inside :func:`_quiet_decoders` (in this
    thread only) after logging their text at debug level in lungviewer's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(_decoding, "active", False):
            return True
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        log.debug("decoder (%s): %s", record.name, text)
        return False


_DIVERT = _DivertDecoderLogs()


@contextmanager
def _quiet_decoders() -> Iterator[None]:
    """Divert the pixel decoders' log records made in this thread while the block runs.
    The filter sits on their loggers only while some thread is decoding (reference
    counted), so nothing changes for the host application's own use of pydicom."""
    global _filter_users
    with _filter_lock:
        if _filter_users == 0:
            for name in _DECODER_LOGGERS:
                logging.getLogger(name).addFilter(_DIVERT)
        _filter_users += 1
    _decoding.active = True
    try:
        yield
    finally:
        _decoding.active = False
        with _filter_lock:
            _filter_users -= 1
            if _filter_users == 0:
                for name in _DECODER_LOGGERS:
                    logging.getLogger(name).removeFilter(_DIVERT)


def _read_pixels_unchecked(h: _Header, out: np.ndarray, root: Path) -> None:
    if h.pixel_offset is not None:
        try:
            px = _read_native(h)
        except OSError as exc:
            raise StudyLoadError(f"{_rel(h.path, root)}: cannot read the file ({exc}).") from exc
        if px is not None:
            _to_hu(px, h.slope, h.intercept, out)
            return
    try:
        with _mapped(h.path) as fp:
            ds = pydicom.dcmread(fp, force=h.forced)
    except PermissionError as exc:
        raise StudyLoadError(f"{_rel(h.path, root)}: permission denied.") from exc
    except Exception as exc:  # any parser failure is a bad file
        raise StudyLoadError(f"{_rel(h.path, root)}: cannot read the file ({type(exc).__name__}: {exc}).") from exc
    if "PixelData" not in ds:
        raise StudyLoadError(f"{_rel(h.path, root)}: the image has no pixel data.")
    ts = h.transfer_syntax
    if h.forced and "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = ts  # no file meta: the syntax the header pass found
    native = ts in _NATIVE_LE and h.bits_allocated == 16
    frame = h.frame or 0
    n_bytes = 2 * h.rows * h.cols
    if native and len(ds.PixelData) < n_bytes * (frame + 1):
        raise StudyLoadError(
            f"{_rel(h.path, root)}: the pixel data is incomplete ({len(ds.PixelData)} of "
            f"{n_bytes} bytes): the file is truncated or damaged. Copy the study "
            "again, or remove this file to open the rest.")
    try:
        if native:
            raw = np.frombuffer(ds.PixelData, dtype=np.int16 if h.signed else np.uint16,
                                count=h.rows * h.cols, offset=n_bytes * frame)
            px = _correct_unused_bits(raw.copy(), h.bits_stored).reshape(h.rows, h.cols)
        else:
            if h.frame is not None:  # decode this frame only
                ds.pixel_array_options(index=h.frame)
            with _quiet_decoders():
                px = ds.pixel_array
    except Exception as exc:  # decoder plugins raise many types
        name = UID(ts).name if ts else "unknown"
        log.debug("%s: decoding failed", _rel(h.path, root), exc_info=True)
        first = "; ".join(x.strip() for x in str(exc).splitlines() if x.strip()) or \
            type(exc).__name__
        raise StudyLoadError(
            f"{_rel(h.path, root)}: pixel data in transfer syntax '{name}' ({ts}) could not be "
            f"decoded ({first}). Install a decoder (pylibjpeg with its libjpeg/openjpeg/rle "
            "plugins comes with lungviewer) or convert the series to uncompressed DICOM."
        ) from exc
    if px.shape != out.shape:
        raise StudyLoadError(f"{_rel(h.path, root)}: image is {px.shape}, expected {out.shape}.")
    _to_hu(px, h.slope, h.intercept, out)


def _wrapped_warning(n_wrapped: int, n_voxels: int) -> str | None:
    """A warning when an unsigned series holds HU no scanner makes (``n_wrapped`` voxels at
    or above WRAPPED_HU): negative values stored as unsigned numbers wrap around to
    ~65000, so the air reads as dense metal."""
    frac = n_wrapped / max(n_voxels, 1)
    if frac < 0.005:
        return None
    return (f"Implausible HU: {100 * frac:.0f} % of the voxels are above {WRAPPED_HU} HU. The "
            "images are marked unsigned (PixelRepresentation 0) but probably hold negative "
            "values that wrapped around; HU, the lung mask and the CAD are wrong. Export the "
            "series again with signed pixel data.")


def load_series(
    path: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Volume:
    """Load the axial CT series under ``path`` as a Volume (HU int16, (z, y, x)).

    Args:
        path: a folder (searched recursively), one file, or a list of files.
        series_uid: the SeriesInstanceUID to open; default: the CT series with most slices.
        progress: called as ``progress(done, total)`` (headers, then pixels).
        cancel: polled; when it returns True, :class:`lungviewer.cancel.Cancelled` is raised.

    Raises:
        StudyLoadError: nothing loadable, undecodable pixel data, unreadable files, ...
        Cancelled: ``cancel()`` returned True.
    """
    files, root = _list_files(path)
    if not files:
        raise StudyLoadError(_empty_folder_message(root) if root.is_dir() else
                             f"{root} is empty: choose a folder that holds a CT series.")
    total_guess = 2 * len(files)
    scan = _scan(files, progress, cancel, total_guess)
    chosen, notes = _choose_series(scan, series_uid, root)
    headers, proj, warnings = _sort_and_check(chosen, root)
    first = headers[0]
    n, rows, cols = len(headers), first.rows, first.cols
    if n == 1:
        warnings.append("A single slice: this folder holds one image of the series, so there "
                        "are no coronal/sagittal views, 3-D measurements or CAD findings; open "
                        "the folder with the whole series.")
    if n * rows * cols > MAX_VOXELS or rows > 4096 or cols > 4096:
        raise StudyLoadError(
            f"The series is too large to open ({n} × {rows} × {cols} voxels); "
            "lungviewer opens series of up to about 2 billion voxels."
        )
    need = int(MEMORY_FACTOR * 2 * n * rows * cols)
    free = _available_memory()
    if free is not None and need > free:
        raise StudyLoadError(
            f"Not enough memory to open this series ({n} × {rows} × {cols} voxels needs about "
            f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available). Close other programs "
            "or open a smaller series."
        )
    if first.pixel_spacing is None:
        warnings.append("PixelSpacing missing: assuming 1 mm pixels; distances are not to scale.")
    dy, dx = first.pixel_spacing or (1.0, 1.0)
    dz = float(np.median(np.diff(proj))) if n > 1 else float(first.thickness or 1.0)
    hu = np.empty((n, rows, cols), dtype=np.int16)
    done = [len(files)]
    wrapped = np.zeros(n, dtype=np.int64)  # per slice of unsigned data: voxels ≥ WRAPPED_HU

    def work(i: int) -> None:
        if cancel is not None and cancel():
            raise Cancelled("loading was cancelled")
        _read_pixels(headers[i], hu[i], root)
        if not headers[i].signed:
            wrapped[i] = np.count_nonzero(hu[i] >= WRAPPED_HU)

    with ThreadPoolExecutor(_pool_size()) as pool:
        futures = [pool.submit(work, i) for i in range(n)]
        try:
            for k, fut in enumerate(futures):
                fut.result()
                done[0] += 1
                if progress is not None and (k % 8 == 0 or k == n - 1):
                    progress(len(files) + k + 1, len(files) + n)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    wrap_text = _wrapped_warning(int(wrapped.sum()), hu.size)
    if wrap_text:
        warnings.append(wrap_text)
    synthetic = first.is_synthetic
    volume = Volume(
        hu=hu,
        spacing=(dz, float(dy), float(dx)),
        positions=np.stack([h.position for h in headers]),
        orientation=first.orientation,
        sop_uids=[h.sop_uid for h in headers],
        series_uid=first.series_uid,
        study_uid=first.study_uid,
        description=first.description,
        patient_id=first.patient_id,
        modality=first.modality,
        is_synthetic=synthetic,
        warnings=warnings + notes,
        files=[h.path for h in headers],
        slice_thickness=first.thickness,
        source_series_uid=twin_source_uid(first.comments) if synthetic else "",
    )
    log.info("loaded series: %d slices %dx%d, spacing %.2f/%.3f/%.3f mm, %d warning(s)",
             n, rows, cols, dz, dy, dx, len(volume.warnings))
    return volume


@dataclass
class FoundSeries:
    """One series found under a folder tree by :func:`find_series` (headers only): what a
    batch needs to queue it (its folder, its instances for a fingerprint) and, when it
    cannot be opened, why (the same reason :func:`scan_folder` gives)."""

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    folder: Path  # the deepest folder that holds all its files
    instances: list[tuple[str, tuple[float, ...] | None]]  # (SOPInstanceUID, position)
    usable: bool
    reason: str = ""
    first_file: Path | None = None


def find_series(root: str | Path, progress: Progress | None = None,
                cancel: Cancel | None = None) -> tuple[list[FoundSeries], list[Path]]:
    """Every series under the folder tree ``root`` (one header pass over all its files), and
    the folders where none was found: the leaf folders and the folders holding files of
    their own, none of which is an image of a series (empty, corrupt or non-DICOM files;
    :func:`load_series` on such a folder says why)."""
    root = Path(root)
    files, root = _list_files(root)
    scan = _scan(files, progress, cancel, len(files))
    found: list[FoundSeries] = []
    with_series: set[Path] = set()
    for uid, parts in _group(scan.headers).items():
        hs = [h for part in parts for h in part]
        folder = Path(os.path.commonpath([str(h.path.parent) for h in hs]))
        with_series.update(h.path.parent for h in hs)
        why = _why_unusable(parts[0])
        found.append(FoundSeries(
            uid, hs[0].study_uid, hs[0].patient_id, hs[0].modality, folder,
            [(h.sop_uid, None if h.position is None else tuple(float(v) for v in h.position))
             for h in hs], not why, why, hs[0].path))
    holds_files = {p.parent for p in files}
    dirs = [root, *sorted(p for p in root.rglob("*") if p.is_dir()
                          and not p.name.startswith("."))] if root.is_dir() else []
    leaves = {d for d in dirs if not any(c.is_dir() for c in d.iterdir())}
    above = {p for s in found for p in (s.folder, *s.folder.parents)}
    bare = [d for d in dirs if (d in leaves or d in holds_files) and d not in with_series
            and d not in above]
    return sorted(found, key=lambda s: str(s.folder)), bare
