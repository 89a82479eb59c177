"""lungviewer.study.dicom_series (load_series, scan_folder, the header model) and
``lungviewer info``, on small real DICOM series written by ``dicomgen``.

Three parts: the loader on valid series (sorting, spacing, rescale, missing slices, ...);
hardening (property-based tests with hypothesis mutate a valid series and assert that
``load_series`` either returns a Volume or raises :class:`StudyLoadError`, in bounded time
and memory, plus explicit cases: non-DICOM files, empty folders, unreadable files, non-CT
modalities, compressed data without a decoder, absurd sizes, patient data in
logs/messages); and a corpus of bad inputs, one test per class of failure (bits above
BitsStored, multi-frame, a series split by geometry, implausible pixel spacing, rescale
slope 0, wrapped unsigned data, orientation jitter, the synthetic marker, empty images,
files without preamble, archives, hidden files, feet-first order, decoder logs, pydicom's
global settings).
"""

from __future__ import annotations

import builtins
import itertools
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomgen import (
    edit_series,
    expected_hu,
    set_raw_pixels,
    strip_preamble,
    write_ct_series,
    write_multiframe,
    write_non_dicom,
    write_non_image,
    write_scout,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.encaps import encapsulate

from lungviewer.cli import main as cli_main
from lungviewer.contracts import TWIN_MANUFACTURER
from lungviewer.study import dicom_series
from lungviewer.cancel import Cancelled
from lungviewer.study.dicom_series import StudyLoadError, load_series, scan_folder
from lungviewer.study.volume import Volume


def _expected_volume(n, rows=64, cols=64, missing=()):
    return np.stack([expected_hu(k, rows, cols) for k in range(n) if k not in missing])


def test_sorted_by_position_not_name_or_instance_number(tmp_path):
    files = write_ct_series(tmp_path, n_slices=12, shuffle_names=True, seed=3)
    vol = load_series(tmp_path)
    assert vol.shape == (12, 64, 64)
    assert vol.hu.dtype == np.int16
    np.testing.assert_array_equal(vol.hu, _expected_volume(12))
    assert np.all(np.diff(vol.z_positions) > 0)
    # the i-th slice is the i-th file in z order, whatever its name
    assert [p.name for p in vol.files] == [p.name for p in files]
    assert vol.sop_uids == [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                            for p in files]


def test_spacing_from_positions_and_pixel_spacing(tmp_path):
    write_ct_series(tmp_path, n_slices=6, spacing=(1.25, 0.6, 0.8))
    vol = load_series(tmp_path)
    assert vol.spacing == pytest.approx((1.25, 0.6, 0.8))
    assert vol.warnings == []


def test_rescale_slope_intercept_per_slice(tmp_path):
    write_ct_series(tmp_path, n_slices=9, slope_variants=True)
    vol = load_series(tmp_path)
    np.testing.assert_array_equal(vol.hu, _expected_volume(9))


def test_file_list_input_and_single_slice_lookup(tmp_path):
    files = write_ct_series(tmp_path, n_slices=5)
    vol = load_series(list(reversed(files)))
    assert vol.n_slices == 5
    assert vol.slice_index_of_sop(vol.sop_uids[3]) == 3
    assert vol.slice_index_at_z(vol.z_positions[2] + 0.4) == 2
    assert vol.slice_index_at_z(vol.z_positions[-1] + 5.0) is None


def test_missing_slice_is_reported(tmp_path):
    write_ct_series(tmp_path, n_slices=10, missing=(4,))
    vol = load_series(tmp_path)
    assert vol.n_slices == 9
    assert any("missing" in w for w in vol.warnings)
    np.testing.assert_array_equal(vol.hu, _expected_volume(10, missing=(4,)))


def test_duplicate_positions_dropped_with_warning(tmp_path):
    files = write_ct_series(tmp_path, n_slices=6)
    shutil.copy(files[2], tmp_path / "copy_of_slice")
    ds = pydicom.dcmread(tmp_path / "copy_of_slice")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "copy_of_slice")
    vol = load_series(tmp_path)
    assert vol.n_slices == 6
    assert any("duplicate" in w for w in vol.warnings)


