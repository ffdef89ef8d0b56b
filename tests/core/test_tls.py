"""DICOM TLS on the listener and the sender, with CA verification (openssl-made test PKI)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import REPO, mr_series, node_config, running_node
from netutil import wait_for

from dicomnode.config import TlsConfig
from dicomnode.errors import DispatchError
from dicomnode.net.scu import echo


@pytest.fixture
def pki(tmp_path):
    folder = tmp_path / "pki"
    subprocess.run([str(REPO / "tests" / "make_test_certs.sh"), str(folder)], check=True, timeout=60)
    return folder


def test_tls_listener_requires_a_client_certificate_from_the_ca(tmp_path, plumbing_bundle, pki):
    tls = {"enabled": True, "cert": str(pki / "node.crt"), "key": str(pki / "node.key"), "ca": str(pki / "ca.crt"),
           "require_client_cert": True}
    with running_node(node_config(tmp_path, plumbing_bundle(), node={"tls": tls})) as node:
        client = TlsConfig(enabled=True, ca=pki / "ca.crt", cert=pki / "client.crt", key=pki / "client.key")
        assert echo("127.0.0.1", node.port, tls=client) == 0
        with pytest.raises(DispatchError):  # no client certificate → handshake refused
            echo("127.0.0.1", node.port, tls=TlsConfig(enabled=True, ca=pki / "ca.crt"), timeout_s=5)
        with pytest.raises(DispatchError):  # plain DICOM on a TLS port
            echo("127.0.0.1", node.port, timeout_s=5)


def test_tls_sender_delivers_to_a_tls_pacs(tmp_path, plumbing_bundle, pki):
    """Results go over TLS to a PACS whose certificate is verified against the site CA."""
    import ssl

    from conftest import MR_SOP
    from netutil import pacs, store_association
    from pydicom.uid import ExplicitVRLittleEndian

    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
    server.load_cert_chain(str(pki / "node.crt"), str(pki / "node.key"))
    server.verify_mode = ssl.CERT_REQUIRED
    with pacs(ssl_context=server) as scp:
        dest = {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port,
                         "tls": {"enabled": True, "ca": str(pki / "ca.crt"), "cert": str(pki / "client.crt"),
                                 "key": str(pki / "client.key")}}}
        with running_node(node_config(tmp_path, plumbing_bundle(), destinations=dest)) as node:
            assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian)])
            for path in mr_series(tmp_path / "in", 2, seed="tls"):
                assert assoc.send_c_store(path).Status == 0
            assoc.release()
            wait_for(lambda: len(scp.stored) == 1, timeout=60)
