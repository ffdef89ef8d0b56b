"""DICOM TLS on the listener and the sender, with CA verification (openssl-made test PKI).

Every refusal is checked by its reason (the TLS alert, the verification error), so a
timeout or a peer that is down can never pass for the expected refusal.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from conftest import MR_SOP, REPO, mr_series, node_config, running_node
from netutil import pacs, store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.config import TlsConfig
from dicomnode.errors import DispatchError, SpoolError
from dicomnode.net.scu import echo


def _make_pki(folder: Path) -> Path:
    subprocess.run([str(REPO / "tests" / "make_test_certs.sh"), str(folder)], check=True, timeout=60)
    return folder


@pytest.fixture
def pki(tmp_path):
    """The site's CA with a node (server) and a client certificate."""
    return _make_pki(tmp_path / "pki")


@pytest.fixture
def other_pki(tmp_path):
    """An unrelated CA with its own node and client certificates (an impostor's)."""
    return _make_pki(tmp_path / "other-pki")


def _server_context(pki: Path, cert_pki: Path) -> ssl.SSLContext:
    """A PACS's TLS context: certificate from ``cert_pki``, clients verified against ``pki``."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
    server.load_cert_chain(str(cert_pki / "node.crt"), str(cert_pki / "node.key"))
    server.verify_mode = ssl.CERT_REQUIRED
    return server


def _pacs_destination(port: int, pki: Path) -> dict:
    return {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": port, "timeout_s": 10,
                     "tls": {"enabled": True, "ca": str(pki / "ca.crt"), "cert": str(pki / "client.crt"),
                             "key": str(pki / "client.key")}}}


def _send_series(port: int, files: list[Path]) -> None:
    assoc = store_association(port, [(MR_SOP, ExplicitVRLittleEndian)])
    for path in files:
        assert assoc.send_c_store(path).Status == 0
    assoc.release()


def test_tls_listener_requires_a_client_certificate_from_the_ca(tmp_path, plumbing_bundle, pki, other_pki):
    tls = {"enabled": True, "cert": str(pki / "node.crt"), "key": str(pki / "node.key"), "ca": str(pki / "ca.crt"),
           "require_client_cert": True}
    with running_node(node_config(tmp_path, plumbing_bundle(), node={"tls": tls})) as node:
        client = TlsConfig(enabled=True, ca=pki / "ca.crt", cert=pki / "client.crt", key=pki / "client.key")
        assert echo("127.0.0.1", node.port, tls=client) == 0
        with pytest.raises(DispatchError, match=r"TLS connection failed: .*certificate required"):
            echo("127.0.0.1", node.port, tls=TlsConfig(enabled=True, ca=pki / "ca.crt"), timeout_s=5)
        impostor = TlsConfig(enabled=True, ca=pki / "ca.crt", cert=other_pki / "client.crt",
                             key=other_pki / "client.key")
        with pytest.raises(DispatchError, match=r"TLS connection failed: .*unknown ca"):
            echo("127.0.0.1", node.port, tls=impostor, timeout_s=5)
        with pytest.raises(DispatchError, match="the peer closed the connection without answering"):
            echo("127.0.0.1", node.port, timeout_s=5)  # plain DICOM on a TLS port


def test_tls_sender_delivers_to_a_tls_pacs(tmp_path, plumbing_bundle, pki):
    """Results go over TLS to a PACS whose certificate is verified against the site CA."""
    with pacs(ssl_context=_server_context(pki, pki)) as scp:
        dests = _pacs_destination(scp.port, pki)
        with running_node(node_config(tmp_path, plumbing_bundle(), destinations=dests)) as node:
            _send_series(node.port, mr_series(tmp_path / "in", 2, seed="tls"))
            wait_for(lambda: len(scp.stored) == 1, timeout=60)


def _dead(node) -> dict | None:
    try:
        records = [node.spool.read_job(job_id) for job_id in node.spool.job_ids()]
    except SpoolError:  # job folder created, job.json not yet written
        return None
    return records[0] if len(records) == 1 and records[0]["state"] in ("dead", "done") else None


def test_tls_sender_refuses_a_pacs_certificate_from_another_ca(tmp_path, plumbing_bundle, pki, other_pki):
    """A PACS presenting a certificate the site CA did not sign gets nothing: the send fails
    with the verification error and is dead-lettered."""
    with pacs(ssl_context=_server_context(pki, other_pki)) as impostor:
        dests = _pacs_destination(impostor.port, pki)
        config = node_config(tmp_path, plumbing_bundle(), destinations=dests, dispatch={"max_attempts": 1})
        with running_node(config) as node:
            _send_series(node.port, mr_series(tmp_path / "in", 2, seed="tls-impostor"))
            record = wait_for(lambda: _dead(node), timeout=60)
        assert record["state"] == "dead", record
        assert impostor.stored == {} and impostor.associations == []
    error = record["destinations"]["pacs"]["last_error"]
    assert "TLS connection failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed" in error, error


@pytest.mark.timeout(30)
def test_tls_handshake_that_never_completes_times_out(pki):
    """A peer that accepts TCP but never answers the TLS handshake: the sender gives up after
    its timeout (pynetdicom's connection timeout is unlimited by default) instead of hanging."""
    client = TlsConfig(enabled=True, ca=pki / "ca.crt", cert=pki / "client.crt", key=pki / "client.key")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(DispatchError, match="TLS connection failed: .*handshake operation timed out"):
            echo("127.0.0.1", silent.getsockname()[1], tls=client, timeout_s=2)