def test_scout_sr_and_non_dicom_are_ignored(tmp_path):
    write_ct_series(tmp_path / "ct", n_slices=7)
    write_scout(tmp_path)
    write_non_image(tmp_path)
    write_non_dicom(tmp_path)
    vol = load_series(tmp_path)
    assert vol.n_slices == 7
    text = " ".join(vol.warnings)
    assert "localizer" in text and "non-DICOM" in text


def test_largest_series_chosen_and_named_series_honoured(tmp_path):
    big = write_ct_series(tmp_path / "a", n_slices=8)
    small = write_ct_series(tmp_path / "b", n_slices=4, description="SMALL")
    vol = load_series(tmp_path)
    assert vol.n_slices == 8
    uid_small = pydicom.dcmread(small[0], stop_before_pixels=True).SeriesInstanceUID
    assert load_series(tmp_path, series_uid=uid_small).n_slices == 4
    summaries = scan_folder(tmp_path)
    assert [s.n_files for s in summaries] == [8, 4]
    assert all(s.usable for s in summaries)
    assert pydicom.dcmread(big[0], stop_before_pixels=True).SeriesInstanceUID == vol.series_uid
    with pytest.raises(StudyLoadError, match="not found"):
        load_series(tmp_path, series_uid="1.2.3.4")


def test_mixed_sizes_keep_the_majority(tmp_path):
    uid = pydicom.uid.generate_uid()
    study = pydicom.uid.generate_uid()
    write_ct_series(tmp_path / "a", n_slices=6, series_uid=uid, study_uid=study)
    write_ct_series(tmp_path / "b", n_slices=2, rows=32, cols=32, series_uid=uid,
                    study_uid=study, z0=200.0)
    vol = load_series(tmp_path)
    assert vol.shape == (6, 64, 64)
    assert any("Mixed image sizes" in w for w in vol.warnings)


def test_gantry_tilt_reported(tmp_path):
    files = write_ct_series(tmp_path, n_slices=5, shuffle_names=False)
    for i, p in enumerate(files):
        ds = pydicom.dcmread(p)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + i * 1.0, z]  # rows shift with z: a 22° tilt
        ds.save_as(p)
    vol = load_series(tmp_path)
    assert any("tilt" in w for w in vol.warnings)


def test_rle_compressed_series_decodes(tmp_path):
    write_ct_series(tmp_path, n_slices=4, compress_rle=True)
    vol = load_series(tmp_path)
    np.testing.assert_array_equal(vol.hu, _expected_volume(4))


