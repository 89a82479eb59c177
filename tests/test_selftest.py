"""``lungviewer self-test``: the whole program path passes from the source tree, and the
checks inside it fail when they should (tampered weights, a step that never finishes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lungviewer import paths
from lungviewer.ui import selftest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_self_test_passes_from_source(tmp_path):
    """The real command in a fresh process, with an empty cache: every step passes, the
    report has the figures the packaging report needs, and the screenshot exists."""
    env = dict(os.environ, LUNGVIEWER_CACHE_DIR=str(tmp_path / "cache"),
               LUNGVIEWER_CONFIG_DIR=str(tmp_path / "config"))
    env.pop("QT_QPA_PLATFORM", None)  # the self-test must set offscreen itself
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lungviewer", "self-test", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    names = [s["name"] for s in report["steps"]]
    assert names == list(selftest.STEPS)
    assert all(s["ok"] is True for s in report["steps"]), report["steps"]
    assert report["ok"] is True and report["failed_step"] is None
    assert report["frozen"] is False
    assert 0 < report["time_to_first_frame_s"] < 60
    assert report["device"]
    assert Path(report["screenshot"]).is_file()
    assert report["total_s"] < elapsed + 1
    # the twin was generated into the given cache, not the user's
    assert report["cache_dir"] == str(tmp_path / "cache")
    assert any((tmp_path / "cache").glob("twins/*/COMPLETE"))


def test_verify_weights_accepts_shipped_and_rejects_tampered(tmp_path):
    src = paths.weights_dir()
    if not (src / "manifest.json").is_file():
        pytest.fail(f"no shipped weights in {src}")
    n = selftest.verify_weights(src)
    manifest = json.loads((src / "manifest.json").read_text())
    assert n >= len(manifest["models"])
    copy = tmp_path / "w"
    shutil.copytree(src, copy)
    victim = copy / manifest["models"]["detector"]["file"]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(selftest.StepFailed, match="sha256"):
        selftest.verify_weights(copy)
    victim.unlink()
    with pytest.raises(selftest.StepFailed, match="missing"):
        selftest.verify_weights(copy)


def test_wait_times_out_instead_of_hanging(qapp, tmp_path):
    test = selftest.SelfTest(tmp_path)
    test.app = qapp
    t0 = time.monotonic()
    with pytest.raises(selftest.StepFailed, match="timed out"):
        test.wait("never", lambda: False, 0.3)
    assert time.monotonic() - t0 < 2.0
    # a failure event ends the wait at once, naming the problem
    test.events["failure"] = "the study could not be opened: broken"
    t0 = time.monotonic()
    with pytest.raises(selftest.StepFailed, match="broken"):
        test.wait("never", lambda: False, 30)
    assert time.monotonic() - t0 < 2.0


def test_a_failing_step_stops_the_run_and_is_named(tmp_path, monkeypatch):
    test = selftest.SelfTest(tmp_path)
    calls = []

    def fake(name, fail=False):
        def step():
            calls.append(name)
            if fail:
                raise selftest.StepFailed("lung volume 0.10 L outside 2.0–8.0 L")
            return "fine"
        return step

    for name in selftest.STEPS:
        monkeypatch.setattr(test, "step_" + name.replace(" ", "_"),
                            fake(name, fail=name == "parenchyma"))
    assert test.run() is False
    assert calls == list(selftest.STEPS[:selftest.STEPS.index("parenchyma") + 1])
    by_name = {r.name: r for r in test.results}
    assert by_name["parenchyma"].ok is False and "outside" in by_name["parenchyma"].detail
    assert by_name["screenshot"].ok is None
    report = {"ok": False, "failed_step": "parenchyma", "frozen": False, "platform": "x",
              "total_s": 1.0, "steps": [r.__dict__ for r in test.results]}
    text = selftest.format_report(report)
    assert "FAIL at step 'parenchyma'" in text
    assert len(text.splitlines()) <= 24  # one screen
