"""Reading a CT series from DICOM files into a :class:`~lungviewer.study.volume.Volume`.

Two passes, both on a thread pool: first the headers only (``stop_before_pixels``) to find
the series, drop what is not an axial CT image (scouts, dose reports, SR, other modalities,
non-DICOM files) and sort the slices by ImagePositionPatient projected on the slice normal
(never by file name or InstanceNumber); then the pixels, written straight into one
preallocated ``int16`` array ``(z, y, x)`` in HU (RescaleSlope/RescaleIntercept applied per
slice). Uncompressed little-endian pixel data is read with ``numpy.frombuffer``; anything
else goes through pydicom's decoders (pylibjpeg, openjpeg, RLE plugins).

Problems that still allow reading (missing slices, uneven spacing, duplicate positions,
mixed sizes, gantry tilt, other series present) become ``Volume.warnings``; problems that do
not raise :class:`StudyLoadError` with a message that names the file and what to do.
Messages and logs never contain patient names or IDs.
"""

from __future__ import annotations

import io
import logging
import mmap
import os
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

from lungviewer.contracts import DEMO_COMPLETE_MARKER, twin_source_uid
from lungviewer.study.volume import Volume

log = logging.getLogger(__name__)

# pydicom checks every value it decodes against its VR (a regex per UI, DS, ...) and warns
# about each bad one; the loader judges the values it uses itself, and the check was 15 %
# of the header pass. Writing still validates (writing_validation_mode is untouched).
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]

#: Uncompressed little-endian syntaxes whose PixelData we read with numpy directly.
_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
#: Hard limit against absurd headers (a 2000×1024×1024 int16 volume is 4 GiB).
MAX_VOXELS = 2_200_000_000
#: Memory a loaded study needs per volume byte: the int16 volume itself (peak 1.01× when
#: loading, bench/bench_memory.py) plus the viewer's bool lung mask (0.5×) and some slack.
MEMORY_FACTOR = 1.7


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


class LoadCancelled(Exception):
    """The user cancelled loading."""


@dataclass
class _Header:
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

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def normal(self) -> np.ndarray | None:
        if self.orientation is None:
            return None
        n = np.cross(self.orientation[:3], self.orientation[3:])
        norm = np.linalg.norm(n)
        return n / norm if norm > 0 else None


@dataclass
class SeriesSummary:
    """One series found in a folder (headers only)."""

    series_uid: str
    description: str
    modality: str
    n_files: int
    rows: int
    cols: int
    usable: bool  # an axial CT image series that load_series can open
    reason: str = ""  # why not usable