def test_undecodable_pixel_data_names_file_and_syntax(tmp_path):
    files = write_ct_series(tmp_path, n_slices=3)
    ds = pydicom.dcmread(files[1])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    ds.PixelData = encapsulate([bytes(ds.PixelData)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(files[1], enforce_file_format=True)
    with pytest.raises(StudyLoadError) as err:
        load_series(tmp_path)
    msg = str(err.value)
    assert files[1].name in msg and "1.2.840.10008.1.2.4.100" in msg


@pytest.mark.parametrize("setup, needle", [
    (lambda d: None, "is empty"),
    (lambda d: write_non_dicom(d), "No DICOM"),
    (lambda d: write_scout(d), "localizer"),
])
def test_folders_without_a_ct_series_give_a_clear_error(tmp_path, setup, needle):
    setup(tmp_path)
    with pytest.raises(StudyLoadError) as err:
        load_series(tmp_path)
    assert needle.lower() in str(err.value).lower()


def test_missing_path_and_cancel(tmp_path):
    with pytest.raises(StudyLoadError, match="does not exist"):
        load_series(tmp_path / "nope")
    write_ct_series(tmp_path, n_slices=5)
    with pytest.raises(Cancelled):
        load_series(tmp_path, cancel=lambda: True)


def test_progress_reaches_the_end(tmp_path):
    write_ct_series(tmp_path, n_slices=10)
    seen = []
    load_series(tmp_path, progress=lambda i, n: seen.append((i, n)))
    assert seen and seen[-1][0] == seen[-1][1]
    assert all(b >= a for (a, _), (b, _) in itertools.pairwise(seen))


def test_info_command_json(tmp_path, capsys):
    write_ct_series(tmp_path, n_slices=6, missing=(2,))
    assert cli_main(["info", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    lo = info["loaded"]
    assert lo["slices"] == 5 and lo["shape"] == [5, 64, 64]
    assert lo["spacing_mm"] == [2.5, 0.7, 0.7]
    assert lo["hu_min"] == int(_expected_volume(6, missing=(2,)).min())
    assert any("missing" in w for w in lo["warnings"])
    assert "TEST-0001" not in json.dumps(info) and "PATIENT" not in json.dumps(info)
    assert cli_main(["info", str(tmp_path / "none"), "--json"]) == 1
    assert "does not exist" in json.loads(capsys.readouterr().out)["error"]


def test_uneven_slice_spacing_is_reported(tmp_path):
    """Steps of 2.5 and 3.0 mm mixed (no slice missing): the series loads, in z order, with
    the uneven-spacing warning; the same series evenly spaced has none."""
    even = tmp_path / "even"
    write_ct_series(even, n_slices=8, spacing=(2.5, 0.7, 0.7), shuffle_names=False)
    vol = load_series(even)
    assert vol.n_slices == 8
    assert not any("Uneven slice spacing" in w for w in vol.warnings)

    uneven = tmp_path / "uneven"
    files = write_ct_series(uneven, n_slices=8, spacing=(2.5, 0.7, 0.7), shuffle_names=True)
    steps = [2.5, 3.0, 2.5, 3.0, 3.0, 2.5, 3.0]
    z = -100.0 + np.concatenate([[0.0], np.cumsum(steps)])
    for p, zk in zip(files, z):  # files come back in planned (ascending z) order
        ds = pydicom.dcmread(p)
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, float(zk)]
        ds.save_as(p)
    vol = load_series(uneven)
    assert vol.n_slices == 8  # nothing dropped, nothing reported missing
    np.testing.assert_allclose(vol.z_positions, z)
    np.testing.assert_array_equal(vol.hu, _expected_volume(8))
    assert not any("missing" in w for w in vol.warnings)
    uneven_w = [w for w in vol.warnings if w.startswith("Uneven slice spacing")]
    assert len(uneven_w) == 1, vol.warnings
    assert "steps from 2.50 to 3.00 mm" in uneven_w[0]
    assert vol.spacing[0] == pytest.approx(float(np.median(steps)))


# ==========================================================================================
# hardening: mutated, hostile and odd files never crash the loader
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
    with pytest.raises(Cancelled):
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


# ==========================================================================================
# corpus: one test per class of bad input (each failed before the validated header model)
def _series(folder: Path, n: int = 6, rows: int = 16, cols: int = 16, **kw) -> list[Path]:
    return write_ct_series(folder, n_slices=n, rows=rows, cols=cols, shuffle_names=False, **kw)


@pytest.mark.parametrize("signed", [False, True])
def test_bits_above_bits_stored_are_masked_like_pydicom(tmp_path, signed):
    """BitsStored 12 with the four unused high bits set: the native fast path must give
    what pydicom's decoder gives (unsigned: masked; signed: sign-extended from bit 11)."""
    files = _series(tmp_path, n=4)
    rng = np.random.default_rng(1)

    def edit(ds, i):
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelRepresentation = int(signed)
        ds.RescaleIntercept = -1024 if not signed else 0
        value = rng.integers(0, 4096, (16, 16)).astype(np.uint16)  # 12-bit patterns
        set_raw_pixels(ds, value | np.uint16(0xF000 if i % 2 else 0xA000))  # junk above

    edit_series(files, edit)
    vol = load_series(tmp_path)
    ref = []
    for f in vol.files:
        ds = pydicom.dcmread(f)
        ref.append(ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope)
                   + int(ds.RescaleIntercept))
    np.testing.assert_array_equal(vol.hu, np.stack(ref))
    lo, hi = (-2048, 2047) if signed else (-1024, 4095 - 1024)
    assert vol.hu.min() >= lo and vol.hu.max() <= hi  # nothing up to 32767


def test_multi_frame_without_per_frame_geometry_is_refused_by_name(tmp_path):
    """A legacy multi-frame file with only top-level geometry is not loaded as one slice:
    refused, saying multi-frame."""
    write_multiframe(tmp_path / "mf", frames=5)
    with pytest.raises(StudyLoadError, match="multi-frame") as err:
        load_series(tmp_path / "mf")
    assert "one slice per file" in str(err.value)
    [summary] = scan_folder(tmp_path / "mf")
    assert not summary.usable and "multi-frame" in summary.reason
    # beside a single-frame series of the same UID, the multi-frame file is left out, named
    mf = pydicom.dcmread(tmp_path / "mf" / "multiframe.dcm")
    _series(tmp_path / "ct", n=4, series_uid=mf.SeriesInstanceUID)
    shutil.copy(tmp_path / "mf" / "multiframe.dcm", tmp_path / "ct")
    vol = load_series(tmp_path / "ct")
    assert vol.n_slices == 4
    assert any("multi-frame" in w and "multiframe.dcm" in w for w in vol.warnings)


@pytest.mark.parametrize("compress", [False, True])
def test_enhanced_ct_loads_every_frame_with_its_geometry(tmp_path, compress):
    """Enhanced CT: geometry and rescale only in the functional groups, frames in reverse z
    order: one slice per frame, sorted by the frames' own positions, HU exact."""
    path = write_multiframe(tmp_path, frames=6, enhanced=True)
    if compress:
        ds = pydicom.dcmread(path)
        ds.compress(pydicom.uid.RLELossless)
        ds.save_as(path, enforce_file_format=True)
    vol = load_series(tmp_path)
    assert vol.n_slices == 6 and vol.warnings == []
    np.testing.assert_array_equal(vol.hu, np.stack([expected_hu(k, 16, 16) for k in range(6)]))
    np.testing.assert_allclose(vol.z_positions, 2.5 * np.arange(6))
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.7)) and vol.slice_thickness == 2.5
    # a frame with an implausible spacing refuses the file, naming the frame
    ds = pydicom.dcmread(path)
    pm = pydicom.Dataset()
    pm.PixelSpacing = [0, 0]
    ds.PerFrameFunctionalGroupsSequence[2].PixelMeasuresSequence = [pm]
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(StudyLoadError, match="frame 3: PixelSpacing 0"):
        load_series(tmp_path)


