"""config/dicomnode.example.yaml: accepted by the node, default-deny, and its TLS works.

The TLS certificates are made by docker/tls/make-test-certs.sh, the same openssl recipe
docs/deployment.md gives to IT. The TLS tests run a real ``dicomnode serve`` on loopback
with the example config (paths pointed at a temporary folder) and associate: with the
modality's client certificate, without one, and from an AE title that is not on the
allowlist. Each refusal is checked by its reason (TLS alert, A-ASSOCIATE-RJ reason), so a
timeout or a node that is down fails the test.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomnode.config import TlsConfig
from dicomnode.errors import DispatchError
from dicomnode.net.scu import echo

from .conftest import DOCKER, ROOT

EXAMPLE = ROOT / "config" / "dicomnode.example.yaml"
CLI = Path(sys.executable).parent / "dicomnode"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tls")
    subprocess.run(["sh", str(DOCKER / "tls" / "make-test-certs.sh"), str(out), "localhost"],
                   check=True, capture_output=True, timeout=120)
    return out


def _localised(tmp: Path, certs: Path) -> Path:
    """The example config with container paths mapped into ``tmp`` (text substitution only)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("/config/tls/", f"{certs}/").replace("/spool", f"{tmp}/spool")
    text = text.replace("/models/", f"{ROOT}/models/")
    path = tmp / "dicomnode.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_key_is_commented() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        # an inline comment, or a comment on the line above (own line or the parent key's)
        has_comment = "#" in line or "#" in lines[number - 2]
        assert has_comment, f"line {number} has no comment: {line!r}"


def test_production_values() -> None:
    cfg = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    node = cfg["node"]
    assert node["tls"]["enabled"] is True and node["tls"]["require_client_cert"] is True
    for entry in node["allow"]:  # named senders only: no "*" from everywhere
        assert not (entry["ae_title"] == "*" and entry["network"].endswith("/0"))
    pacs = cfg["destinations"]["pacs"]
    assert pacs["type"] == "dimse" and pacs["tls"]["enabled"] is True
    assert all("pacs" in route["destinations"] for route in cfg["routes"])
    assert cfg["log"]["format"] == "json"


def test_example_passes_check_config(tmp_path: Path, certs: Path) -> None:
    proc = subprocess.run([str(CLI), "check-config", str(_localised(tmp_path, certs))],
                          capture_output=True, text=True, timeout=300)
    demo_models = (ROOT / "models" / "lln-t2-demo" / "model.yaml").is_file() and (
        ROOT / "models" / "wsi-ln-demo" / "model.yaml").is_file()
    if demo_models:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:  # the key structure is valid; only the demo bundles are not in the checkout yet
        assert "config valid" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("node")
    config = yaml.safe_load(_localised(tmp, certs).read_text())
    port, http_port = _free_port(), _free_port()
    config["node"].update(host="127.0.0.1", port=port,
                          allow=[{"ae_title": "MODALITY1", "network": "127.0.0.1/32"}])
    config["http"].update(host="127.0.0.1", port=http_port)
    config["spool"]["min_free_mb"] = 1
    path = tmp / "tls.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = subprocess.Popen([str(CLI), "serve", "--config", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"node did not start: {proc.communicate()[0]}")
            time.sleep(0.3)
    yield port, certs
    proc.terminate()
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output


def _echo(port: int, certs: Path, *, calling: str, client_cert: bool) -> int:
    """C-ECHO over TLS as a modality would; a refusal raises DispatchError with its reason."""
    tls = TlsConfig(enabled=True, ca=certs / "ca.crt", cert=certs / "modality.crt" if client_cert else None,
                    key=certs / "modality.key" if client_cert else None)
    return echo("127.0.0.1", port, called="DICOMNODE", calling=calling, tls=tls, timeout_s=10)


def test_tls_echo_with_client_certificate(tls_node: tuple[int, Path]) -> None:
    """Also checks the node's certificate names the host (SAN localhost), as a modality would."""
    port, certs = tls_node
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.crt"))
    ctx.load_cert_chain(str(certs / "modality.crt"), str(certs / "modality.key"))
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE", tls_args=(ctx, "localhost"))
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    assert int(status.Status) == 0x0000
    assert _echo(port, certs, calling="MODALITY1", client_cert=True) == 0x0000


def test_tls_refuses_a_peer_without_client_certificate(tls_node: tuple[int, Path]) -> None:
    """The refusal is the TLS one (the node's 'certificate required' alert), not a timeout
    or a node that is down."""
    port, certs = tls_node
    with pytest.raises(DispatchError, match=r"TLS connection failed: .*certificate required"):
        _echo(port, certs, calling="MODALITY1", client_cert=False)


def test_allowlist_refuses_an_unlisted_ae_title(tls_node: tuple[int, Path]) -> None:
    """The refusal is the allowlist's A-ASSOCIATE-RJ (calling AE title not recognised, 0x03)."""
    port, certs = tls_node
    with pytest.raises(DispatchError, match=r"rejected: Calling AE title not recognised .*reason 0x03\)"):
        _echo(port, certs, calling="INTRUDER", client_cert=True)
