"""Batch CAD over an archive of CT studies on Dask (docs/ARCHITECTURE.md, "Batch CAD").

* :mod:`.units` — what to analyse: the series found in a folder tree (the loader's header
  pass), each with an input fingerprint, and the CAD model versions (sha256 from the
  weights manifest);
* :mod:`.task` — one series through the same :class:`~lungviewer.session.StudySession`
  pipeline as ``lungviewer analyze``, run on a Dask worker, never raising;
* :mod:`.db` — the SQLite results database (one row per series, upserts on a UNIQUE key,
  written by the client in transactions), CSV/Parquet export;
* :mod:`.runner` — the client: discovery, skipping what is done, a ``LocalCluster`` or an
  existing scheduler, results streamed with ``as_completed``.

Nothing here imports Qt; torch is imported by the CAD (``lungviewer.cad``) on the workers.
"""
