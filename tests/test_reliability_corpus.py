"""What the commands write and return on bad input: ``segment --out`` is atomic and keeps
the exact file name, no NaN/Infinity in any JSON, exit codes that tell the truth.

(The loader's and the LIDC XML parser's corpora of bad inputs are in test_loading.py and
test_annotations.py, beside the modules' other tests.)
"""

from __future__ import annotations

import argparse
import errno
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomgen import edit_series, write_ct_series

from lungviewer.cli import main as cli_main
from lungviewer.commands import segment as segment_cmd


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("series")
    write_ct_series(folder, n_slices=4, rows=32, cols=32, shuffle_names=False)
    return folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name)


@pytest.mark.parametrize("name, kind", [
    ("upper.NPY", "npy"), ("Mask.Npy", "npy"), ("mask.NII.GZ", "nii.gz"), ("MASK.Nii", "nii"),
])
def test_segment_out_keeps_the_exact_name(series, tmp_path, capsys, name, kind):
    out = tmp_path / name
    assert cli_main(["segment", str(series), "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["out"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no upper.NPY.npy, no temp
    data = out.read_bytes()
    if kind == "npy":
        assert data[:6] == b"\x93NUMPY"
        assert np.load(out, allow_pickle=False).shape == (4, 32, 32)
    else:
        import gzip

        import nibabel as nib

        assert (data[:2] == b"\x1f\x8b") == (kind == "nii.gz")  # gzip only for .nii.gz
        # (nibabel's own loader lower-cases the name, so read the bytes)
        img = nib.Nifti1Image.from_bytes(gzip.decompress(data) if kind == "nii.gz" else data)
        assert img.shape == (32, 32, 4)


def test_segment_failed_write_keeps_the_old_file(series, tmp_path, monkeypatch, capsys):
    """Disk full half-way through the mask: exit 1, the user's file as it was, no
    temporary file left behind."""
    out = tmp_path / "mask.npy"
    out.write_bytes(b"the user's previous mask")

    def disk_full(fh, arr, allow_pickle=False):
        fh.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment_cmd.np, "save", disk_full)
    assert cli_main(["segment", str(series), "--out", str(out)]) == 1
    assert "No space left" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's previous mask"
    assert _leftovers(tmp_path) == []


def test_segment_to_a_missing_folder_fails_before_loading(series, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.setattr(segment_cmd, "load_series",
                        lambda *a, **k: pytest.fail("loaded although the folder is missing"))
    out = tmp_path / "no" / "such" / "mask.npy"
    assert cli_main(["segment", str(series), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    assert cli_main(["segment", str(series), "--out", str(tmp_path)]) == 1  # a folder
    assert cli_main(["segment", str(series), "--out", str(tmp_path / ".npy")]) == 1


def test_segment_never_prints_infinity(series, tmp_path, monkeypatch, capsys):
    real = segment_cmd.segment_lungs

    def infinite(*a, **k):
        res = real(*a, **k)
        res.volume_ml = lambda *a: float("inf")
        return res

    monkeypatch.setattr(segment_cmd, "segment_lungs", infinite)
    out = tmp_path / "m.npy"
    assert cli_main(["segment", str(series), "--out", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    assert "Infinity" not in captured.out and "lung_volume_ml is inf" in captured.err
    assert not out.exists()  # nothing written for a result that is not a number


@pytest.mark.parametrize("spacing", [(0.0, 0.0), (-0.7, 0.7), (1e6, 1e6)])
def test_segment_with_implausible_pixel_spacing_is_a_clear_error(tmp_path, capsys, spacing):
    """Spacing 0 gave 'Infinity' mL (not JSON) and exit 0; now the load is refused."""
    files = write_ct_series(tmp_path / "s", n_slices=3, rows=32, cols=32)
    edit_series(files, lambda ds, i: setattr(ds, "PixelSpacing", list(spacing)))
    out = tmp_path / "m.npy"
    assert cli_main(["segment", str(tmp_path / "s"), "--out", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "PixelSpacing" in captured.err and not out.exists()


def test_synth_refuses_a_file_as_output_folder(tmp_path, capsys):
    from lungviewer.commands import synth

    target = tmp_path / "a_file"
    target.write_text("x")
    args = argparse.Namespace(patient="LIDC-IDRI-0001", series=None, out=str(target))
    assert synth.run(args) == 2
    assert "is a file" in capsys.readouterr().err


def test_info_and_nodules_json_are_strict_json(tmp_path, capsys, monkeypatch):
    """The JSON of info and nodules parse with a strict parser (no NaN, no Infinity)."""
    from lungviewer.study import nodules
    from lungviewer.study.lidc_db import LidcDatabaseError

    def no_database():
        raise LidcDatabaseError("no database in this test")

    monkeypatch.setattr(nodules, "get_database", no_database)  # not needed here, and slow
    files = write_ct_series(tmp_path, n_slices=3, rows=32, cols=32)
    assert pydicom.dcmread(files[0]).Rows == 32

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))

    assert cli_main(["info", str(tmp_path), "--json"]) == 0
    strict(capsys.readouterr().out)
    assert cli_main(["nodules", str(tmp_path), "--json"]) == 0
    strict(capsys.readouterr().out)
