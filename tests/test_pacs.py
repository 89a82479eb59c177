"""PACS networking against a real Orthanc on loopback (Debian ``orthanc orthanc-dicomweb``):
echo, find (study and series, wildcards, date ranges), C-GET / C-MOVE / WADO-RS retrieve
into the study cache, C-STORE / STOW-RS of the viewer's SR and SEG, the priors lookup and
the ``pacs`` command; the faults (refused association, wrong AE, timeout, an abort
mid-retrieve, 10,000 matches, a full cache disk, patient data in logs) each have a test,
some against an in-process pynetdicom SCP where Orthanc cannot be made to misbehave."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomgen import edit_series, expected_hu, write_ct_series
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

import orthanc_server as osv
from lungviewer import pacs
from lungviewer.cancel import Cancelled
from lungviewer.pacs import cache as cache_mod
from lungviewer.study.dicom_series import StudyLoadError, load_series

ME = "LVTEST"
NAME_A, ID_A = "DOE^JANE", "LV-PAT-A7"
NAME_B, ID_B = "ROE^RICHARD", "LV-PAT-B3"


def _need_orthanc():
    why = osv.missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)


def _study(folder: Path, *, pid: str, name: str, date: str, n: int, modality: str = "CT",
           accession: str = "", description: str = "CHEST", rows: int = 24,
           thickness: float = 2.5) -> tuple[str, str, list[Path]]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    files = write_ct_series(folder, n_slices=n, rows=rows, cols=rows,
                            spacing=(thickness, 0.7, 0.7), series_uid=series, study_uid=study,
                            patient_id=pid, patient_name=name, description="AXIAL LUNG")

    def edit(ds, i):
        ds.StudyDate, ds.StudyTime, ds.SeriesNumber = date, "101500", 2
        ds.AccessionNumber, ds.StudyDescription, ds.Modality = accession, description, modality
        ds.FrameOfReferenceUID = frame
    edit_series(files, edit)
    return study, series, files


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Orthanc loaded with patient A (a CT in 2019 and 2021, an MR in 2018) and patient B
    (a CT in 2020); the viewer's C-MOVE SCP port is registered with it."""
    _need_orthanc()
    root = tmp_path_factory.mktemp("orthanc")
    scp_port = osv.free_port()
    o = osv.start(root / "server", {"lungviewer": (ME, scp_port)})
    try:
        data = {}
        data["prior"] = _study(root / "a_prior", pid=ID_A, name=NAME_A, date="20190301", n=6,
                               accession="ACC-A1")
        data["current"] = _study(root / "a_now", pid=ID_A, name=NAME_A, date="20210415", n=8,
                                 accession="ACC-A2", thickness=1.25)
        data["mr"] = _study(root / "a_mr", pid=ID_A, name=NAME_A, date="20180101", n=3,
                            modality="MR", description="BRAIN")
        data["b"] = _study(root / "b", pid=ID_B, name=NAME_B, date="20200610", n=5,
                           accession="ACC-B1")
        for _, _, files in data.values():
            o.upload(files)
        o.scp_port, o.data = scp_port, data
        yield o
    finally:
        o.stop()


def _dimse(o, **kw) -> pacs.Node:
    return pacs.Node("orthanc", host="127.0.0.1", port=o.dicom_port, aet="ORTHANC",
                     calling_aet=ME, local_port=o.scp_port, timeout=10, **kw)


def _web(o) -> pacs.Node:
    return pacs.Node("web", kind="dicomweb", url=o.dicomweb, retrieve="wado")


def _both(o):
    return [_dimse(o), _web(o)]


def test_echo_and_ping(server):
    for node in _both(server):
        assert pacs.verify(node) < 5


