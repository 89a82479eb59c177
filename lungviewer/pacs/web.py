"""DICOMweb with dicomweb-client: QIDO-RS (ping, find), WADO-RS (retrieve) and STOW-RS
(send). dicomweb-client and urllib3 log request URLs (with query parameters: patient
names and IDs) and headers (credentials) at DEBUG, so the first is kept at WARNING and the
second's lines lose their query strings."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from .cache import Retrieval
from .model import FindResult, Query, SendResult, SeriesInfo
from .nodes import Node, PacsError

log = logging.getLogger(__name__)
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)


class _NoQuery(logging.Filter):
    """Drop query strings (``?PatientID=…``) from urllib3's request lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is left to logging
            return True
        if "?" in msg:
            record.msg, record.args = re.sub(r"\?[^\s\"']*", "?…", msg), ()
        return True


_URLLIB3 = logging.getLogger("urllib3.connectionpool")
if not any(isinstance(f, _NoQuery) for f in _URLLIB3.filters):
    _URLLIB3.addFilter(_NoQuery())

Cancel = Callable[[], bool] | None
ProgressFn = Callable[[int, int], None] | None


_LITERAL = {"%2A": "*", "%3F": "?", "%5E": "^", "%2C": ",", "%3A": ":", "%2F": "/"}


def _session():
    """A requests session that sends QIDO wildcards and PN separators (``* ? ^``) as they
    are: dicomweb-client percent-encodes them and some servers (Orthanc 1.10) do not
    decode query values, so ``PatientID=AB%2A`` would match nothing."""
    import requests

    class Session(requests.Session):
        def send(self, request, **kwargs):
            url = request.url or ""
            if "?" in url:
                head, _, query = url.partition("?")
                request.url = head + "?" + re.sub(
                    r"%(2A|3F|5E|2C|3A|2F)", lambda m: _LITERAL["%" + m.group(1)], query,
                    flags=re.IGNORECASE)
            return super().send(request, **kwargs)
    return Session()


def client(node: Node):
    from dicomweb_client import DICOMwebClient

    session = _session()
    if node.auth == "basic":
        session.auth = (node.username, node.secret)
    elif node.auth == "bearer":
        session.headers["Authorization"] = f"Bearer {node.secret}"
    if node.tls_ca:
        session.verify = node.tls_ca
    wc = DICOMwebClient(node.url.rstrip("/"), session=session, timeout=float(node.timeout))
    wc.set_http_retry_params(retry=False)  # a failure is reported at once, the user retries
    return wc


def _error(node: Node, exc: Exception, what: str) -> PacsError:
    import requests

    where = node.address()
    if isinstance(exc, requests.exceptions.Timeout):
        return PacsError(f"{where}: no answer within {node.timeout:g} s (timeout) during {what}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return PacsError(f"{where}: cannot connect or the connection broke during {what}")
    if isinstance(exc, requests.exceptions.HTTPError):
        code = exc.response.status_code if exc.response is not None else 0
        if code in (401, 403):
            return PacsError(f"{where}: the server refused the credentials (HTTP {code})")
        if code == 404:
            return PacsError(f"{where}: not found (HTTP 404): is this the DICOMweb base URL?")
        return PacsError(f"{where}: {what} failed (HTTP {code})")
    return PacsError(f"{where}: {what} failed ({type(exc).__name__})")


def ping(node: Node) -> None:
    try:
        client(node).search_for_studies(limit=1)
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        raise _error(node, exc, "a QIDO-RS query") from None


_STUDY_FIELDS = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                 "NumberOfStudyRelatedInstances", "PatientBirthDate", "AccessionNumber",
                 "StudyTime"]
_SERIES_FIELDS = ["SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances",
                  "SliceThickness", "Modality"]


