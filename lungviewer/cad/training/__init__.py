"""Training side of the CAD: samples, patient splits, training loops and the evaluation on
the held-out test patients. The viewer never imports this package (the runtime is
``lungviewer.cad``: engine, networks, weights, retrieval, devices)."""