def test_find_studies_by_wildcard_date_range_modality_and_accession(server):
    d = server.data
    for node in _both(server):
        found = pacs.find_studies(node, pacs.Query(patient_id="LV-PAT-A*"))
        uids = {s.study_uid for s in found.items}
        assert uids == {d["prior"][0], d["current"][0], d["mr"][0]}, node.kind
        assert found.items[0].date == "20210415"  # newest first
        assert found.items[0].patient_id == ID_A and NAME_A not in repr(found.items[0])
        rng = pacs.find_studies(node, pacs.Query(study_date="20190101-20201231"))
        assert {s.study_uid for s in rng.items} == {d["prior"][0], d["b"][0]}, node.kind
        open_end = pacs.find_studies(node, pacs.Query(study_date="20200101-"))
        assert {s.study_uid for s in open_end.items} == {d["current"][0], d["b"][0]}
        by_name = pacs.find_studies(node, pacs.Query(patient_name="ROE^R*"))
        assert [s.study_uid for s in by_name.items] == [d["b"][0]], node.kind
        acc = pacs.find_studies(node, pacs.Query(accession="ACC-A?"))
        assert {s.study_uid for s in acc.items} == {d["prior"][0], d["current"][0]}
        mr = pacs.find_studies(node, pacs.Query(modality="MR"))
        assert [s.study_uid for s in mr.items] == [d["mr"][0]]
        page = pacs.find_studies(node, pacs.Query(), limit=2)
        assert len(page.items) == 2 and page.more, node.kind


def test_find_series_lists_slices_and_thickness(server):
    study, series, _ = server.data["current"]
    for node in _both(server):
        (s,) = pacs.find_series(node, study)
        assert (s.series_uid, s.n_instances, s.modality) == (series, 8, "CT"), node.kind
        assert s.description == "AXIAL LUNG" and float(s.thickness) == 1.25


def _check_volume(path: Path, n: int) -> None:
    vol = load_series(path)
    assert vol.n_slices == n
    for k in (0, n - 1):
        assert np.array_equal(vol.hu[k], expected_hu(k, 24, 24))


@pytest.mark.parametrize("method", ["get", "move", "wado"])
def test_retrieve_whole_study_into_the_cache(server, tmp_path, method):
    study, series, _ = server.data["current"]
    node = _web(server) if method == "wado" else _dimse(server)
    cache = pacs.StudyCache(tmp_path / "cache")
    seen = []
    entry = pacs.retrieve(node, study, method=method, cache=cache,
                          progress=lambda d, n: seen.append((d, n)))
    assert entry.complete and [s.files for s in entry.series] == [8]
    assert seen and seen[-1][0] == 8
    _check_volume(cache.series_path(study, series), 8)
    assert [e.uid for e in cache.list()] == [study]
    assert not any(p.name.endswith(".part") for p in (tmp_path / "cache").rglob("*"))


def test_send_sr_and_seg_then_query_them_back(server, tmp_path):
    from test_export import make_reading, write_phantom

    from lungviewer.reading.export_dicom import export_dicom

    ct = write_phantom(tmp_path / "ct")
    server.upload(sorted(ct.glob("*.dcm")))
    vol = load_series(ct)
    out = export_dicom(make_reading(vol), vol, tmp_path / "export")
    study = pydicom.dcmread(out.sr).StudyInstanceUID
    res = pacs.send(_dimse(server), [out.sr])
    assert [(r.ok, r.status) for r in res] == [(True, "0x0000")]
    res = pacs.send(_web(server), [out.seg])
    assert [(r.ok, r.status) for r in res] == [(True, "stored")]
    for node in _both(server):
        mods = sorted(s.modality for s in pacs.find_series(node, study))
        assert mods == ["CT", "SEG", "SR"], node.kind
    # the PDF report as Encapsulated PDF, filed with the study
    from lungviewer.pacs.docs import encapsulate_pdf
    from lungviewer.reading.report_pdf import build_report

    pdf = build_report(make_reading(vol), vol, tmp_path / "report.pdf")
    doc = encapsulate_pdf(pdf, vol, tmp_path / "report_pdf.dcm")
    assert pacs.send(_web(server), [doc])[0].ok
    (docs,) = [s for s in pacs.find_series(_dimse(server), study) if s.modality == "DOC"]
    assert docs.n_instances == 1
    with pytest.raises(pacs.PacsError, match="not a PDF"):
        encapsulate_pdf(out.sr, vol, tmp_path / "x.dcm")
    # the objects come back whole
    entry = pacs.retrieve(_dimse(server), study, cache=pacs.StudyCache(tmp_path / "c"))
    sr_series = next(s for s in entry.series if s.modality == "SR")
    (f,) = sr_series.path.glob("*.dcm")
    assert pydicom.dcmread(f).SOPInstanceUID == pydicom.dcmread(out.sr).SOPInstanceUID
    # an unreadable file is answered per object, the others still go
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    res = pacs.send(_dimse(server), [junk, out.sr])
    assert [r.ok for r in res] == [False, True] and "not a DICOM file" in res[0].message


