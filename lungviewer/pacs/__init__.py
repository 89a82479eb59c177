"""PACS networking without Qt: nodes, query/retrieve/send over DIMSE (pynetdicom) and
DICOMweb (dicomweb-client), the priors lookup and the local study cache
(docs/ARCHITECTURE.md, "Network (PACS)")."""

from .cache import CachedSeries, CachedStudy, CacheFullError, StudyCache
from .client import collect_files, find_priors, find_series, find_studies, retrieve, send, verify
from .model import FindResult, Query, SendResult, SeriesInfo, StudyInfo, parse_date_range
from .nodes import Node, PacsError, adhoc_node, get_node, load_nodes, save_nodes

__all__ = [
    "CacheFullError", "CachedSeries", "CachedStudy", "FindResult", "Node", "PacsError",
    "Query", "SendResult", "SeriesInfo", "StudyCache", "StudyInfo", "adhoc_node",
    "collect_files", "find_priors", "find_series", "find_studies", "get_node", "load_nodes",
    "parse_date_range", "retrieve", "save_nodes", "send", "verify",
]
