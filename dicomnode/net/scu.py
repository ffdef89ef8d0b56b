"""Storage SCU: the one C-STORE/C-ECHO client of dicomnode.

:func:`open_association` proposes exactly the presentation contexts it is given and says
why an association failed (reject reason, TLS error, no answer); :func:`store` sends one
instance. The dispatcher (:func:`send_files`: strict, every status checked) and
``dicomnode replay`` (counts statuses, re-associates once when the peer drops) build on
these two.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import

from dicomnode.config import Destination, TlsConfig
from dicomnode.errors import DispatchError
from dicomnode.net import status as st
from dicomnode.net import tuning

__all__ = ["client_ssl_context", "echo", "open_association", "send_files", "store"]

log = logging.getLogger(__name__)


class _TracedSocket(ssl.SSLSocket):
    """An SSL socket that keeps its first connect error or TLS alert on its context.

    pynetdicom only logs why a TLS connection failed; the error kept here lets
    :class:`~dicomnode.errors.DispatchError` say it (unknown CA, certificate required ...).
    """

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            _keep_failure(self.context, exc)
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:  # an alert from the peer (TLS 1.3 checks our cert after the handshake)
            _keep_failure(self.context, exc)
            raise


class _TracedContext(ssl.SSLContext):
    """Client context whose sockets record the first TLS or socket error in ``failure``."""

    sslsocket_class = _TracedSocket
    failure: OSError | None = None


def _keep_failure(ctx: ssl.SSLContext, exc: OSError) -> None:
    if isinstance(ctx, _TracedContext) and ctx.failure is None:
        ctx.failure = exc


def client_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """TLS context for a client: verify the peer against ``tls.ca``, present our cert."""
    if not tls.enabled:
        return None
    ctx = _TracedContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca:
        ctx.load_verify_locations(cafile=str(tls.ca))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False  # DICOM peers are addressed by IP; the CA pins trust
    ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.cert and tls.key:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


def _contexts(datasets: Iterable[Any]) -> list[tuple[str, str]]:
    return sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})


def _why_not_established(assoc: Any, transitions: list[tuple[str, str]], tls: ssl.SSLContext | None,
                         timeout_s: float) -> str:
    """Why an association attempt failed, in words (the reject reason, the TLS error ...)."""
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        return (f"rejected: {answer.reason_str} (result {answer.result_str}, source {answer.source_str}, "
                f"reason 0x{answer.diagnostic:02X})")
    failure = tls.failure if isinstance(tls, _TracedContext) else None
    if failure is not None:
        return f"TLS connection failed: {failure}"
    if ("Sta4", "Evt17") in transitions:
        return "could not connect: nothing listening or connection refused"
    if ("Sta5", "Evt17") in transitions:
        return "the peer closed the connection without answering the association request"
    if any(event == "Evt15" for _, event in transitions):
        return f"no answer within {timeout_s:g} s"
    return "aborted"


def _no_delay(event: Any) -> None:
    """Send each PDU at once (TCP_NODELAY): with Nagle's algorithm on, a small PDU waits for
    the peer's delayed ACK, ~40 ms per C-STORE against dcmtk's storescp."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _associate(ae: AE, dest: Destination) -> Any:
    tls = client_ssl_context(dest.tls)
    tls_args: Any = (tls, None) if tls is not None else None  # no server_hostname: peers are addressed by IP
    transitions: list[tuple[str, str]] = []
    handlers: list[Any] = [(evt.EVT_FSM_TRANSITION, lambda e: transitions.append((e.current_state, e.fsm_event))),
                           (evt.EVT_CONN_OPEN, _no_delay)]
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args, evt_handlers=handlers)
    if not assoc.is_established:
        assoc.dul.join(dest.timeout_s)  # its last state transitions are recorded when it ends
        why = _why_not_established(assoc, transitions, tls, dest.timeout_s)
        raise DispatchError(f"association to {_peer(dest)} failed ({why})", destination=dest.name)
    return assoc


def _peer(dest: Destination) -> str:
    return f"{dest.ae_title}@{dest.host}:{dest.port}"


def _new_ae(dest: Destination) -> AE:
    ae = AE(ae_title=dest.calling_ae_title)
    # connection_timeout bounds the TCP connect and the TLS handshake (pynetdicom: no limit)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = dest.timeout_s
    tuning.apply(ae)
    return ae


def open_association(dest: Destination, contexts: Iterable[tuple[str, str]]) -> Any:
    """An established association to ``dest`` proposing exactly ``contexts``
    (SOP class, transfer syntax): one presentation context each, nothing converted.

    Raises
    ------
    DispatchError
        More than 128 contexts, or the association was not established (the message
        says why: reject reason, TLS failure, nothing listening, no answer).
    """
    pairs = sorted(set(contexts))
    if len(pairs) > 128:
        raise DispatchError("more than 128 presentation contexts needed in one association", destination=dest.name)
    ae = _new_ae(dest)
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, syntax)
    return _associate(ae, dest)


def store(assoc: Any, item: Path | pydicom.Dataset) -> int | None:
    """C-STORE one instance; its DIMSE status, or ``None`` when no answer came (the
    association was aborted, timed out or the answer was garbled)."""
    answer = assoc.send_c_store(item)
    return int(answer.Status) if "Status" in answer else None


def send_files(dest: Destination, files: Sequence[Path]) -> int:
    """C-STORE ``files`` to ``dest`` in one association; return the number sent.

    Raises
    ------
    DispatchError
        The association failed, or any instance got a non-success status.
    """
    datasets = [pydicom.dcmread(f) for f in files]
    assoc = open_association(dest, _contexts(datasets))
    try:
        for ds in datasets:
            code = store(assoc, ds)
            if code is None:
                raise DispatchError(f"no C-STORE response from {_peer(dest)} for {ds.SOPInstanceUID}",
                                    destination=dest.name)
            if code != st.SUCCESS and (code >> 12) != 0xB:
                raise DispatchError(f"{_peer(dest)} answered {st.describe(code)} for {ds.SOPInstanceUID}",
                                    destination=dest.name, status=code)
    finally:
        assoc.release()
    return len(datasets)


def echo(host: str, port: int, *, called: str = "DICOMNODE", calling: str = "DICOMNODE",
         tls: TlsConfig | None = None, timeout_s: float = 10.0) -> int:
    """C-ECHO a peer; returns the DIMSE status (raises DispatchError if no association)."""
    dest = Destination(name="echo", type="dimse", ae_title=called, host=host, port=port,
                       calling_ae_title=calling, tls=tls or TlsConfig(), timeout_s=timeout_s)
    ae = _new_ae(dest)
    ae.add_requested_context(Verification)
    assoc = _associate(ae, dest)
    try:
        answer = assoc.send_c_echo()
        return int(answer.Status) if "Status" in answer else -1
    finally:
        assoc.release()