def test_priors_lookup(server):
    d = server.data
    for node in _both(server):
        priors = pacs.find_priors(node, ID_A, "20210415", exclude_study_uid=d["current"][0])
        assert [p.study_uid for p in priors] == [d["prior"][0]], node.kind
        assert pacs.find_priors(node, ID_A, "20190301") == []
        assert [p.study_uid for p in pacs.find_priors(node, ID_A, "20220101")] == [
            d["current"][0], d["prior"][0]]
    with pytest.raises(pacs.PacsError, match="YYYYMMDD"):
        pacs.find_priors(_dimse(server), ID_A, "yesterday")


def test_refused_association_wrong_ae_and_timeout(server):
    o = server
    with pytest.raises(pacs.PacsError, match=r"refused the association: Called AE title not"):
        pacs.verify(pacs.Node("x", host="127.0.0.1", port=o.dicom_port, aet="WRONG",
                              calling_aet=ME))
    with pytest.raises(pacs.PacsError, match=r"Calling AE title not recognised.*NOBODY"):
        pacs.verify(pacs.Node("x", host="127.0.0.1", port=o.dicom_port, aet="ORTHANC",
                              calling_aet="NOBODY"))
    with pytest.raises(pacs.PacsError, match="connection refused"):
        pacs.verify(pacs.Node("x", host="127.0.0.1", port=osv.free_port(), aet="ORTHANC"))
    with socket.socket() as silent:  # accepts the TCP connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        node = pacs.Node("x", host="127.0.0.1", port=silent.getsockname()[1], aet="A",
                         timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(pacs.PacsError, match="timeout"):
            pacs.verify(node)
        assert time.monotonic() - t0 < 5
    with pytest.raises(pacs.PacsError, match="cannot connect"):
        pacs.verify(pacs.Node("w", kind="dicomweb", url=f"http://127.0.0.1:{osv.free_port()}"))
    with pytest.raises(pacs.PacsError, match="404"):
        pacs.verify(pacs.Node("w", kind="dicomweb", url=o.url + "/nothing-here"))


def test_cancel_mid_retrieve_leaves_it_incomplete_and_a_retry_completes(server, tmp_path):
    study, series, _ = server.data["current"]
    cache = pacs.StudyCache(tmp_path / "cache")
    node = _dimse(server)
    got = []
    with pytest.raises(Cancelled):
        pacs.retrieve(node, study, cache=cache, progress=lambda d, n: got.append(d),
                      cancel=lambda: len(got) >= 3)
    entry = cache.study(study)
    assert not entry.complete and not any(s.complete for s in entry.series)
    with pytest.raises(pacs.PacsError, match="incomplete"):
        cache.series_path(study, series)
    entry = pacs.retrieve(node, study, cache=cache)
    assert entry.complete
    _check_volume(cache.series_path(study, series), 8)


def test_cache_disk_full_is_a_clear_message_and_leaves_no_partial_file(server, tmp_path,
                                                                       monkeypatch):
    study, series, _ = server.data["b"]
    calls = []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) > 2:
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        cache_mod.__dict__["_real_write"](path, data)

    monkeypatch.setitem(cache_mod.__dict__, "_real_write", cache_mod._write_file)
    monkeypatch.setattr(cache_mod, "_write_file", full_disk)
    cache = pacs.StudyCache(tmp_path / "cache")
    with pytest.raises(pacs.CacheFullError, match="disk is full"):
        pacs.retrieve(_dimse(server), study, cache=cache)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()
                 and p.name != "state.json"]
    assert len(leftovers) == 2 and all(p.suffix == ".dcm" for p in leftovers)
    assert not cache.study(study).complete
    with pytest.raises(pacs.PacsError, match="incomplete"):
        cache.series_path(study, series)