def test_two_fields_of_view_with_one_uid_are_split_not_merged(tmp_path):
    """Two reconstructions (350 and 500 mm field of view) share a SeriesInstanceUID: they
    are two stacks, the larger opens with its own spacing, and the warning names the split
    (no 'gantry tilt' made up from the mixed positions)."""
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    _series(tmp_path / "a", n=8, spacing=(2.5, 0.68, 0.68), series_uid=uid, study_uid=study)
    _series(tmp_path / "b", n=6, spacing=(2.5, 0.98, 0.98), series_uid=uid, study_uid=study,
            origin_xy=(-250.0, -250.0), z0=-99.0)
    vol = load_series(tmp_path)
    assert vol.n_slices == 8 and vol.spacing[1:] == pytest.approx((0.68, 0.68))
    assert all(f.parent.name == "a" for f in vol.files)
    text = " ".join(vol.warnings)
    assert "split by geometry" in text and "6 image(s) of 16×16, 0.98×0.98 mm" in text
    assert "tilt" not in text
    parts = [s for s in scan_folder(tmp_path) if s.series_uid == uid]
    assert sorted(s.n_files for s in parts) == [6, 8] and all(s.usable for s in parts)
    assert load_series(tmp_path, series_uid=uid).n_slices == 8


@pytest.mark.parametrize("spacing", [(0.0, 0.0), (-0.7, -0.7), (0.7, 0.0), (5000.0, 5000.0)])
def test_implausible_pixel_spacing_is_refused(tmp_path, spacing):
    files = _series(tmp_path, n=4)
    edit_series(files, lambda ds, i: setattr(ds, "PixelSpacing", list(spacing)), which=[1])
    vol = load_series(tmp_path)  # one bad file: skipped, named
    assert vol.n_slices == 3 and vol.spacing[1:] == pytest.approx((0.7, 0.7))
    assert any(files[1].name in w and "PixelSpacing" in w for w in vol.warnings)
    edit_series(files, lambda ds, i: setattr(ds, "PixelSpacing", list(spacing)))
    with pytest.raises(StudyLoadError, match="PixelSpacing .* not a plausible pixel size"):
        load_series(tmp_path)


