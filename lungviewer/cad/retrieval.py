"""Similar nodules: retrieval with the detector's penultimate features.

The index holds one entry per annotated training nodule: its 512-d embedding (mean over
its readers' samples), a record (patient, nodule key, the readers' malignancy ratings,
diameter, slice) and a 32×32 thumbnail. Stored as ``<name>.safetensors`` (embeddings,
thumbnails) + ``<name>.json`` (records); k-NN by cosine distance in numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SimilarNodule:
    patient_id: str
    nodule: str
    malignancies: list[int]
    diameter_mm: float
    slice_index: int
    distance: float
    thumbnail: np.ndarray | None


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


class RetrievalIndex:
    def __init__(self, embeddings: np.ndarray, records: list[dict],
                 thumbnails: np.ndarray | None = None) -> None:
        if len(embeddings) != len(records):
            raise ValueError("one record per embedding")
        self.embeddings = _normalise(embeddings)
        self.records = records
        self.thumbnails = thumbnails

    def __len__(self) -> int:
        return len(self.records)

    def query(self, embedding: np.ndarray, k: int = 5,
              exclude_patient: str | None = None) -> list[SimilarNodule]:
        d = 1.0 - self.embeddings @ _normalise(embedding)
        if exclude_patient is not None:
            d = np.where([r["patient"] == exclude_patient for r in self.records], np.inf, d)
        order = np.argsort(d, kind="stable")[:k]
        return [SimilarNodule(self.records[i]["patient"], self.records[i]["nodule"],
                              list(self.records[i]["malignancies"]),
                              float(self.records[i]["diameter_mm"]),
                              int(self.records[i]["slice"]), float(d[i]),
                              None if self.thumbnails is None else self.thumbnails[i])
                for i in order if np.isfinite(d[i])]

    def save(self, prefix: Path) -> list[Path]:
        from safetensors.numpy import save_file

        prefix = Path(prefix)
        tensors = {"embeddings": self.embeddings}
        if self.thumbnails is not None:
            tensors["thumbnails"] = np.ascontiguousarray(self.thumbnails, np.uint8)
        st, js = prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")
        save_file(tensors, str(st))
        js.write_text(json.dumps(self.records), encoding="utf-8")
        return [st, js]

    @staticmethod
    def load(prefix: Path) -> RetrievalIndex:
        from safetensors.numpy import load_file

        prefix = Path(prefix)
        t = load_file(str(prefix.with_suffix(".safetensors")))
        records = json.loads(prefix.with_suffix(".json").read_text(encoding="utf-8"))
        return RetrievalIndex(t["embeddings"], records, t.get("thumbnails"))


def group_by_nodule(keys: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean embedding per nodule key; returns (unique keys, embeddings, first index)."""
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    sums = np.zeros((len(uniq), emb.shape[1]), np.float64)
    np.add.at(sums, inv, emb)
    return uniq, (sums / np.bincount(inv)[:, None]).astype(np.float32), first


def hits_at_k(db_emb: np.ndarray, db_labels: np.ndarray, q_emb: np.ndarray,
              q_labels: np.ndarray, k: int, db_groups: np.ndarray | None = None,
              q_groups: np.ndarray | None = None) -> np.ndarray:
    """(n_queries, k) bool: whether each query's i-th nearest database item (cosine) has the
    query's class; with groups (patients), items of the query's own group are skipped."""
    d = 1.0 - _normalise(q_emb) @ _normalise(db_emb).T
    if db_groups is not None and q_groups is not None:
        d = np.where(np.asarray(q_groups)[:, None] == np.asarray(db_groups)[None, :], np.inf, d)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    hit = np.asarray(db_labels)[order] == np.asarray(q_labels)[:, None]
    hit &= np.isfinite(np.take_along_axis(d, order, axis=1))
    if hit.shape[1] < k:  # fewer items than k: the missing neighbours are misses
        hit = np.pad(hit, ((0, 0), (0, k - hit.shape[1])))
    return hit


def recall_at_k(db_emb: np.ndarray, db_labels: np.ndarray, q_emb: np.ndarray,
                q_labels: np.ndarray, ks=(1, 2, 3, 4)) -> dict[int, float]:
    """Share of queries with at least one of the k nearest database items of the same
    class (Recall@k as the retrieval paper reports it)."""
    hit = hits_at_k(db_emb, db_labels, q_emb, q_labels, max(ks))
    return {k: float(hit[:, :k].any(axis=1).mean()) for k in ks}
