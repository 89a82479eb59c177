"""``lungviewer pacs echo|find|get|send|cache``: PACS query, retrieve and send without a window.

The PACS is ``--node NAME`` (a node of the config file, see :mod:`lungviewer.pacs.nodes`)
or ad hoc: ``--host --port --aet`` (DIMSE; ``--calling-aet``, ``--local-port`` for C-MOVE)
or ``--url`` (DICOMweb).

- ``echo``: C-ECHO or a QIDO-RS ping.
- ``find``: studies by ``--patient-id``, ``--patient-name``, ``--study-date FROM-TO``,
  ``--modality``, ``--accession`` (``*``/``?`` wildcards), at most ``--limit`` from
  ``--offset``; ``--study UID`` lists that study's series instead.
- ``get``: ``--study UID`` (``--series UID``) into the study cache by ``--method``
  get|move|wado, then copied to ``--out DIR`` when given.
- ``send``: files or folders by C-STORE or STOW-RS; one answer per object.
- ``cache``: what the local study cache holds (complete or not); ``--remove UID``.

Exit status: 0 done; 1 the PACS failed or refused (a one-line message; ``error`` in
JSON), or some object was not stored; 2 bad arguments (no node, a bad date). Patient names
and IDs are printed only by ``find`` (what was asked for), never logged.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def add_parser(sub):
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("the PACS")
    g.add_argument("--node", help="a node of the PACS config file")
    g.add_argument("--host", help="DIMSE: the PACS's host")
    g.add_argument("--port", type=int, help="DIMSE: the PACS's port (default 104)")
    g.add_argument("--aet", help="DIMSE: the PACS's AE title")
    g.add_argument("--calling-aet", help="DIMSE: this viewer's AE title")
    g.add_argument("--local-port", type=int, help="DIMSE: this viewer's Storage SCP port "
                   "(C-MOVE)")
    g.add_argument("--url", help="DICOMweb: the base URL")
    g.add_argument("--timeout", type=float, help="seconds (default 10)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("pacs", help="query, retrieve and send over DICOM networking",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    acts.add_parser("echo", parents=[common], help="C-ECHO or a QIDO-RS ping")
    q = acts.add_parser("find", parents=[common], help="find studies (or a study's series)")
    q.add_argument("--patient-id", default="")
    q.add_argument("--patient-name", default="")
    q.add_argument("--study-date", default="", metavar="FROM-TO",
                   help="YYYYMMDD, or YYYYMMDD-YYYYMMDD (an end may be left out)")
    q.add_argument("--modality", default="")
    q.add_argument("--accession", default="")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--offset", type=int, default=0)
    q.add_argument("--study", help="list this study's series")
    r = acts.add_parser("get", parents=[common], help="retrieve a study or series")
    r.add_argument("--study", help="StudyInstanceUID")
    r.add_argument("--series", help="SeriesInstanceUID")
    r.add_argument("--method", choices=["get", "move", "wado"],
                   help="retrieve by C-GET (default for DIMSE), C-MOVE or WADO-RS")
    r.add_argument("--out", type=Path, help="copy the retrieved series into this folder")
    s = acts.add_parser("send", parents=[common], help="send files or folders")
    s.add_argument("paths", nargs="+", help="files or folders")
    c = acts.add_parser("cache", help="list the local study cache (most recently used first)")
    c.add_argument("--remove", metavar="STUDY_UID", help="remove this study from the cache")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _cache(args) -> dict:
    from lungviewer.pacs import StudyCache

    cache = StudyCache()
    if args.remove:
        if cache.study(args.remove) is None:
            raise _Usage("that study is not in the cache")
        cache.remove(args.remove)
    entries = cache.list()
    return {"path": str(cache.root), "limit_bytes": cache.limit,
            "bytes": sum(e.bytes for e in entries),
            "studies": [{"study_uid": e.uid, "date": e.date, "description": e.description,
                         "complete": e.complete, "bytes": e.bytes,
                         "last_used": round(e.last_used, 1),
                         "series": [{"series_uid": x.uid, "modality": x.modality,
                                     "description": x.description, "files": x.files,
                                     "complete": x.complete, "path": str(x.path)}
                                    for x in e.series]} for e in entries]}


def _node(args):
    from lungviewer.pacs import adhoc_node, get_node

    if args.node:
        node = get_node(args.node)
        for k in ("calling_aet", "local_port", "timeout"):
            v = getattr(args, k)
            if v:
                setattr(node, k, v)
        return node.validate()
    return adhoc_node(host=args.host, port=args.port, aet=args.aet, url=args.url,
                      calling_aet=args.calling_aet, local_port=args.local_port,
                      timeout=args.timeout)


class _Usage(Exception):
    pass


def _echo(node, args) -> dict:
    from lungviewer.pacs import verify

    dt = verify(node)
    return {"ok": True, "node": node.address(), "ms": round(dt * 1000, 1)}


def _find(node, args) -> dict:
    from lungviewer.pacs import PacsError, Query, find_series, find_studies

    if args.study:
        series = find_series(node, args.study)
        return {"study_uid": args.study, "series": [s.as_dict() for s in series]}
    try:
        query = Query(patient_id=args.patient_id, patient_name=args.patient_name,
                      study_date=args.study_date, modality=args.modality,
                      accession=args.accession)
    except PacsError as exc:
        raise _Usage(str(exc)) from None
    if args.limit < 1 or args.offset < 0:
        raise _Usage("--limit must be at least 1 and --offset at least 0")
    res = find_studies(node, query, limit=args.limit, offset=args.offset)
    return {"studies": [s.as_dict(patient=True) for s in res.items], "offset": res.offset,
            "limit": res.limit, "more": res.more}


def _get(node, args) -> dict:
    from lungviewer.pacs import StudyCache, retrieve

    if not args.study:
        raise _Usage("get needs --study UID")
    cache = StudyCache()
    entry = retrieve(node, args.study, args.series, method=args.method, cache=cache,
                     progress=_progress(args))
    series = [s for s in entry.series if args.series in (None, s.uid)]
    out = {"study_uid": entry.uid, "complete": True, "cache": str(entry.path),
           "series": [{"series_uid": s.uid, "files": s.files, "complete": s.complete,
                       "path": str(s.path)} for s in series]}
    if args.out:
        for s in series:
            dest = args.out / s.path.name
            dest.mkdir(parents=True, exist_ok=True)
            for f in s.path.glob("*.dcm"):
                shutil.copy2(f, dest / f.name)
            s_out = next(x for x in out["series"] if x["series_uid"] == s.uid)
            s_out["path"] = str(dest)
    return out


def _progress(args):
    if args.json or not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        print(f"\r{done}/{total or '?'} instances", end="", file=sys.stderr, flush=True)
    return show


def _send(node, args) -> dict:
    from lungviewer.pacs import send

    if not args.paths:
        raise _Usage("send needs files or folders")
    res = send(node, args.paths)
    return {"sent": sum(r.ok for r in res), "objects": [r.as_dict() for r in res]}


def run(args) -> int:
    from lungviewer.cancel import Cancelled
    from lungviewer.pacs import PacsError

    if args.action == "cache":
        try:
            out = _cache(args)
        except _Usage as exc:
            return _fail(args, str(exc), 2)
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            _print("cache", out)
        return 0
    try:
        node = _node(args)
    except PacsError as exc:
        return _fail(args, str(exc), 2)
    try:
        out = {"echo": _echo, "find": _find, "get": _get, "send": _send}[args.action](node, args)
    except _Usage as exc:
        return _fail(args, str(exc), 2)
    except (PacsError, Cancelled, OSError) as exc:
        return _fail(args, str(exc), 1)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(args.action, out)
    if args.action == "send" and out["sent"] < len(out["objects"]):
        return 1
    return 0


def _fail(args, message: str, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    else:
        print(f"lungviewer pacs: {message}", file=sys.stderr)
    return code


def _print(action: str, out: dict) -> None:
    if action == "echo":
        print(f"{out['node']}: answered in {out['ms']:.0f} ms")
    elif action == "find" and "series" in out:
        for s in out["series"]:
            print(f"{s['series_uid']}  {s['modality']:3s} {s['instances']:5d} images  "
                  f"{s['thickness'] or '?':>5s} mm  {s['description']}")
    elif action == "find":
        for s in out["studies"]:
            print(f"{s['study_uid']}  {s['date'] or '--------'}  {s['modalities']:6s} "
                  f"{s['series']:3d} series  {s['patient_id']}  {s['description']}")
        if out["more"]:
            print(f"(more: --offset {out['offset'] + out['limit']})")
    elif action == "get":
        for s in out["series"]:
            print(f"{s['series_uid']}: {s['files']} files in {s['path']}")
    elif action == "cache":
        print(f"{out['path']}: {out['bytes'] / 1e6:.1f} MB of {out['limit_bytes'] / 1e9:.1f} GB")
        for st in out["studies"]:
            print(f"{st['study_uid']}  {st['date'] or '--------'}  "
                  f"{'complete  ' if st['complete'] else 'INCOMPLETE'}  "
                  f"{st['bytes'] / 1e6:7.1f} MB  {st['description']}")
            for x in st["series"]:
                print(f"    {x['modality'] or '?':3s} {x['files']:5d} files  "
                      f"{'' if x['complete'] else '(incomplete) '}{x['description']}")
    elif action == "send":
        for o in out["objects"]:
            print(f"{'stored' if o['ok'] else 'FAILED'}  {o['status']}  {o['path']}"
                  + (f"  ({o['message']})" if o["message"] else ""))