def test_rescale_slope_zero_skips_the_file(tmp_path):
    files = _series(tmp_path, n=4)
    edit_series(files, lambda ds, i: setattr(ds, "RescaleSlope", 0), which=[2])
    vol = load_series(tmp_path)
    assert vol.n_slices == 3
    assert any(files[2].name in w and "RescaleSlope is 0" in w for w in vol.warnings)
    np.testing.assert_array_equal(vol.hu, np.stack([expected_hu(k, 16, 16) for k in (0, 1, 3)]))


def test_unsigned_data_with_wrapped_negatives_is_warned(tmp_path):
    """HU written as signed numbers but labelled unsigned, intercept 0: the air (-1000)
    reads as 64536. The volume loads, with a plausibility warning."""
    files = _series(tmp_path, n=4, intercept=0.0)
    edit_series(files, lambda ds, i: setattr(ds, "PixelRepresentation", 0))
    vol = load_series(tmp_path)
    assert any("wrapped around" in w and "PixelRepresentation 0" in w for w in vol.warnings)
    clean = tmp_path / "clean"
    _series(clean, n=4)
    edit_series(sorted(clean.iterdir()), lambda ds, i: setattr(ds, "PixelRepresentation", 0))
    assert not any("wrapped" in w for w in load_series(clean).warnings)  # +1024 offset: fine


def test_orientation_jitter_across_a_rounding_edge_does_not_split(tmp_path):
    """Cosines that differ by 1e-7 on either side of a rounding edge (0.0005) are one
    orientation: no slice dropped, no split."""
    files = _series(tmp_path, n=6)
    c = 0.0005

    def edit(ds, i):
        e = c + (1e-7 if i % 2 else -1e-7)
        r = np.array([1.0, e, 0.0])
        ds.ImageOrientationPatient = [*(r / np.linalg.norm(r)), 0.0, 1.0, 0.0]

    edit_series(files, edit)
    vol = load_series(tmp_path)
    assert vol.n_slices == 6
    assert not any("orientation" in w.lower() or "split" in w for w in vol.warnings)


@pytest.mark.parametrize("tags, synthetic", [
    ({"SeriesDescription": "Synthetic Mono 70keV"}, False),
    ({"SeriesDescription": "SYNTHETIC LIDC twin", "ImageComments": "synthetic MPR"}, False),
    ({"Manufacturer": TWIN_MANUFACTURER}, True),
    ({"ImageComments": "SYNTHETIC image (v1), not a patient image"}, True),
])
def test_synthetic_means_the_twins_own_marker(tmp_path, tags, synthetic):
    files = _series(tmp_path, n=3)
    edit_series(files, lambda ds, i: [setattr(ds, k, v) for k, v in tags.items()])
    assert load_series(tmp_path).is_synthetic is synthetic


def test_rows_columns_zero_is_refused_in_load_and_info(tmp_path, capsys):
    files = _series(tmp_path, n=3)

    def edit(ds, i):
        ds.Rows = ds.Columns = 0
        ds.PixelData = b""

    edit_series(files, edit)
    with pytest.raises(StudyLoadError, match="0 × 0: the image has no pixels"):
        load_series(tmp_path)
    assert cli_main(["info", str(tmp_path)]) == 1
    assert "no pixels" in capsys.readouterr().err
    assert cli_main(["info", str(tmp_path), "--json"]) == 1
    assert "no pixels" in json.loads(capsys.readouterr().out)["error"]


