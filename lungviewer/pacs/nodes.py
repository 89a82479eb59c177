"""PACS nodes: where the viewer queries, retrieves and sends (docs/ARCHITECTURE.md, "Network").

A node is DIMSE (the PACS's AE title, host and port; the viewer's own calling AE title and,
for C-MOVE, the port of its Storage SCP; optional TLS) or DICOMweb (a base URL, optional
basic or bearer authentication). Nodes live in ``pacs_nodes.json`` in the user's config
folder (:func:`lungviewer.paths.config_dir`); their passwords and tokens live apart in
``pacs_secrets.json``, written with mode 0600. A node's ``repr`` and :meth:`Node.public`
leave the secret out, and nothing here logs it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from lungviewer.fileio import atomic_write_text
from lungviewer.paths import config_dir

NODES_FILE = "pacs_nodes.json"
SECRETS_FILE = "pacs_secrets.json"
DEFAULT_CALLING_AET = "LUNGVIEWER"
RETRIEVE_METHODS = ("get", "move", "wado")
_AE_OK = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable, no backslash, 16 chars


class PacsError(Exception):
    """A PACS operation failed; the message is one line for the user (no patient data)."""


@dataclass
class Node:
    """One PACS. ``kind`` is ``"dimse"`` or ``"dicomweb"``; ``secret`` (password or bearer
    token) is kept out of ``repr`` and out of the nodes file."""

    name: str
    kind: str = "dimse"
    host: str = ""
    port: int = 104
    aet: str = ""                     # the PACS's (called) AE title
    calling_aet: str = DEFAULT_CALLING_AET
    local_port: int = 0               # the viewer's Storage SCP port for C-MOVE (0: none)
    tls: bool = False
    tls_ca: str = ""                  # CA bundle for TLS (empty: the system's)
    url: str = ""                     # DICOMweb base URL (…/dicom-web)
    auth: str = "none"                # none | basic | bearer
    username: str = ""
    timeout: float = 10.0             # seconds to connect / wait for an answer
    retrieve: str = "get"             # get | move | wado: the default retrieve method
    secret: str = field(default="", repr=False)

    def validate(self) -> "Node":
        """``self`` when it is usable, else :class:`PacsError` saying what is wrong."""
        who = f"PACS node {self.name!r}" if self.name else "the PACS node"
        if self.kind == "dimse":
            if not self.host:
                raise PacsError(f"{who} has no host")
            if not 0 < int(self.port) < 65536:
                raise PacsError(f"{who}: port {self.port} is not in 1..65535")
            for label, ae in (("AE title", self.aet), ("calling AE title", self.calling_aet)):
                if not _AE_OK.match(ae or "") or not ae.strip():
                    raise PacsError(f"{who}: {label} {ae!r} must be 1 to 16 printable "
                                    "characters without a backslash")
            if self.retrieve not in ("get", "move"):
                raise PacsError(f"{who}: a DIMSE node retrieves by 'get' or 'move', "
                                f"not {self.retrieve!r}")
        elif self.kind == "dicomweb":
            if not re.match(r"^https?://[^/\s]+", self.url or ""):
                raise PacsError(f"{who}: the DICOMweb URL must start with http:// or https://")
            if self.auth not in ("none", "basic", "bearer"):
                raise PacsError(f"{who}: auth is none, basic or bearer, not {self.auth!r}")
            if self.retrieve != "wado":
                self.retrieve = "wado"
        else:
            raise PacsError(f"{who}: kind is 'dimse' or 'dicomweb', not {self.kind!r}")
        if float(self.timeout) <= 0:
            raise PacsError(f"{who}: the timeout must be positive")
        return self

    def address(self) -> str:
        """Where the node is, for messages (never the secret)."""
        if self.kind == "dicomweb":
            return re.sub(r"//[^@/]*@", "//", self.url)
        return f"{self.aet}@{self.host}:{self.port}"

    def public(self) -> dict:
        """The node as the nodes file and ``--json`` show it: no secret."""
        d = asdict(self)
        d.pop("secret")
        return d


def _nodes_path() -> Path:
    return config_dir() / NODES_FILE


def _secrets_path() -> Path:
    return config_dir() / SECRETS_FILE


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PacsError(f"{path} is not a readable JSON file: {exc}") from None
    if not isinstance(data, dict):
        raise PacsError(f"{path} does not hold a JSON object")
    return data


def load_nodes() -> list[Node]:
    """The configured nodes (with their secrets), in file order."""
    data = _read_json(_nodes_path())
    secrets = _read_json(_secrets_path())
    known = {f.name for f in fields(Node)} - {"secret"}
    out = []
    for item in data.get("nodes", []):
        if not isinstance(item, dict) or not item.get("name"):
            raise PacsError(f"{_nodes_path()}: every node needs a name")
        node = Node(**{k: v for k, v in item.items() if k in known})
        node.secret = str(secrets.get(node.name, ""))
        out.append(node)
    return out


def save_nodes(nodes: list[Node]) -> Path:
    """Write the nodes file (0644) and the secrets file (0600); returns the nodes file."""
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise PacsError("two PACS nodes have the same name")
    for n in nodes:
        n.validate()
    atomic_write_text(_nodes_path(), json.dumps({"nodes": [n.public() for n in nodes]},
                                                indent=2), mode=0o644)
    secrets = {n.name: n.secret for n in nodes if n.secret}
    # exactly 0600 whatever the umask (fileio's default follows the umask, for exports)
    atomic_write_text(_secrets_path(), json.dumps(secrets, indent=2), mode=0o600)
    return _nodes_path()


def get_node(name: str) -> Node:
    for node in load_nodes():
        if node.name == name:
            return node.validate()
    known = ", ".join(n.name for n in load_nodes()) or "none configured"
    raise PacsError(f"no PACS node named {name!r} ({known}; nodes live in {_nodes_path()})")


def adhoc_node(*, host: str | None = None, port: int | None = None, aet: str | None = None,
               url: str | None = None, calling_aet: str | None = None,
               local_port: int | None = None, timeout: float | None = None) -> Node:
    """A node from command-line values (``--host --port --aet`` or ``--url``)."""
    if url:
        node = Node(name="", kind="dicomweb", url=url, retrieve="wado")
    elif host:
        node = Node(name="", kind="dimse", host=host, port=int(port or 104), aet=aet or "ANY-SCP")
    else:
        raise PacsError("say which PACS: --node NAME, --host/--port/--aet, or --url")
    return replace(node, calling_aet=calling_aet or node.calling_aet,
                   local_port=int(local_port or 0),
                   timeout=float(timeout or node.timeout)).validate()