@dataclass
class _Scan:
    headers: list[_Header] = field(default_factory=list)
    not_dicom: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def _float_list(value, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


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


def _read_header(path: Path) -> _Header | str:
    """Header of one file, or a string saying why it is not a usable DICOM object."""
    try:
        with _mapped(path) as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            offset = fp.tell()  # pydicom stops at the PixelData element's first byte
    except InvalidDicomError:
        return "not DICOM"
    except PermissionError:
        return "permission denied"
    except Exception as exc:  # noqa: BLE001 - any parser failure (BytesLengthException, ...) is a bad file
        return f"unreadable ({type(exc).__name__})"
    try:
        meta = getattr(ds, "file_meta", None)
        ts = str(getattr(meta, "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
        spacing = _float_list(ds.get("PixelSpacing", []), 2)
        thickness = ds.get("SliceThickness", None)
        # pixel data was skipped: detect its presence from the file's tags we did read
        has_pixels = "Rows" in ds and "Columns" in ds and "BitsAllocated" in ds
        bits = int(ds.get("BitsAllocated", 0) or 0)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        stored = int(ds.get("BitsStored", bits) or bits)
        fast = (ts in _NATIVE_LE and bits == 16 and int(ds.get("SamplesPerPixel", 1)) == 1
                and (stored == 16 or not signed))
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        if not (np.isfinite(slope) and np.isfinite(intercept)):
            return "malformed header (RescaleSlope/RescaleIntercept is not a finite number)"
        return _Header(
            path=path,
            series_uid=str(ds.get("SeriesInstanceUID", "")),
            study_uid=str(ds.get("StudyInstanceUID", "")),
            sop_uid=str(ds.get("SOPInstanceUID", "")),
            modality=str(ds.get("Modality", "")).upper(),
            image_type=tuple(str(v).upper() for v in (ds.get("ImageType", None) or ())),
            description=str(ds.get("SeriesDescription", "")),
            comments=str(ds.get("ImageComments", "")),
            patient_id=str(ds.get("PatientID", "")),
            position=_float_list(ds.get("ImagePositionPatient", []), 3),
            orientation=_float_list(ds.get("ImageOrientationPatient", []), 6),
            rows=int(ds.get("Rows", 0) or 0),
            cols=int(ds.get("Columns", 0) or 0),
            pixel_spacing=tuple(spacing) if spacing is not None else None,  # type: ignore[arg-type]
            thickness=float(thickness) if thickness not in (None, "") else None,
            slope=slope,
            intercept=intercept,
            transfer_syntax=ts,
            has_pixels=has_pixels,
            pixel_offset=offset if fast and has_pixels else None,
            pixel_dtype=("<i2" if signed else "<u2") if fast else "",
        )
    except Exception as exc:  # noqa: BLE001 - values are decoded lazily here; any failure is a bad header
        return f"malformed header ({type(exc).__name__})"


def _list_files(path: str | Path | Sequence[str | Path]) -> tuple[list[Path], Path]:
    if isinstance(path, (str, os.PathLike)):
        root = Path(path)
        if not root.exists():
            raise StudyLoadError(f"{root} does not exist.")
        if root.is_file():
            return [root], root.parent
        try:
            files = sorted(p for p in root.rglob("*") if p.is_file()
                           and not p.name.startswith(".") and not _is_companion(p))
        except PermissionError as exc:
            raise StudyLoadError(f"Cannot list {root}: permission denied ({exc.filename}).") from exc
        return files, root
    files = [Path(p) for p in path]
    return files, (files[0].parent if files else Path("."))


# files that live beside DICOM series and are not images: not worth a warning
_COMPANIONS = {".xml", ".txt", ".json", ".csv", ".md", ".nii", ".gz", ".npy", ".png", ".jpg"}


def _is_companion(path: Path) -> bool:
    return path.suffix.lower() in _COMPANIONS or path.name in (DEMO_COMPLETE_MARKER, "LICENSE")


def _pool_size() -> int:
    return min(8, (os.cpu_count() or 2) * 2)


def _scan(files: list[Path], progress: Progress | None, cancel: Cancel | None,
          total: int) -> _Scan:
    out = _Scan()
    with ThreadPoolExecutor(_pool_size()) as pool:
        for i, (path, res) in enumerate(zip(files, pool.map(_read_header, files))):
            if cancel is not None and cancel():
                pool.shutdown(cancel_futures=True)
                raise LoadCancelled()
            if isinstance(res, str):
                if res == "not DICOM":
                    out.not_dicom.append(path)
                else:
                    out.unreadable.append((path, res))
            else:
                out.headers.append(res)
            if progress is not None and (i % 16 == 0 or i == len(files) - 1):
                progress(i + 1, total)
    return out


def _why_unusable(headers: list[_Header]) -> str:
    # the series' modality by majority: one file with a missing/odd tag must not hide the rest
    modality = Counter(x.modality for x in headers).most_common(1)[0][0]
    if modality != "CT":
        return f"modality {modality or 'unknown'}, not CT"
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


def _group(headers: Iterable[_Header]) -> dict[str, list[_Header]]:
    groups: dict[str, list[_Header]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    return groups


def scan_folder(path: str | Path | Sequence[str | Path]) -> list[SeriesSummary]:
    """The series found under ``path`` (headers only), biggest usable series first."""
    files, _ = _list_files(path)
    scan = _scan(files, None, None, len(files))
    out = []
    for uid, hs in _group(scan.headers).items():
        why = _why_unusable(hs)
        out.append(SeriesSummary(uid, hs[0].description, hs[0].modality, len(hs),
                                 hs[0].rows, hs[0].cols, not why, why))
    return sorted(out, key=lambda s: (not s.usable, -s.n_files))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _choose_series(scan: _Scan, series_uid: str | None, root: Path) -> tuple[list[_Header], list[str]]:
    groups = _group(scan.headers)
    notes: list[str] = []
    if series_uid is not None:
        if series_uid not in groups:
            raise StudyLoadError(f"Series {series_uid} was not found under {root}.")
        chosen = groups[series_uid]
        why = _why_unusable(chosen)
        if why:
            raise StudyLoadError(f"Series {series_uid} cannot be shown: {why}.")
    else:
        usable = {uid: hs for uid, hs in groups.items() if not _why_unusable(hs)}
        if not usable:
            if not scan.headers:
                extra = ""
                if scan.unreadable:
                    p, why = scan.unreadable[0]
                    extra = f" {len(scan.unreadable)} file(s) could not be read, e.g. {_rel(p, root)}: {why}."
                raise StudyLoadError(
                    f"No DICOM files found under {root}.{extra} Choose a folder that holds a CT series."
                )
            found = ", ".join(sorted({f"{hs[0].modality or '?'}: {_why_unusable(hs)}"
                                      for hs in groups.values()}))
            raise StudyLoadError(
                f"No axial CT image series under {root} (found {found}). "
                "lungviewer opens axial CT series."
            )
        uid = max(usable, key=lambda u: len(usable[u]))
        chosen = usable[uid]
        others = len(usable) - 1
        if others:
            notes.append(
                f"{others} other CT series in this folder; opened the one with the most slices "
                f"({len(chosen)} images, '{chosen[0].description}')."
            )
    skipped = len(scan.headers) - len(chosen)
    unusable = [(hs, _why_unusable(hs)) for hs in groups.values() if hs is not chosen]
    unusable = [(hs, why) for hs, why in unusable
                if why and why != "localizer (scout) image"]
    if unusable:
        hs, why = unusable[0]
        notes.append(f"{sum(len(h) for h, _ in unusable)} file(s) of other series that cannot "
                     f"be shown were ignored (e.g. {_rel(hs[0].path, root)}: {why}).")
    if scan.not_dicom:
        notes.append(f"{len(scan.not_dicom)} non-DICOM file(s) ignored.")
    if scan.unreadable:
        p, why = scan.unreadable[0]
        notes.append(f"{len(scan.unreadable)} file(s) could not be read and were skipped "
                     f"(e.g. {_rel(p, root)}: {why}).")
    n_loc = sum(1 for h in scan.headers if h.is_localizer)
    if n_loc:
        notes.append(f"{n_loc} localizer/scout image(s) ignored.")
    del skipped
    return chosen, notes


def _sort_and_check(headers: list[_Header], root: Path) -> tuple[list[_Header], np.ndarray, list[str]]:
    """Keep the slices that form one stack, sort them along the normal; warnings."""
    warnings: list[str] = []
    incomplete = [h for h in headers if not h.is_localizer and not (
        h.has_pixels and h.position is not None and h.orientation is not None)]
    if incomplete:
        warnings.append(f"{len(incomplete)} image(s) without pixel data or position were skipped "
                        f"(e.g. {_rel(incomplete[0].path, root)}).")
    headers = [h for h in headers if h.has_pixels and not h.is_localizer
               and h.position is not None and h.orientation is not None]
    # one image size: keep the majority
    sizes = Counter((h.rows, h.cols) for h in headers)
    (rows, cols), _ = sizes.most_common(1)[0]
    if len(sizes) > 1:
        dropped = sum(n for s, n in sizes.items() if s != (rows, cols))
        warnings.append(f"Mixed image sizes: kept {rows}×{cols}, dropped {dropped} image(s) of another size.")
        headers = [h for h in headers if (h.rows, h.cols) == (rows, cols)]
    # one orientation: keep the majority
    orients = Counter(tuple(np.round(h.orientation, 3)) for h in headers)
    ref_orient, _ = orients.most_common(1)[0]
    if len(orients) > 1:
        before = len(headers)
        headers = [h for h in headers if tuple(np.round(h.orientation, 3)) == ref_orient]
        warnings.append(f"Mixed orientations: dropped {before - len(headers)} image(s).")
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
    # gantry tilt: positions do not advance along the normal
    if len(headers) > 1:
        d = headers[-1].position - headers[0].position
        norm = np.linalg.norm(d)
        if norm > 0:
            cosang = abs(float(d @ normal)) / norm
            angle = float(np.degrees(np.arccos(np.clip(cosang, -1, 1))))
            if angle > 0.5:
                warnings.append(f"Gantry tilt of about {angle:.1f}°: slices are shown as acquired, "
                                "without tilt correction; 3-D distances are approximate.")
    return headers, proj, warnings


_PIXEL_TAG = b"\xe0\x7f\x10\x00"


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
        if length < 2 * n or length == 0xFFFFFFFF:
            return None
        px = np.fromfile(fp, dtype=h.pixel_dtype, count=n)
    return px.reshape(h.rows, h.cols) if px.size == n else None


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
    except Exception as exc:  # noqa: BLE001 - see above
        raise StudyLoadError(
            f"{_rel(h.path, root)}: the file is damaged ({type(exc).__name__}: {exc}).") from exc


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
            ds = pydicom.dcmread(fp)
    except PermissionError as exc:
        raise StudyLoadError(f"{_rel(h.path, root)}: permission denied.") from exc
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise StudyLoadError(f"{_rel(h.path, root)}: cannot read the file ({type(exc).__name__}: {exc}).") from exc
    if "PixelData" not in ds:
        raise StudyLoadError(f"{_rel(h.path, root)}: the image has no pixel data.")
    ts = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    bits = int(ds.get("BitsAllocated", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    stored_bits = int(ds.get("BitsStored", bits))
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples != 1:
        raise StudyLoadError(f"{_rel(h.path, root)}: colour image ({samples} samples per pixel), not CT.")
    native = ts in _NATIVE_LE and bits == 16 and (stored_bits == 16 or not signed)
    if native and len(ds.PixelData) < 2 * h.rows * h.cols:
        raise StudyLoadError(
            f"{_rel(h.path, root)}: the pixel data is incomplete ({len(ds.PixelData)} of "
            f"{2 * h.rows * h.cols} bytes): the file is truncated or damaged. Copy the study "
            "again, or remove this file to open the rest.")
    try:
        if native:
            raw = np.frombuffer(ds.PixelData, dtype=np.int16 if signed else np.uint16,
                                count=h.rows * h.cols)
            px = raw.reshape(h.rows, h.cols)
        else:
            px = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise many types
        name = UID(ts).name if ts else "unknown"
        raise StudyLoadError(
            f"{_rel(h.path, root)}: pixel data in transfer syntax '{name}' ({ts}) could not be "
            f"decoded ({exc}). Install a decoder (pylibjpeg with its libjpeg/openjpeg/rle plugins "
            "comes with lungviewer) or convert the series to uncompressed DICOM."
        ) from exc
    if px.shape != out.shape:
        raise StudyLoadError(f"{_rel(h.path, root)}: image is {px.shape}, expected {out.shape}.")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    _to_hu(px, slope, intercept, out)


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
        cancel: polled; when it returns True, :class:`LoadCancelled` is raised.

    Raises:
        StudyLoadError: nothing loadable, undecodable pixel data, unreadable files, ...
        LoadCancelled: ``cancel()`` returned True.
    """
    files, root = _list_files(path)
    if not files:
        raise StudyLoadError(f"{root} is empty: choose a folder that holds a CT series.")
    total_guess = 2 * len(files)
    scan = _scan(files, progress, cancel, total_guess)
    chosen, notes = _choose_series(scan, series_uid, root)
    headers, proj, warnings = _sort_and_check(chosen, root)
    first = headers[0]
    n, rows, cols = len(headers), first.rows, first.cols
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

    def work(i: int) -> None:
        if cancel is not None and cancel():
            raise LoadCancelled()
        _read_pixels(headers[i], hu[i], root)

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
    text = f"{first.description} {first.comments}".upper()
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
        is_synthetic="SYNTHETIC" in text,
        warnings=warnings + notes,
        files=[h.path for h in headers],
        slice_thickness=first.thickness,
        source_series_uid=twin_source_uid(first.comments) if "SYNTHETIC" in text else "",
    )
    log.info("loaded series: %d slices %dx%d, spacing %.2f/%.3f/%.3f mm, %d warning(s)",
             n, rows, cols, dz, dy, dx, len(volume.warnings))
    return volume