def test_malformed_or_non_ct_series_gets_the_loaders_clean_error(server, tmp_path):
    study, series, _ = server.data["mr"]
    cache = pacs.StudyCache(tmp_path / "cache")
    pacs.retrieve(_dimse(server), study, cache=cache)
    path = cache.series_path(study, series)
    bad = path / "zz_truncated.dcm"
    bad.write_bytes(next(path.glob("*.dcm")).read_bytes()[:300])
    with pytest.raises(StudyLoadError):
        load_series(path)


def test_patient_names_and_ids_never_reach_the_logs(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # as `lungviewer -v` does
    for name in ("urllib3", "lungviewer"):
        caplog.set_level(logging.DEBUG, logger=name)
    study = server.data["b"][0]
    for node in _both(server):
        pacs.find_studies(node, pacs.Query(patient_id=ID_B, patient_name=NAME_B))
        pacs.find_priors(node, ID_B, "20300101")
        pacs.retrieve(node, study, cache=pacs.StudyCache(tmp_path / node.kind))
        pacs.send(node, server.data["b"][2][:1])
    with pytest.raises(pacs.PacsError):
        pacs.verify(pacs.Node("x", host="127.0.0.1", port=server.dicom_port, aet="WRONG"))
    text = caplog.text
    assert "PACS" in text  # the calls did log
    for secret in (ID_B, NAME_B, "ROE", "RICHARD", "LV-PAT"):
        assert secret not in text


def test_dicomweb_basic_auth_and_refused_credentials(tmp_path, caplog):
    _need_orthanc()
    o = osv.start(tmp_path / "auth", {}, users={"reader": "s3cret-pw"})
    try:
        caplog.set_level(logging.DEBUG)
        node = pacs.Node("web", kind="dicomweb", url=o.dicomweb, auth="basic",
                         username="reader", secret="s3cret-pw")
        assert pacs.verify(node) < 5
        with pytest.raises(pacs.PacsError, match="refused the credentials"):
            pacs.verify(pacs.Node("web", kind="dicomweb", url=o.dicomweb, auth="basic",
                                  username="reader", secret="wrong"))
        assert "s3cret-pw" not in caplog.text
    finally:
        o.stop()


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl (Debian package openssl) "
                    "makes the test certificate")
def test_dimse_over_tls(tmp_path):
    _need_orthanc()
    cert, key = osv.self_signed(tmp_path / "tls")
    o = osv.start(tmp_path / "tls-orthanc", {"lungviewer": (ME, 1)}, tls=(cert, key))
    try:
        node = pacs.Node("tls", host="127.0.0.1", port=o.dicom_port, aet="ORTHANC",
                         calling_aet=ME, tls=True, tls_ca=str(cert), timeout=5)
        assert pacs.verify(node) < 5
        with pytest.raises(pacs.PacsError, match="certificate is not trusted"):
            pacs.verify(pacs.Node("tls", host="127.0.0.1", port=o.dicom_port, aet="ORTHANC",
                                  calling_aet=ME, tls=True, timeout=5))
        with pytest.raises(pacs.PacsError, match="expects TLS"):
            pacs.verify(pacs.Node("plain", host="127.0.0.1", port=o.dicom_port, aet="ORTHANC",
                                  calling_aet=ME, timeout=5))
    finally:
        o.stop()


