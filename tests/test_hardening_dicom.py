"""Hardening of DICOM loading: mutated, hostile and odd files never crash the loader.

Property-based tests (hypothesis) mutate a valid small series and assert that
``load_series`` either returns a Volume or raises :class:`StudyLoadError`, in bounded time
and memory; explicit cases cover non-DICOM files, empty folders, unreadable files, non-CT
modalities, compressed data without a decoder, absurd sizes and patient data in
logs/messages.
"""

from __future__ import annotations

import builtins
import logging
import shutil
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomgen import write_ct_series
from lungviewer.study import dicom_series
from lungviewer.study.dicom_series import LoadCancelled, StudyLoadError, load_series, scan_folder
from lungviewer.study.volume import Volume

N_SLICES = 4
MAX_SECONDS = 10.0  # one load of a 4×16×16 series, mutated, on a busy 2-core machine
# Peak memory traced by tracemalloc (Python objects and numpy arrays, all threads) of one
# scan_folder + load_series of a mutated series. Measured: a warm clean load peaks at
# ≈ 50 KB, the worst of the 160 mutated examples at ≈ 240 KB, the first load of a process
# (lazy imports, caches) at ≈ 2 MB; 32 MiB is 16× that. Headers that make the loader
# allocate a volume far larger than the files (4 × 4096 × 4096 int16 = 128 MiB) fail.
MAX_PEAK_BYTES = 32 * 2**20

