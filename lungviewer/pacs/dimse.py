"""DIMSE with pynetdicom: C-ECHO, C-FIND, C-GET, C-MOVE (to the viewer's own Storage SCP)
and C-STORE. No protocol code of our own: pynetdicom makes and reads every message.

Each call opens one association and releases (or aborts) it before returning. A failure is
a :class:`~lungviewer.pacs.nodes.PacsError` with one line: the connection was refused or
timed out, the PACS rejected the association (with its reason: often an unknown calling
AE title or a wrong called one), or it aborted. pynetdicom's own log lines can hold
query identifiers (patient names and IDs), so its logger is kept quiet (our own one-line errors say what went wrong).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from .cache import Retrieval
from .model import FindResult
from .nodes import Node, PacsError

log = logging.getLogger(__name__)
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

#: the storage SOP classes the viewer accepts when it retrieves (C-GET roles, C-MOVE SCP)
STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",        # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",      # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.2.2",      # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.7",        # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.66.4",     # Segmentation
    "1.2.840.10008.5.1.4.1.1.88.11",    # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",    # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",    # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",    # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.67",    # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.104.1",    # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.4",        # MR Image
    "1.2.840.10008.5.1.4.1.1.128",      # PET Image
    "1.2.840.10008.5.1.4.1.1.1",        # CR Image
    "1.2.840.10008.5.1.4.1.1.1.1",      # Digital X-Ray (presentation)
)

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
VERIFICATION = "1.2.840.10008.1.1"

Cancel = Callable[[], bool] | None
ProgressFn = Callable[[int, int], None] | None


def _transfer_syntaxes() -> list[str]:
    from pynetdicom import ALL_TRANSFER_SYNTAXES
    return list(ALL_TRANSFER_SYNTAXES)


def _ae(node: Node):
    from pynetdicom import AE
    ae = AE(ae_title=node.calling_aet)
    t = float(node.timeout)
    ae.acse_timeout = t
    ae.dimse_timeout = t
    ae.network_timeout = t
    ae.connection_timeout = t
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
    return ae


def _tls(node: Node):
    if not node.tls:
        return None
    ctx = ssl.create_default_context(cafile=node.tls_ca or None)
    return ctx, node.host


def _check_reachable(node: Node) -> None:
    """Connect (and, with TLS, shake hands) once before the association, so a refused
    port, a timeout or an untrusted certificate is named as such."""
    try:
        with socket.create_connection((node.host, int(node.port)),
                                      timeout=float(node.timeout)) as sock:
            if node.tls:
                ctx, name = _tls(node)
                with ctx.wrap_socket(sock, server_hostname=name):
                    pass
    except ssl.SSLCertVerificationError as exc:
        raise PacsError(f"{node.address()}: the PACS's TLS certificate is not trusted "
                        f"({exc.verify_message}); give its CA file") from None
    except ssl.SSLError as exc:
        raise PacsError(f"{node.address()}: the TLS handshake failed ({exc.reason or exc}); "
                        "does the PACS speak TLS on this port?") from None
    except ConnectionRefusedError:
        raise PacsError(f"{node.address()}: connection refused (is the PACS running and the "
                        "port right?)") from None
    except (TimeoutError, socket.timeout):
        raise PacsError(f"{node.address()}: no answer within {node.timeout:g} s "
                        "(timeout)") from None
    except OSError as exc:
        raise PacsError(f"{node.address()}: cannot connect ({exc.strerror or exc})") from None


def associate(node: Node, ae, handlers=None, ext_neg=None):
    """An established association with ``node`` or a one-line :class:`PacsError`."""
    from pynetdicom import evt

    _check_reachable(node)
    reply: dict = {}

    def on_acse(event):
        reply["answered"] = True
        prim = event.primitive
        if getattr(prim, "result", None) in (1, 2):
            reply["why"] = f"{prim.reason_str} ({prim.source_str})"

    handlers = list(handlers or []) + [(evt.EVT_ACSE_RECV, on_acse)]
    assoc = ae.associate(node.host, int(node.port), ae_title=node.aet, evt_handlers=handlers,
                         ext_neg=ext_neg, tls_args=_tls(node))
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        why = reply.get("why", "no reason given")
        raise PacsError(f"{node.address()} refused the association: {why}; check the PACS's "
                        f"AE title ({node.aet}) and that it knows this viewer's AE title "
                        f"({node.calling_aet})")
    if assoc.is_aborted and reply.get("answered"):
        raise PacsError(f"{node.address()} aborted the association request (no presentation "
                        "context accepted, the peer is not a DICOM service, or it expects "
                        "TLS)")
    raise PacsError(f"{node.address()}: no answer to the association request within "
                    f"{node.timeout:g} s (timeout)")


#: pynetdicom's DUL thread sleeps this long when it had nothing to do (its default 1 ms);
#: while instances stream in, each C-STORE response waits for that wake-up, 133 times for a
#: CT series. Shorter during C-GET/C-MOVE only (it polls faster, so it costs CPU while idle)
FAST_LOOP_DELAY = 0.0001


def _fast(assoc) -> None:
    dul = getattr(assoc, "dul", None)
    if dul is not None and hasattr(dul, "_run_loop_delay"):
        dul._run_loop_delay = FAST_LOOP_DELAY


def _status_text(status: Dataset | None) -> str:
    if status is None or "Status" not in status:
        return "no answer (the association was aborted or timed out)"
    code = int(status.Status)
    comment = str(status.get("ErrorComment", "") or "")
    return f"status 0x{code:04X}" + (f" ({comment})" if comment else "")


def echo(node: Node) -> None:
    ae = _ae(node)
    ae.add_requested_context(VERIFICATION)
    assoc = associate(node, ae)
    try:
        status = assoc.send_c_echo()
    finally:
        _close(assoc)
    if status is None or int(status.get("Status", -1)) != 0:
        raise PacsError(f"{node.address()}: C-ECHO failed: {_status_text(status)}")


def _close(assoc) -> None:
    if assoc.is_established:
        assoc.release()


def find(node: Node, identifier: Dataset, *, limit: int, offset: int = 0,
         cancel: Cancel = None) -> FindResult:
    """C-FIND (study root): matches ``offset`` to ``offset + limit``; when more arrive the
    query is stopped (association aborted) and ``more`` is set. ``cancel()`` stops it too."""
    from lungviewer.cancel import Cancelled

    ae = _ae(node)
    ae.add_requested_context(STUDY_FIND)
    assoc = associate(node, ae)
    items: list[Dataset] = []
    seen, more, final = 0, False, None
    try:
        for status, ident in assoc.send_c_find(identifier, STUDY_FIND):
            if cancel is not None and cancel():
                assoc.abort()
                raise Cancelled("the query was cancelled")
            if status is None or "Status" not in status:
                break  # aborted or timed out: final stays None
            if int(status.Status) in (0xFF00, 0xFF01) and ident is not None:
                if seen >= offset + limit:
                    more = True  # one more than asked for: stop the query here
                    assoc.abort()
                    break
                if seen >= offset:
                    items.append(ident)
                seen += 1
                continue
            final = status
    finally:
        _close(assoc)
    # success, or cancelled by the peer (0xFE00): what came is what there is
    if not more and (final is None or int(final.Status) not in (0x0000, 0xFE00)):
        raise PacsError(f"{node.address()}: C-FIND failed: {_status_text(final)}")
    return FindResult(items, offset, limit, more)


def _retrieve_identifier(study_uid: str, series_uid: str | None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    return ds


def _store_handler(retrieval: Retrieval):
    def handle(event):
        try:
            ds = event.dataset
            data = event.encoded_dataset()
            retrieval.add(data, str(ds.get("SeriesInstanceUID", "")),
                          str(event.request.AffectedSOPInstanceUID),
                          str(ds.get("SeriesDescription", "") or ""),
                          str(ds.get("Modality", "") or ""))
        except PacsError:
            return 0xA700  # out of resources: the cache could not take it
        except Exception:  # noqa: BLE001 - a bad instance is refused, not a crash
            log.debug("an instance could not be stored", exc_info=True)
            return 0xC210
        return 0x0000
    return handle


def _drive(node: Node, assoc, responses, retrieval: Retrieval, what: str,
           progress: ProgressFn, cancel: Cancel) -> bool:
    """Follow a C-GET/C-MOVE's responses: progress from the sub-operation counts; a
    cancel or a cache error aborts. True when the PACS reported every sub-operation done
    and each instance arrived."""
    from lungviewer.cancel import Cancelled

    final = None
    total = 0
    for status, _ in responses:
        if cancel is not None and cancel():
            assoc.abort()
            raise Cancelled(f"the {what} was cancelled")
        if retrieval.error is not None:
            assoc.abort()
            raise retrieval.error
        if status is None or "Status" not in status:
            final = None
            break
        code = int(status.Status)
        counts = [int(status.get(k) or 0) for k in (
            "NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations",
            "NumberOfFailedSuboperations", "NumberOfWarningSuboperations")]
        total = max(total, sum(counts))
        if progress is not None:
            progress(retrieval.received, total)
        if code in (0xFF00, 0xFF01):
            continue
        final = status
    if retrieval.error is not None:
        raise retrieval.error
    if final is None:
        raise PacsError(f"{node.address()}: the {what} was interrupted (association aborted "
                        f"or timed out after {retrieval.received} instance(s)); what arrived "
                        "is kept as incomplete: retrieve again")
    code = int(final.Status)
    failed = int(final.get("NumberOfFailedSuboperations") or 0)
    done = int(final.get("NumberOfCompletedSuboperations") or 0)
    if code == 0 and failed == 0 and (done == 0 or retrieval.received >= done):
        return True
    if code in (0xA701, 0xA702, 0xA801) or failed:
        log.warning("%s: %s ended with %d failed sub-operation(s)", node.address(), what, failed)
    if code != 0 and code != 0xB000:
        raise PacsError(f"{node.address()}: the {what} failed: {_status_text(final)}")
    return False


def get(node: Node, study_uid: str, series_uid: str | None, retrieval: Retrieval,
        progress: ProgressFn = None, cancel: Cancel = None) -> bool:
    """C-GET of a study or series into ``retrieval`` (the instances come back on the same
    association: no inbound port). True when complete."""
    from pynetdicom import build_role, evt

    ae = _ae(node)
    ae.add_requested_context(STUDY_GET)
    ts = _transfer_syntaxes()
    roles = []
    for uid in STORAGE_CLASSES:
        ae.add_requested_context(uid, ts)
        roles.append(build_role(uid, scp_role=True))
    assoc = associate(node, ae, handlers=[(evt.EVT_C_STORE, _store_handler(retrieval))],
                      ext_neg=roles)
    _fast(assoc)
    try:
        ok = _drive(node, assoc, assoc.send_c_get(
            _retrieve_identifier(study_uid, series_uid), STUDY_GET), retrieval, "C-GET",
            progress, cancel)
    finally:
        _close(assoc)
    return ok


_SCP_LOCK = threading.Lock()


def move(node: Node, study_uid: str, series_uid: str | None, retrieval: Retrieval,
         progress: ProgressFn = None, cancel: Cancel = None) -> bool:
    """C-MOVE of a study or series to the viewer's own Storage SCP (``calling_aet`` on
    ``local_port``, which the PACS must know), run for the length of the move."""
    from pynetdicom import evt

    if not node.local_port:
        raise PacsError(f"{node.address()}: C-MOVE needs the viewer's Storage SCP port "
                        "(local_port) and the PACS must know this AE title; or use C-GET")
    scp_ae = _ae(node)
    ts = _transfer_syntaxes()
    for uid in STORAGE_CLASSES:
        scp_ae.add_supported_context(uid, ts)
    scp_ae.add_supported_context(VERIFICATION)
    with _SCP_LOCK:
        try:
            server = scp_ae.start_server(
                ("", int(node.local_port)), block=False,
                evt_handlers=[(evt.EVT_C_STORE, _store_handler(retrieval)),
                              (evt.EVT_CONN_OPEN, lambda event: _fast(event.assoc))])
        except OSError as exc:
            raise PacsError(f"cannot listen on port {node.local_port} for C-MOVE "
                            f"({exc.strerror or exc})") from None
        try:
            ae = _ae(node)
            ae.add_requested_context(STUDY_MOVE)
            assoc = associate(node, ae)
            try:
                ok = _drive(node, assoc, assoc.send_c_move(
                    _retrieve_identifier(study_uid, series_uid), node.calling_aet,
                    STUDY_MOVE), retrieval, "C-MOVE", progress, cancel)
            finally:
                _close(assoc)
        finally:
            server.shutdown()
    return ok


def store(node: Node, files: list[Path], progress: ProgressFn = None,
          cancel: Cancel = None):
    """C-STORE each file on one association; one :class:`SendResult` per file (the
    unreadable ones first)."""
    import pydicom

    from lungviewer.cancel import Cancelled

    from .model import SendResult

    results, datasets, contexts = [], [], set()
    for f in files:
        try:
            ds = pydicom.dcmread(f)
            sop_class, ts = str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)
            datasets.append((f, ds))
            contexts.add((sop_class, ts))
        except Exception as exc:  # noqa: BLE001 - an unreadable file is reported, not sent
            results.append(SendResult(str(f), "", False, "unreadable",
                                      f"not a DICOM file: {type(exc).__name__}"))
    if not datasets:
        return results
    ae = _ae(node)
    by_class: dict[str, set[str]] = {}
    for sop_class, ts in contexts:
        by_class.setdefault(sop_class, set()).add(ts)
    for sop_class, tss in sorted(by_class.items()):
        ae.add_requested_context(sop_class, sorted(tss | {"1.2.840.10008.1.2.1",
                                                           "1.2.840.10008.1.2"}))
    assoc = associate(node, ae)
    try:
        for i, (f, ds) in enumerate(datasets):
            if cancel is not None and cancel():
                assoc.abort()
                raise Cancelled("the send was cancelled")
            uid = str(ds.get("SOPInstanceUID", ""))
            try:
                status = assoc.send_c_store(ds)
            except Exception as exc:  # noqa: BLE001 - e.g. no accepted context for it
                results.append(SendResult(str(f), uid, False, "not sent", str(exc)))
                continue
            if status is None or "Status" not in status:
                results.append(SendResult(str(f), uid, False, "no answer",
                                          "the association was aborted or timed out"))
                if not assoc.is_established:
                    break
                continue
            code = int(status.Status)
            ok = code == 0 or (code & 0xF000) == 0xB000
            results.append(SendResult(str(f), uid, ok, f"0x{code:04X}",
                                      str(status.get("ErrorComment", "") or "")))
            if progress is not None:
                progress(i + 1, len(datasets))
    finally:
        _close(assoc)
    sent = {r.path for r in results}
    for f, ds in datasets:
        if str(f) not in sent:
            results.append(SendResult(str(f), str(ds.get("SOPInstanceUID", "")), False,
                                      "not sent", "the association ended first"))
    return results