def find_studies(node: Node, q: Query, *, limit: int, offset: int = 0) -> FindResult:
    # Orthanc 1.10's QIDO-RS matches no name with a '^' in the filter: send the component
    # separator as the one-character wildcard '?' (the same names match)
    filters = {k: v for k, v in {
        "PatientID": q.patient_id, "PatientName": q.patient_name.replace("^", "?"), "StudyDate": q.study_date,
        "AccessionNumber": q.accession, "ModalitiesInStudy": q.modality,
        "StudyDescription": q.description, "StudyInstanceUID": q.study_uid}.items() if v}
    try:
        found = client(node).search_for_studies(
            limit=limit + 1, offset=offset or None, fields=_STUDY_FIELDS,
            search_filters=filters)
    except Exception as exc:  # noqa: BLE001
        raise _error(node, exc, "a study query") from None
    items = [Dataset.from_json(d) for d in found]
    return FindResult(items[:limit], offset, limit, len(items) > limit)


def find_series(node: Node, study_uid: str) -> list[Dataset]:
    try:
        found = client(node).search_for_series(study_instance_uid=study_uid,
                                               fields=_SERIES_FIELDS)
    except Exception as exc:  # noqa: BLE001
        raise _error(node, exc, "a series query") from None
    return [Dataset.from_json(d) for d in found]


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def retrieve(node: Node, study_uid: str, series_uid: str | None, retrieval: Retrieval,
             progress: ProgressFn = None, cancel: Cancel = None) -> bool:
    """WADO-RS of a series (or each series of a study) into ``retrieval``; True when every
    series brought as many instances as QIDO-RS counts."""
    from lungviewer.cancel import Cancelled

    series = [SeriesInfo.from_dataset(d, study_uid) for d in find_series(node, study_uid)]
    if series_uid:
        series = [s for s in series if s.series_uid == series_uid]
        if not series:
            raise PacsError(f"{node.address()}: no such series in that study")
    total = sum(s.n_instances for s in series)
    wc = client(node)
    complete = True
    for s in series:
        got = 0
        try:
            for ds in wc.iter_series(study_uid, s.series_uid):
                if cancel is not None and cancel():
                    raise Cancelled("the WADO-RS retrieve was cancelled")
                retrieval.add(_part10(ds), s.series_uid, str(ds.SOPInstanceUID),
                              s.description, s.modality)
                got += 1
                if progress is not None:
                    progress(retrieval.received, total)
        except (Cancelled, PacsError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise PacsError(f"{_error(node, exc, 'a WADO-RS retrieve')}; what arrived is kept "
                            "as incomplete: retrieve again") from None
        if s.n_instances and got < s.n_instances:
            complete = False
    return complete


def stow(node: Node, files: list[Path], progress: ProgressFn = None,
         cancel: Cancel = None) -> list[SendResult]:
    """STOW-RS, one request per file, so each object has its own answer."""
    import pydicom

    from lungviewer.cancel import Cancelled

    wc = client(node)
    results = []
    for i, f in enumerate(files):
        if cancel is not None and cancel():
            raise Cancelled("the send was cancelled")
        try:
            ds = pydicom.dcmread(f)
        except Exception as exc:  # noqa: BLE001
            results.append(SendResult(str(f), "", False, "unreadable",
                                      f"not a DICOM file: {type(exc).__name__}"))
            continue
        uid = str(ds.get("SOPInstanceUID", ""))
        try:
            answer = wc.store_instances([ds])
        except Exception as exc:  # noqa: BLE001
            results.append(SendResult(str(f), uid, False, "failed",
                                      str(_error(node, exc, "STOW-RS"))))
            continue
        failed = [x for x in answer.get("FailedSOPSequence", [])
                  if str(x.get("ReferencedSOPInstanceUID", "")) == uid]
        stored = [x for x in answer.get("ReferencedSOPSequence", [])
                  if str(x.get("ReferencedSOPInstanceUID", "")) == uid]
        if failed:
            reason = failed[0].get("FailureReason")
            results.append(SendResult(str(f), uid, False, "failed",
                                      f"failure reason {reason}" if reason is not None else ""))
        else:
            results.append(SendResult(str(f), uid, bool(stored) or not failed, "stored"))
        if progress is not None:
            progress(i + 1, len(files))
    return results