HYPO = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A valid 4-slice 16×16 CT series (the files every mutation starts from)."""
    folder = tmp_path_factory.mktemp("template")
    write_ct_series(folder, n_slices=N_SLICES, rows=16, cols=16, shuffle_names=False)
    return folder


def _copy(template: Path) -> Path:
    out = Path(tempfile.mkdtemp(prefix="hard-", dir=template.parent))
    for f in sorted(template.iterdir()):
        shutil.copy(f, out / f.name)
    return out


def _load_clean(folder: Path) -> Volume | StudyLoadError:
    """load_series must return a Volume or raise StudyLoadError, quickly and without
    allocating much more than the tiny series needs."""
    t0 = time.perf_counter()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        for summary in scan_folder(folder):  # the open dialog's header scan never raises either
            assert summary.usable or summary.reason
        try:
            out: Volume | StudyLoadError = load_series(folder)
        except StudyLoadError as exc:
            out = exc
            assert str(exc).strip(), "an error must say what is wrong"
        # any other exception type fails the test here (propagates to hypothesis)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert time.perf_counter() - t0 < MAX_SECONDS
    assert peak < MAX_PEAK_BYTES, f"loading a 4×16×16 series peaked at {peak / 2**20:.1f} MiB"
    if isinstance(out, Volume):
        assert out.hu.dtype == np.int16 and out.hu.ndim == 3
        assert out.n_slices >= 1
    shutil.rmtree(folder, ignore_errors=True)
    return out


def _victim(folder: Path, which: int) -> Path:
    return sorted(folder.iterdir())[which % N_SLICES]


# -- property-based: byte-level mutations ---------------------------------------------------
@HYPO
@given(which=st.integers(0, N_SLICES - 1), frac=st.floats(0.0, 1.0))
def test_truncated_file_gives_volume_or_clean_error(template, which, frac):
    folder = _copy(template)
    f = _victim(folder, which)
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * frac)])
    _load_clean(folder)


@HYPO
@given(which=st.integers(0, N_SLICES - 1),
       edits=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=12),
       all_files=st.booleans())
def test_overwritten_bytes_give_volume_or_clean_error(template, which, edits, all_files):
    folder = _copy(template)
    targets = sorted(folder.iterdir()) if all_files else [_victim(folder, which)]
    for f in targets:
        data = bytearray(f.read_bytes())
        for pos, value in edits:
            data[int(pos * len(data))] = value
        f.write_bytes(bytes(data))
    _load_clean(folder)


REQUIRED = ["Rows", "Columns", "PixelData", "ImagePositionPatient", "ImageOrientationPatient",
            "BitsAllocated", "PixelRepresentation", "Modality", "SeriesInstanceUID",
            "PixelSpacing", "RescaleSlope", "RescaleIntercept", "SamplesPerPixel"]


@HYPO
@given(tag=st.sampled_from(REQUIRED), all_files=st.booleans(),
       which=st.integers(0, N_SLICES - 1))
def test_deleted_tags_give_volume_or_clean_error(template, tag, all_files, which):
    folder = _copy(template)
    targets = sorted(folder.iterdir()) if all_files else [_victim(folder, which)]
    for f in targets:
        ds = pydicom.dcmread(f)
        del ds[tag]
        ds.save_as(f)
    out = _load_clean(folder)
    if not all_files:  # one bad file never hides the other three images
        assert isinstance(out, Volume) or tag in ("PixelData", "BitsAllocated",
                                                  "PixelRepresentation", "SamplesPerPixel")


# (keyword, VR written, value): wrong types and absurd values
WRONG = [
    ("Rows", "LO", "sixteen"), ("Columns", "DS", "1e9"), ("Rows", "US", 65535),
    ("Columns", "US", 0), ("Rows", "US", 1), ("BitsAllocated", "US", 7),
    ("BitsAllocated", "US", 32), ("SamplesPerPixel", "US", 3),
    ("ImagePositionPatient", "LO", "here"), ("ImagePositionPatient", "DS", ["1", "2"]),
    ("ImageOrientationPatient", "DS", ["0"] * 6), ("PixelSpacing", "LO", "wide"),
    ("RescaleSlope", "LO", "steep"), ("RescaleIntercept", "DS", "nan"),
    ("SliceThickness", "LO", "thick"), ("ImageType", "US", 3), ("PixelRepresentation", "US", 9),
]


@HYPO
@given(edit=st.sampled_from(WRONG), all_files=st.booleans(), which=st.integers(0, N_SLICES - 1))
def test_wrong_types_and_absurd_values_give_volume_or_clean_error(template, edit, all_files, which):
    keyword, vr, value = edit
    folder = _copy(template)
    targets = sorted(folder.iterdir()) if all_files else [_victim(folder, which)]
    for f in targets:
        ds = pydicom.dcmread(f)
        tag = pydicom.datadict.tag_for_keyword(keyword)
        del ds[keyword]
        ds.add_new(tag, vr, value)
        with pydicom.config.disable_value_validation():
            ds.save_as(f)
    _load_clean(folder)


# -- explicit cases -------------------------------------------------------------------------
def test_absurd_dimensions_refused_before_allocating(template, monkeypatch):
    folder = _copy(template)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.Rows = ds.Columns = 60000  # header says 60000×60000: 7 GB per slice
        ds.save_as(f)
    monkeypatch.setattr(dicom_series, "_read_pixels",
                        lambda *a: pytest.fail("pixels read for an absurd series"))
    with pytest.raises(StudyLoadError, match="too large"):
        load_series(folder)


def test_out_of_memory_sized_study_refused_before_allocating(template, monkeypatch):
    """A series over the voxel limit is refused from the headers alone: no array, no pixels."""
    monkeypatch.setattr(dicom_series, "MAX_VOXELS", N_SLICES * 16 * 16 - 1)
    allocated = []
    real_empty = np.empty
    monkeypatch.setattr(dicom_series.np, "empty",
                        lambda *a, **k: allocated.append(a) or real_empty(*a, **k))
    with pytest.raises(StudyLoadError, match=r"too large.*4 × 16 × 16"):
        load_series(template)
    assert not [a for a in allocated if a and a[0] == (N_SLICES, 16, 16)]
    monkeypatch.undo()
    assert load_series(template).n_slices == N_SLICES  # the limit is the only reason


def test_study_larger_than_available_memory_refused_before_allocating(template, monkeypatch):
    real_free = dicom_series._available_memory()
    assert real_free is None or real_free > 10 * 2**20  # the real figure is plausible
    need = dicom_series.MEMORY_FACTOR * 2 * N_SLICES * 16 * 16
    monkeypatch.setattr(dicom_series, "_available_memory", lambda: int(need) - 1)
    monkeypatch.setattr(dicom_series, "_read_pixels",
                        lambda *a: pytest.fail("pixels read although memory is short"))
    with pytest.raises(StudyLoadError, match=r"Not enough memory.*4 × 16 × 16.*available"):
        load_series(template)
    monkeypatch.undo()
    monkeypatch.setattr(dicom_series, "_available_memory", lambda: int(need) + 1)
    assert load_series(template).n_slices == N_SLICES


def test_non_dicom_files_and_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StudyLoadError, match=r"empty.*choose a folder"):
        load_series(empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.bin").write_bytes(b"\x00" * 300)
    (junk / "photo.dat").write_bytes(np.random.default_rng(0).bytes(5000))
    (junk / "zero").write_bytes(b"")
    with pytest.raises(StudyLoadError, match="No DICOM files found under"):
        load_series(junk)
    with pytest.raises(StudyLoadError, match="does not exist"):
        load_series(tmp_path / "nowhere")


def test_huge_folder_of_junk_opens_in_bounded_time(template):
    """2000 non-image files beside a series: it still opens, quickly, with one note."""
    folder = _copy(template)
    junk = folder / "junk"
    junk.mkdir()
    for i in range(2000):
        (junk / f"f{i:05d}").write_bytes(b"not dicom %d" % i)
    t0 = time.perf_counter()
    vol = load_series(folder)
    assert time.perf_counter() - t0 < 20.0
    assert vol.n_slices == N_SLICES
    assert any("2000 non-DICOM file(s) ignored" in w for w in vol.warnings)


@pytest.mark.parametrize("value", ["nan", "inf", "-1e400"])
def test_non_finite_rescale_skips_the_file_instead_of_garbage_hu(template, value):
    folder = _copy(template)
    f = _victim(folder, 1)
    ds = pydicom.dcmread(f)
    ds["RescaleIntercept"].value = value
    with pydicom.config.disable_value_validation():
        ds.save_as(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN cast into the volume
        vol = load_series(folder)
    assert vol.n_slices == N_SLICES - 1
    assert vol.hu.min() >= -1024 and vol.hu.max() <= 0  # only the real images' HU
    assert any(f.name in w and "finite" in w for w in vol.warnings)


@pytest.mark.parametrize("which", range(N_SLICES))
def test_one_odd_orientation_does_not_refuse_the_series(template, which):
    folder = _copy(template)
    f = _victim(folder, which)
    ds = pydicom.dcmread(f)
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # one sagittal image in the series
    ds.save_as(f)
    vol = load_series(folder)
    assert vol.n_slices == N_SLICES - 1
    assert any("Mixed orientations: dropped 1" in w for w in vol.warnings)
    for g in sorted(folder.iterdir()):  # all sagittal: still refused
        ds = pydicom.dcmread(g)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.save_as(g)
    with pytest.raises(StudyLoadError, match="not an axial series"):
        load_series(folder)


def test_truncated_pixel_data_is_named_as_such(template):
    folder = _copy(template)
    f = _victim(folder, 2)
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(StudyLoadError, match=rf"{f.name}: the pixel data is incomplete \(412 of 512"):
        load_series(folder)


def test_huge_length_field_does_not_allocate_it(template):
    """A 4-byte element length of ~2 GiB in a 1 KB file (here the file meta version, OB):
    the header scan used to allocate the whole length for a moment (Python's buffered
    read sizes its buffer from the request). Now the file is skipped or read, cheaply."""
    folder = _copy(template)
    f = _victim(folder, 0)
    data = f.read_bytes()
    tag = b"\x02\x00\x01\x00OB\x00\x00"  # (0002,0001) OB, 2 reserved bytes, 4-byte length
    at = data.index(tag) + len(tag)
    f.write_bytes(data[:at] + (0x7FFF_FFF0).to_bytes(4, "little") + data[at + 4:])
    out = _load_clean(folder)  # asserts the traced peak stays under MAX_PEAK_BYTES
    assert isinstance(out, Volume) and out.n_slices == N_SLICES - 1


def test_damaged_element_read_lazily_gives_clean_error(template):
    """pydicom decodes elements lazily: an unknown VR on PixelData raised a
    NotImplementedError out of load_series when the pixels were read."""
    folder = _copy(template)
    f = _victim(folder, 1)
    data = f.read_bytes()
    tag = b"\xe0\x7f\x10\x00OW"
    assert data.count(tag) == 1
    f.write_bytes(data.replace(tag, b"\xe0\x7f\x10\x00O\x02"))
    with pytest.raises(StudyLoadError, match=rf"{f.name}: the file is damaged"):
        load_series(folder)


def test_one_bad_file_does_not_stop_the_rest(template):
    folder = _copy(template)
    (folder / "garbage").write_bytes(b"DICM" * 50)
    f = _victim(folder, 1)
    f.write_bytes(f.read_bytes()[:400])  # cut inside the header
    vol = load_series(folder)
    assert vol.n_slices == N_SLICES - 1
    text = " ".join(vol.warnings)
    assert "ignored" in text or "skipped" in text or "could not be read" in text
    assert f.name in text  # the user learns which file was left out


def test_unreadable_file_is_skipped_with_a_message(template, monkeypatch):
    """Permission denied on one file: the rest opens and the note names the file. (Patched
    ``open`` so the test also holds when run as root, where chmod 000 does not block reads.)"""
    folder = _copy(template)
    denied = _victim(folder, 2)
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if Path(str(file)) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    vol = load_series(folder)
    assert vol.n_slices == N_SLICES - 1
    assert any("permission denied" in w and denied.name in w for w in vol.warnings)
    # every file denied: a clear error naming one of them
    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", str(file))) if str(file).startswith(str(folder))
        else real_open(file, *a, **k))
    with pytest.raises(StudyLoadError, match=r"could not be read.*permission denied"):
        load_series(folder)


def test_chmod_000_file(template):
    folder = _copy(template)
    f = _victim(folder, 0)
    f.chmod(0)
    try:
        vol = load_series(folder)
    finally:
        f.chmod(0o644)
    if vol.n_slices == N_SLICES:  # running as root: chmod does not block reading
        import os
        assert os.geteuid() == 0
    else:
        assert vol.n_slices == N_SLICES - 1
        assert any("permission denied" in w for w in vol.warnings)


@pytest.mark.parametrize("modality", ["MR", "PT", "US", ""])
def test_non_ct_modality_refused(template, modality):
    folder = _copy(template)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = modality
        ds.save_as(f)
    with pytest.raises(StudyLoadError, match=rf"No axial CT.*{modality or 'unknown'}.*not CT"):
        load_series(folder)


def test_compressed_without_decoder(tmp_path, monkeypatch):
    write_ct_series(tmp_path, n_slices=3, rows=16, cols=16, compress_rle=True)

    def no_decoder(self, *a, **k):
        raise NotImplementedError("no pixel data handler available for RLE Lossless")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(StudyLoadError) as info:
        load_series(tmp_path)
    msg = str(info.value)
    assert "IM" in msg and "RLE Lossless" in msg and "Install a decoder" in msg


def test_cancel_during_load_raises_load_cancelled(template):
    calls = []
    with pytest.raises(LoadCancelled):
        load_series(template, cancel=lambda: calls.append(1) or len(calls) > 2)


# -- privacy ---------------------------------------------------------------------------------
PHI = {"name": "Zyxwvut^Quirinalis", "id": "PID-93417-QX", "birth": "19230417"}


def _phi_series(folder: Path) -> None:
    write_ct_series(folder, n_slices=5, rows=16, cols=16, patient_name=PHI["name"],
                    patient_id=PHI["id"])
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.PatientBirthDate = PHI["birth"]
        ds.save_as(f)


def _assert_no_phi(text: str) -> None:
    for value in (*PHI.values(), "Zyxwvut", "Quirinalis", "93417"):
        assert value not in text, f"patient data {value!r} leaked"


def test_logs_and_messages_never_contain_patient_data(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # root: every logger
    good = tmp_path / "good"
    _phi_series(good)
    texts = []
    vol = load_series(good)
    texts += vol.warnings + [vol.description]
    assert vol.patient_id == PHI["id"]  # read (the viewer needs it) ...
    # broken variants: missing pixels, other modality, truncated, mixed series
    for name, damage in [
        ("nopix", lambda ds: ds.__delitem__("PixelData")),
        ("mr", lambda ds: setattr(ds, "Modality", "MR")),
        ("rows", lambda ds: setattr(ds, "Rows", 60000)),
    ]:
        bad = tmp_path / name
        shutil.copytree(good, bad)
        for f in bad.iterdir():
            ds = pydicom.dcmread(f)
            damage(ds)
            ds.save_as(f)
        try:
            v = load_series(bad)
            texts += v.warnings
        except StudyLoadError as exc:
            texts.append(str(exc))
    cut = tmp_path / "cut"
    shutil.copytree(good, cut)
    for i, f in enumerate(sorted(cut.iterdir())):
        f.write_bytes(f.read_bytes()[: 300 + 200 * i])
    with pytest.raises(StudyLoadError) as info:
        load_series(cut)
    texts.append(str(info.value))
    texts += [r.getMessage() for r in caplog.records]
    assert len(texts) > 5
    _assert_no_phi("\n".join(texts))  # ... but never shown in logs or messages
