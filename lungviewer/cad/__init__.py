"""The CAD runtime: what the viewer, ``lungviewer analyze`` and ``evaluate`` run.

``engine`` (CadEngine: box scores and the slice scan), ``recommend`` (candidate score and
slice ranking), ``networks``, ``weights`` (loading, checksums), ``manifest`` (the weights
folder's manifest.json), ``retrieval`` (similar nodules), ``device``. Training lives in
:mod:`lungviewer.cad.training`, which the runtime never imports. torch is imported lazily.
"""
