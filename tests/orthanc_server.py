"""A real Orthanc on loopback for the PACS tests and bench: its own JSON config (free
ports, temporary storage, the DICOMweb plugin, the test's AE titles as modalities so
C-GET and C-MOVE work), started as a child process and stopped by its PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: the Orthanc binary (``LUNGVIEWER_ORTHANC`` overrides it)
ORTHANC = os.environ.get("LUNGVIEWER_ORTHANC") or shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
PACKAGES = "orthanc orthanc-dicomweb"


def missing() -> str:
    """Why Orthanc cannot run here ('' when it can)."""
    if not Path(ORTHANC).is_file():
        return f"Orthanc is not installed (Debian packages: {PACKAGES})"
    if not Path(DICOMWEB_PLUGIN).exists():
        return f"the Orthanc DICOMweb plugin is missing (Debian packages: {PACKAGES})"
    return ""


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl), for the TLS test."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    folder: Path
    http_port: int
    dicom_port: int
    aet: str
    proc: subprocess.Popen
    modalities: dict

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    auth: str = ""

    def rest(self, path: str, data: bytes | None = None, method: str | None = None):
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if self.auth:
            req.add_header("Authorization", self.auth)
        if data is not None:
            req.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def upload(self, files) -> int:
        n = 0
        for f in files:
            self.rest("/instances", Path(f).read_bytes())
            n += 1
        return n

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start(folder: Path, modalities: dict[str, tuple[str, int]], aet: str = "ORTHANC",
          timeout: float = 30.0, users: dict[str, str] | None = None,
          tls: tuple[Path, Path] | None = None) -> Orthanc:
    """Start Orthanc with a config in ``folder``; ``modalities``: name -> (AE title, port)
    on 127.0.0.1 (the AE titles Orthanc accepts and sends C-MOVE results to); ``users``
    (name -> password) turns HTTP basic authentication on; ``tls`` (certificate, key)
    makes the DICOM port TLS-only."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    http, dicom = free_port(), free_port()
    cfg = {
        "Name": "lungviewer-test", "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"), "HttpPort": http, "DicomPort": dicom,
        "DicomAet": aet, "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(users),
        "RegisteredUsers": dict(users or {}),
        "HttpServerEnabled": True, "DicomServerEnabled": True,
        "DicomCheckCalledAet": True, "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False, "DicomAlwaysAllowMove": False,
        "UnknownSopClassAccepted": True, "StorageCompression": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {name: {"AET": a, "Host": "127.0.0.1", "Port": p,
                                   "AllowEcho": True, "AllowFind": True, "AllowGet": True,
                                   "AllowMove": True, "AllowStore": True}
                            for name, (a, p) in modalities.items()},
        "StableAge": 1, "ConcurrentJobs": 2, "HttpThreadsCount": 8,
        "MaximumPduLength": 131072,  # the largest Orthanc allows (default 16384)
    }
    if tls:
        cfg.update({"DicomTlsEnabled": True, "DicomTlsCertificate": str(tls[0]),
                    "DicomTlsPrivateKey": str(tls[1]), "DicomTlsTrustedCertificates": str(tls[0]),
                    "DicomTlsRemoteCertificateRequired": False})
    (folder / "orthanc.json").write_text(json.dumps(cfg, indent=1))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log,
                            stderr=subprocess.STDOUT, cwd=folder)
    o = Orthanc(folder, http, dicom, aet, proc, modalities)
    if users:
        import base64
        name, pw = next(iter(users.items()))
        o.auth = "Basic " + base64.b64encode(f"{name}:{pw}".encode()).decode()
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited at start (see {folder / 'orthanc.log'})")
        try:
            o.rest("/system")
            with socket.create_connection(("127.0.0.1", dicom), timeout=1):
                pass
            return o
        except OSError:
            time.sleep(0.1)
    o.stop()
    raise RuntimeError(f"Orthanc did not answer within {timeout:g} s")
