"""Test helpers: real DICOM peers (Storage SCP, STOW-RS endpoint) and associations on 127.0.0.1."""

from __future__ import annotations

import email.parser
import http.server
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until truthy; raise AssertionError naming it on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {getattr(predicate, '__name__', predicate)}")


def send_raw(assoc: Any, sop_class: str, sop_instance: str, raw: bytes) -> int:
    """Send ``raw`` bytes as the Data Set of a C-STORE (bypassing pydicom encoding)."""
    context = assoc._get_valid_context(sop_class, "", "scu")
    req = C_STORE()
    req.MessageID = 7
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_instance
    req.Priority = 2
    req.DataSet = io.BytesIO(raw)
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    assoc.dimse.send_msg(req, context.context_id)
    _, rsp = assoc.dimse.get_msg(block=True)
    assoc._reactor_checkpoint.set()
    return int(rsp.Status)


class PacsSCP:
    """A real pynetdicom Storage SCP on 127.0.0.1 that keeps what it receives.

    Parameters
    ----------
    status
        The DIMSE status every C-STORE is answered with (``0`` stores the instance; a
        failure status such as ``0xA700`` keeps nothing). Change it at any time.
    refuse
        Reject every association (A-ASSOCIATE-RJ, calling AE title not recognised).
        Change it at any time.
    hold
        When given, every C-STORE waits for this event before it is answered (the test
        kills a sender while its C-STORE is in flight, then sets it); ``entered`` is set
        when the first such C-STORE arrives.

    Attributes
    ----------
    stored
        SOP Instance UID → number of times stored.
    associations
        ``time.time()`` of every association request (refused or not), in order.
    """

    def __init__(self, port: int | None = None, ae_title: str = "PACS", *, status: int = 0,
                 refuse: bool = False, hold: threading.Event | None = None,
                 folder: Path | None = None, ssl_context: Any = None) -> None:
        self.ssl_context = ssl_context
        self.port = port or free_port()
        self.ae_title, self.folder = ae_title, folder
        self.status, self.refuse, self.hold = status, refuse, hold
        self.entered = threading.Event()
        self.stored: dict[str, int] = {}
        self.requests = 0
        self.associations: list[float] = []
        self.datasets: dict[str, Dataset] = {}
        self.lock = threading.Lock()
        self.server: Any = None

    def _requested(self, event: Any) -> None:
        self.associations.append(time.time())
        if self.refuse:
            # result 0x01 rejected-permanent, source 0x01 service user, reason 0x03 calling AE not recognised
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            event.assoc.kill()

    def _handle(self, event: Any) -> int:
        self.requests += 1
        if self.hold is not None:
            self.entered.set()
            self.hold.wait(60)
        status = self.status
        if status != 0:
            return status
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self.lock:
            uid = str(ds.SOPInstanceUID)
            self.stored[uid] = self.stored.get(uid, 0) + 1
            self.datasets[uid] = ds
        if self.folder is not None:
            ds.save_as(self.folder / f"{uid}.dcm", enforce_file_format=True)
        return 0

    def start(self) -> PacsSCP:
        ae = AE(ae_title=self.ae_title)
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_C_STORE, self._handle), (evt.EVT_REQUESTED, self._requested)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers,
                                      ssl_context=self.ssl_context)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


@contextmanager
def pacs(**kwargs: Any) -> Iterator[PacsSCP]:
    scp = PacsSCP(**kwargs).start()
    try:
        yield scp
    finally:
        scp.stop()


def storage_scp(ae_title: str, handle: Callable[[Any], int]) -> tuple[Any, int]:
    """A pynetdicom Storage SCP on a free 127.0.0.1 port accepting every storage class and
    transfer syntax, ``handle`` answering EVT_C_STORE; returns (server, port): ``server.shutdown()``."""
    ae = AE(ae_title=ae_title)
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)]), port


def store_association(port: int, contexts: list[tuple[str, str]], calling: str = "TESTSCU",
                      called: str = "DICOMNODE") -> Any:
    ae = AE(ae_title=calling)
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    return ae.associate("127.0.0.1", port, ae_title=called)


def encoded(ds: Dataset) -> bytes:
    """Explicit VR little endian encoding of a dataset without file meta."""
    buf = io.BytesIO()
    pydicom.filewriter.write_dataset(buf, ds)  # type: ignore[attr-defined]
    return buf.getvalue()


class StowServer:
    """A real STOW-RS endpoint (stdlib ``http.server`` in a thread) on 127.0.0.1.

    Parameters
    ----------
    status
        The HTTP status every POST gets. ``200`` stores every instance of the
        multipart/related body; ``202`` stores none and lists each one in the response's
        Failed SOP Sequence (0008,1198) with reason 0xA700; any other status stores
        nothing and sends no body. Change it at any time.

    Attributes
    ----------
    url
        The studies endpoint (``http://127.0.0.1:PORT/dicom-web/studies``).
    requests
        ``time.time()`` of every POST, in order.
    stored
        SOP Instance UID → number of times stored.
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[float] = []
        self.stored: dict[str, int] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code, answer = owner.answer(self.headers["Content-Type"], body)
                self.send_response(code)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass  # keep the test output clean

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dicom-web/studies"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, content_type: str, body: bytes) -> tuple[int, bytes]:
        """Status and JSON body for one STOW-RS request."""
        self.requests.append(time.time())
        status = self.status
        uids = [str(pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID) for part in multipart_parts(content_type, body)]
        if status == 200:
            for uid in uids:
                self.stored[uid] = self.stored.get(uid, 0) + 1
            return 200, json.dumps({"00081199": {"vr": "SQ", "Value": [
                {"00081155": {"vr": "UI", "Value": [uid]}} for uid in uids]}}).encode()
        if status == 202:
            return 202, json.dumps({"00081198": {"vr": "SQ", "Value": [
                {"00081155": {"vr": "UI", "Value": [uid]}, "00081197": {"vr": "US", "Value": [0xA700]}}
                for uid in uids]}}).encode()
        return status, b""

    def __enter__(self) -> StowServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def multipart_parts(content_type: str, body: bytes) -> list[bytes]:
    """The payloads of a multipart/related body (parsed with the stdlib email parser)."""
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return [bytes(part.get_payload(decode=True)) for part in message.get_payload()]