# -- the pacs command ---------------------------------------------------------------------
def _cli(argv, capsys) -> tuple[int, dict]:
    from lungviewer.cli import main

    rc = main(["pacs", *argv, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_pacs_command(server, tmp_path, capsys):
    o = server
    dimse = ["--host", "127.0.0.1", "--port", str(o.dicom_port), "--aet", "ORTHANC",
             "--calling-aet", ME]
    rc, out = _cli(["echo", *dimse], capsys)
    assert rc == 0 and out["ok"]
    rc, out = _cli(["find", "--url", o.dicomweb, "--patient-id", "LV-PAT-A*",
                    "--study-date", "20190101-20211231", "--modality", "CT"], capsys)
    assert rc == 0 and [s["date"] for s in out["studies"]] == ["20210415", "20190301"]
    study, series, files = o.data["prior"]
    rc, out = _cli(["find", *dimse, "--study", study], capsys)
    assert rc == 0 and out["series"][0]["instances"] == 6
    rc, out = _cli(["get", *dimse, "--study", study, "--out", str(tmp_path / "out")], capsys)
    assert rc == 0 and out["complete"] and out["series"][0]["files"] == 6
    assert load_series(out["series"][0]["path"]).n_slices == 6
    rc, out = _cli(["send", "--url", o.dicomweb, str(files[0])], capsys)
    assert rc == 0 and out["sent"] == 1
    rc, out = _cli(["cache"], capsys)
    assert rc == 0 and [s["study_uid"] for s in out["studies"]] == [study]
    assert out["studies"][0]["complete"] and out["studies"][0]["series"][0]["files"] == 6
    rc, out = _cli(["cache", "--remove", study], capsys)
    assert rc == 0 and out["studies"] == []
    # faults: exit 1 with the message; bad arguments exit 2
    rc, out = _cli(["echo", "--host", "127.0.0.1", "--port", str(o.dicom_port),
                    "--aet", "WRONG"], capsys)
    assert rc == 1 and "refused the association" in out["error"]
    rc, out = _cli(["find", *dimse, "--study-date", "2021"], capsys)
    assert rc == 2 and "YYYYMMDD" in out["error"]
    rc, out = _cli(["echo", "--node", "nowhere"], capsys)
    assert rc == 2 and "no PACS node named 'nowhere'" in out["error"]
    rc, out = _cli(["get", *dimse], capsys)
    assert rc == 2 and "--study" in out["error"]
    # a configured node
    pacs.save_nodes([_dimse(o)])
    rc, out = _cli(["echo", "--node", "orthanc"], capsys)
    assert rc == 0


# -- without Orthanc ------------------------------------------------------------------------
def test_nodes_config_keeps_secrets_in_a_0600_file():
    web = pacs.Node("hospital", kind="dicomweb", url="https://pacs.example/dicom-web",
                    auth="bearer", secret="s3cr3t-token", retrieve="wado")
    dimse = pacs.Node("ris", host="10.0.0.5", port=11112, aet="RIS")
    path = pacs.save_nodes([web, dimse])
    assert "s3cr3t" not in path.read_text() and "s3cr3t" not in repr(web)
    secrets = path.with_name("pacs_secrets.json")
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    old = os.umask(0)  # exports follow the umask (fileio); the secrets never do
    try:
        pacs.save_nodes([web, dimse])
    finally:
        os.umask(old)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    back = {n.name: n for n in pacs.load_nodes()}
    assert back["hospital"].secret == "s3cr3t-token" and back["ris"].port == 11112
    assert pacs.get_node("ris").aet == "RIS"
    with pytest.raises(pacs.PacsError, match="1 to 16"):
        pacs.Node("bad", host="h", aet="A\\B").validate()
    with pytest.raises(pacs.PacsError, match="http"):
        pacs.Node("bad", kind="dicomweb", url="ftp://x").validate()


def _fake_instance(study: str, series: str, k: int) -> Dataset:
    from dicomgen import make_ct_slice
    return make_ct_slice(k=k, z=float(k), rows=8, cols=8, spacing_yx=(1, 1), thickness=1,
                         series_uid=series, study_uid=study, instance_number=k + 1)


def test_cache_listing_and_lru_eviction(tmp_path):
    cache = pacs.StudyCache(tmp_path / "c", limit_bytes=10_000)
    studies = [generate_uid() for _ in range(3)]
    for i, st in enumerate(studies):
        r = cache.begin(st)
        se = generate_uid()
        for _k in range(2):
            r.add(b"x" * 3000, se, generate_uid())
        r.finish(True, {"date": f"2020010{i}", "description": f"S{i}"})
        time.sleep(0.01)
    # three studies of ~6 kB do not fit 10 kB: the oldest two went
    assert [e.uid for e in cache.list()] == [studies[2]]
    assert cache.list()[0].complete and cache.list()[0].description == "S2"
    assert cache.total_bytes() <= 10_000 + 1000


@pytest.fixture
def fake_scp():
    """An in-process pynetdicom SCP: C-FIND answers ``state['matches']`` studies; C-GET
    sends ``state['send']`` of 5 instances, then aborts unless ``state['send'] == 5``."""
    from pynetdicom import AE, StoragePresentationContexts, evt
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
    )

    state = {"matches": 10_000, "send": 2, "sent": 0, "cancelled": threading.Event()}
    study, series = generate_uid(), generate_uid()
    state["study"], state["series"] = study, series
    instances = [_fake_instance(study, series, k) for k in range(5)]

    def on_find(event):
        for i in range(state["matches"]):
            if event.is_cancelled:
                state["cancelled"].set()
                return
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = f"1.2.3.{i}"
            ds.StudyDate = "20200101"
            ds.PatientID = f"P{i}"
            yield 0xFF00, ds

    def on_get(event):
        yield 5
        for k in range(5):
            if k == state["send"]:
                event.assoc.abort()
                return
            state["sent"] += 1
            yield 0xFF00, instances[k]

    ae = AE("FAKE")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for cx in StoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, scu_role=True, scp_role=True)
    port = osv.free_port()
    srv = ae.start_server(("127.0.0.1", port), block=False,
                          evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)])
    state["node"] = pacs.Node("fake", host="127.0.0.1", port=port, aet="FAKE", timeout=5)
    yield state
    srv.shutdown()


