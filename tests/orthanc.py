"""A real Orthanc PACS (Debian package) for integration tests, on loopback ports.

Orthanc 1.10 binds all interfaces, so it may only run inside a private network namespace:
``make test`` runs pytest under ``unshare -n``, and a pytest run started otherwise enters
one itself at start (:func:`enter_private_netns`, from ``conftest.py``).
:func:`private_netns` tells whether the run is in one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from netutil import free_port, wait_for

PLUGINS = "/usr/share/orthanc/plugins"


def private_netns() -> bool:
    """True when the only network interface is loopback (inside ``unshare -n``)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]  # per network namespace
    return {line.split(":")[0].strip() for line in lines} == {"lo"}


_CLONE_NEWNET = 0x40000000


def enter_private_netns() -> str:
    """Move this process (and what it starts later) into a new network namespace with only
    loopback up, as ``unshare -n`` + ``ip link set lo up`` would; "" on success, else why not
    (creating one needs CAP_SYS_ADMIN, i.e. root)."""
    if private_netns():
        return ""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())} (needs root / CAP_SYS_ADMIN)"
    up = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return "" if up.returncode == 0 else f"ip link set lo up failed: {up.stderr.strip()}"


#: Why the run has no private network namespace ("" when it has one); set by conftest.py.
NETNS_PROBLEM = ""


def netns_skip() -> pytest.MarkDecorator:
    """Skip mark for tests that start Orthanc, naming why no private network namespace exists."""
    return pytest.mark.skipif(not private_netns(), reason="Orthanc binds all interfaces and no private "
                              f"network namespace could be made: {NETNS_PROBLEM}")


class Orthanc:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "DICOMNODE-TEST", "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
            "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True,
            "Plugins": [f"{PLUGINS}/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config))
        exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        with (self.folder / "orthanc.log").open("wb") as log:
            self.proc = subprocess.Popen([exe, str(path)], stdout=log, stderr=log)
        wait_for(self._up, timeout=60)
        return self

    def _up(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, (self.folder / "orthanc.log").read_text()[-2000:]
        try:
            return bool(self.get("/system"))
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def instances(self, modality: str) -> list[dict[str, Any]]:
        """Instances of series with ``modality`` (expanded, with MainDicomTags)."""
        found = self.post("/tools/find", {"Level": "Instance", "Query": {"Modality": modality}, "Expand": True})
        return list(found)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


@contextmanager
def orthanc(folder: Path) -> Iterator[Orthanc]:
    server = Orthanc(folder).start()
    try:
        yield server
    finally:
        server.stop()


def demo_node_config(tmp_path: Path, dicom_port: int, *, outbox: bool = False, **worker: Any) -> str:
    """The embedded default config with the demo models, every route sending to Orthanc
    (and to a folder outbox first when ``outbox``); ``worker`` keys are added to the worker section."""
    from dicomnode.config import default_config_text

    repo = Path(__file__).resolve().parents[1]
    data = yaml.safe_load(default_config_text())
    pacs = {"type": "dimse", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": dicom_port}
    destinations = {"outbox": {"type": "folder", "path": str(tmp_path / "outbox")}} if outbox else {}
    destinations["pacs"] = pacs
    for route in data["routes"]:
        route["destinations"] = list(destinations)
    data.update({
        "node": {"port": free_port(), "allow": [{"ae_title": "*", "network": "127.0.0.0/8"}]},
        "spool": {"path": str(tmp_path / "spool"), "min_free_mb": 64},
        "assembly": {"quiet_s": 2, "max_wait_s": 300},
        "models": {"lln-t2-demo": {"path": str(repo / "models" / "lln-t2-demo")},
                   "wsi-ln-demo": {"path": str(repo / "models" / "wsi-ln-demo")}},
        "destinations": destinations,
        "worker": {"device": "cpu", **worker}, "http": {"port": 0}, "log": {"format": "console", "level": "INFO"},
    })
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)