def test_files_without_preamble_are_read(tmp_path):
    """No 128-byte preamble (with and without the file meta group): read with force, the
    same volume; a non-DICOM file that happens to start like one is still not DICOM."""
    files = _series(tmp_path, n=4)
    strip_preamble(files[0])
    strip_preamble(files[2], keep_meta=False)
    (tmp_path / "fake").write_bytes(b"\x08\x00\x16\x00" + b"junk" * 100)
    vol = load_series(tmp_path)
    assert vol.n_slices == 4
    np.testing.assert_array_equal(vol.hu, np.stack([expected_hu(k, 16, 16) for k in range(4)]))
    assert any("1 non-DICOM" in w for w in vol.warnings)
    only = tmp_path / "one"
    only.mkdir()
    shutil.copy(files[0], only / "a")
    assert load_series(only).n_slices == 1


def test_archives_must_be_unpacked(tmp_path):
    files = _series(tmp_path / "ct", n=3)
    zpath = tmp_path / "series.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in files:
            z.write(f, f.name)
    with pytest.raises(StudyLoadError, match="archives must be unpacked first"):
        load_series(zpath)
    folder = tmp_path / "only_zip"
    folder.mkdir()
    shutil.copy(zpath, folder / "series.zip")
    shutil.copy(zpath, folder / "renamed")  # found by its first bytes, not its name
    with pytest.raises(StudyLoadError, match="archives must be unpacked first") as err:
        load_series(folder)
    assert "is empty" not in str(err.value) and "ZIP" in str(err.value)
    shutil.copy(zpath, tmp_path / "ct" / "copy.zip")
    vol = load_series(tmp_path / "ct")
    assert vol.n_slices == 3 and any("archives must be unpacked" in w for w in vol.warnings)
    misnamed = tmp_path / "slice.zip"  # a DICOM file is read whatever its name
    shutil.copy(files[0], misnamed)
    assert load_series(misnamed).n_slices == 1


def test_folder_of_hidden_files_is_not_called_empty(tmp_path):
    (tmp_path / ".DS_Store").write_bytes(b"\0" * 64)
    (tmp_path / "._IM0001").write_bytes(b"\0" * 64)
    with pytest.raises(StudyLoadError) as err:
        load_series(tmp_path)
    msg = str(err.value)
    assert "empty" not in msg and "hidden" in msg and ".DS_Store" in msg


@pytest.mark.parametrize("orientation, head_step", [
    ((1, 0, 0, 0, 1, 0), 1),     # head first supine: normal +z
    ((-1, 0, 0, 0, 1, 0), -1),   # feet first supine: normal -z, sorted along it
])
def test_head_step_follows_the_patient_axis(tmp_path, orientation, head_step):
    _series(tmp_path, n=5, orientation=orientation)
    vol = load_series(tmp_path)
    assert vol.head_step == head_step
    assert np.sign(np.diff(vol.z_positions)).tolist() == [head_step] * 4


def test_head_step_of_a_single_slice_follows_the_normal():
    one = np.zeros((1, 4, 4), np.int16)
    ffs = Volume(hu=one, spacing=(1, 1, 1), positions=[[0, 0, 5]],
                 orientation=[-1, 0, 0, 0, 1, 0])
    hfs = Volume(hu=one, spacing=(1, 1, 1), positions=[[0, 0, 5]])
    assert (ffs.head_step, hfs.head_step) == (-1, 1)


def test_corrupt_jpeg2000_logs_one_line_not_tracebacks(tmp_path, caplog):
    """pydicom logs each failed decoder plugin with a traceback; the user gets the error
    (one line, naming the file), our log has the decoders' text at debug level."""
    files = _series(tmp_path, n=3, rows=64, cols=64)

    def edit(ds, i):
        ds.compress(pydicom.uid.JPEG2000Lossless)
        if i == 1:
            data = bytearray(ds.PixelData)
            data[40:-10:7] = b"\x55" * len(range(40, len(data) - 10, 7))  # codestream damaged
            ds.PixelData = bytes(data)

    edit_series(files, edit)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StudyLoadError, match=files[1].name) as err:
        load_series(tmp_path)
    assert "\n" not in str(err.value)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
    assert not any(r.exc_info for r in caplog.records if not r.name.startswith("lungviewer"))
    assert any(r.name == dicom_series.log.name and "decoder" in r.getMessage()
               for r in caplog.records if r.levelno == logging.DEBUG)
    # outside a load, pydicom's own logging is untouched
    assert not logging.getLogger("pydicom.pixels.decoders.base").filters