def test_ten_thousand_matches_are_capped_and_paged(fake_scp):
    node = fake_scp["node"]
    t0 = time.monotonic()
    first = pacs.find_studies(node, pacs.Query(), limit=100)
    assert len(first.items) == 100 and first.more
    nxt = pacs.find_studies(node, pacs.Query(), limit=100, offset=first.offset + first.limit)
    assert {s.study_uid for s in nxt.items} == {f"1.2.3.{i}" for i in range(100, 200)}
    assert time.monotonic() - t0 < 15
    calls = []
    with pytest.raises(Cancelled):
        pacs.find_studies(node, pacs.Query(), limit=5000,
                          cancel=lambda: calls.append(1) or len(calls) > 50)


def test_peer_abort_mid_retrieve_is_incomplete_and_a_retry_completes(fake_scp, tmp_path):
    node, study, series = fake_scp["node"], fake_scp["study"], fake_scp["series"]
    cache = pacs.StudyCache(tmp_path / "cache")
    with pytest.raises(pacs.PacsError, match="interrupted.*incomplete"):
        pacs.retrieve(node, study, cache=cache)
    entry = cache.study(study)
    assert not entry.complete and [(s.files, s.complete) for s in entry.series] == [(2, False)]
    with pytest.raises(pacs.PacsError, match="incomplete"):
        cache.series_path(study, series)
    fake_scp["send"] = 5
    entry = pacs.retrieve(node, study, cache=cache)
    assert entry.complete and [s.files for s in entry.series] == [5]
    assert len(list(cache.series_path(study, series).glob("*.dcm"))) == 5
    assert CTImageStorage  # the fake serves CT images


REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "LIDC-IDRI-0006"


@pytest.mark.skipif(not REAL.is_dir(), reason="the real development scan "
                    "../shared/data/real/LIDC-IDRI-0006 is absent")
def test_real_scan_copy_round_trips_through_orthanc(server, tmp_path):
    """A copy of the real development scan (133 slices) goes into Orthanc and comes back by
    C-GET as the same volume."""
    files = sorted(REAL.glob("*.dcm"))
    server.upload(files)
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    cache = pacs.StudyCache(tmp_path / "cache")
    entry = pacs.retrieve(_dimse(server), study, cache=cache)
    (series,) = [s for s in entry.series if s.complete]
    assert series.files == len(files)
    back, orig = load_series(cache.series_path(study, series.uid)), load_series(REAL)
    assert back.shape == orig.shape and np.array_equal(back.hu, orig.hu)
