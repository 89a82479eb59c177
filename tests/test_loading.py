"""load_series / scan_folder / `lungviewer info` on small real DICOM series."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from dicomgen import (expected_hu, write_ct_series, write_non_dicom, write_non_image,
                      write_scout)
from lungviewer.cli import main as cli_main
from lungviewer.study.dicom_series import LoadCancelled, StudyLoadError, load_series, scan_folder


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
    with pytest.raises(LoadCancelled):
        load_series(tmp_path, cancel=lambda: True)


def test_progress_reaches_the_end(tmp_path):
    write_ct_series(tmp_path, n_slices=10)
    seen = []
    load_series(tmp_path, progress=lambda i, n: seen.append((i, n)))
    assert seen and seen[-1][0] == seen[-1][1]
    assert all(b >= a for (a, _), (b, _) in zip(seen, seen[1:]))


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