def test_import_and_load_leave_pydicom_settings_alone(tmp_path):
    """A library must not change its host's pydicom configuration."""
    _series(tmp_path, n=3)
    code = (
        "import pydicom, sys\n"
        "before = pydicom.config.settings.reading_validation_mode\n"
        "from lungviewer.study.dicom_series import load_series\n"
        f"load_series({str(tmp_path)!r})\n"
        "sys.exit(0 if pydicom.config.settings.reading_validation_mode == before else 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_thousands_of_distinct_geometries_split_quickly(tmp_path):
    """A hostile UID whose 1500 images all differ in orientation: split in bounded time
    (one vectorised comparison per stack)."""
    files = _series(tmp_path, n=1)
    h = dicom_series._read_header(files[0])
    assert not isinstance(h, str)
    import dataclasses

    angles = np.linspace(0, 0.25, 1500)
    many = [dataclasses.replace(h, orientation=np.array(
        [np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0])) for a in angles]
    t0 = time.perf_counter()
    parts = dicom_series._split_by_geometry(many + [h])
    assert time.perf_counter() - t0 < 5.0
    assert len(parts) == 1500 and max(map(len, parts)) == 2  # h and the angle-0 copy


@pytest.mark.parametrize("syntax", ["implicit", "big-endian", "deflated", "jpeg2000", "rle"])
def test_transfer_syntaxes_give_the_exact_volume(tmp_path, syntax):
    """The variants that already loaded keep loading exactly through the header model
    (a deflated file's pixel offset is in the inflated stream, not the file)."""
    from pydicom import uid

    files = _series(tmp_path, n=3, rows=64, cols=64)

    def edit(ds, i):
        if syntax == "implicit":
            ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
        elif syntax == "big-endian":
            ds.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian
            ds.PixelData = np.frombuffer(ds.PixelData, "<i2").astype(">i2").tobytes()
        elif syntax == "deflated":
            ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
        elif syntax == "jpeg2000":
            ds.compress(uid.JPEG2000Lossless)
        else:
            ds.compress(uid.RLELossless)

    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        edit(ds, i)
        if syntax == "big-endian":  # pydicom converts endianness only when told to
            pydicom.dcmwrite(f, ds, implicit_vr=False, little_endian=False,
                             force_encoding=True)
        else:
            ds.save_as(f, enforce_file_format=True)
    assert str(pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID) != uid.ExplicitVRLittleEndian
    vol = load_series(tmp_path)
    np.testing.assert_array_equal(vol.hu, np.stack([expected_hu(k, 64, 64) for k in range(3)]))
    assert vol.warnings == []


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(stored=st.integers(9, 16), signed=st.booleans(), implicit=st.booleans(),
       slope=st.sampled_from([1.0, 0.5, 2.0]), intercept=st.sampled_from([-1024.0, 0.0, -3.5]),
       seed=st.integers(0, 10_000))
def test_fast_path_equals_pydicoms_decoder(tmp_path_factory, stored, signed, implicit, slope,
                                           intercept, seed):
    """Any BitsStored, signedness, VR encoding and rescale, with random bit patterns (high
    bits set too): the loader's HU equal pydicom's pixel_array × slope + intercept."""
    folder = tmp_path_factory.mktemp("fast")
    files = _series(folder, n=2)
    rng = np.random.default_rng(seed)

    def edit(ds, i):
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = stored, stored - 1, int(signed)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        set_raw_pixels(ds, rng.integers(0, 2**16, (16, 16)).astype(np.uint16))
        if implicit:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian

    edit_series(files, edit)
    vol = load_series(folder)
    ref = []
    for f in vol.files:
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.float64) * slope + intercept
        ref.append(np.clip(np.rint(hu), -32768, 32767))
    np.testing.assert_array_equal(vol.hu, np.stack(ref).astype(np.int16))
    shutil.rmtree(folder, ignore_errors=True)
