"""Storage SCU: send files to a DIMSE destination, checking every response status."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicomnode.config import Destination, TlsConfig
from dicomnode.errors import DispatchError
from dicomnode.net import status as st

__all__ = ["client_ssl_context", "echo", "send_files"]

log = logging.getLogger(__name__)


def client_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """TLS context for a client: verify the peer against ``tls.ca``, present our cert."""
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca) if tls.ca else None)
    ctx.check_hostname = False  # DICOM peers are addressed by IP; the CA pins trust
    if tls.cert and tls.key:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


def _contexts(datasets: Iterable[Any]) -> list[tuple[str, str]]:
    pairs = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    if len(pairs) > 128:
        raise DispatchError("more than 128 presentation contexts needed in one association")
    return sorted(pairs)


def _associate(ae: AE, dest: Destination) -> Any:
    tls = client_ssl_context(dest.tls)
    tls_args = (tls, None) if tls is not None else None
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
        raise DispatchError(f"association to {dest.ae_title}@{dest.host}:{dest.port} failed ({why})",
                            destination=dest.name)
    return assoc


def send_files(dest: Destination, files: Sequence[Path]) -> int:
    """C-STORE ``files`` to ``dest`` in one association; return the number sent.

    Raises
    ------
    DispatchError
        The association failed, or any instance got a non-success status.
    """
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=dest.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = dest.timeout_s
    for sop_class, syntax in _contexts(datasets):
        ae.add_requested_context(sop_class, syntax)
    assoc = _associate(ae, dest)
    try:
        for ds in datasets:
            answer = assoc.send_c_store(ds)
            code = int(answer.Status) if "Status" in answer else None
            if code is None:
                raise DispatchError(f"no C-STORE response for {ds.SOPInstanceUID}", destination=dest.name)
            if code != st.SUCCESS and (code >> 12) != 0xB:
                raise DispatchError(f"{dest.ae_title} answered {st.describe(code)} for {ds.SOPInstanceUID}",
                                    destination=dest.name, status=code)
    finally:
        assoc.release()
    return len(datasets)


def echo(host: str, port: int, *, called: str = "DICOMNODE", calling: str = "DICOMNODE",
         tls: TlsConfig | None = None, timeout_s: float = 10.0) -> int:
    """C-ECHO a peer; returns the DIMSE status (raises DispatchError if no association)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(Verification)
    dest = Destination(name="echo", type="dimse", ae_title=called, host=host, port=port,
                       calling_ae_title=calling, tls=tls or TlsConfig())
    assoc = _associate(ae, dest)
    try:
        answer = assoc.send_c_echo()
        return int(answer.Status) if "Status" in answer else -1
    finally:
        assoc.release()
