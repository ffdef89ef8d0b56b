"""Test helpers for real DICOM associations on 127.0.0.1."""

from __future__ import annotations

import io
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

    ``delay_s`` makes every C-STORE answer late (to kill a sender mid-send);
    ``stored`` maps SOP Instance UID → number of times received.
    """

    def __init__(self, port: int | None = None, ae_title: str = "PACS", delay_s: float = 0.0,
                 folder: Path | None = None, ssl_context: Any = None) -> None:
        self.ssl_context = ssl_context
        self.port = port or free_port()
        self.ae_title, self.delay_s, self.folder = ae_title, delay_s, folder
        self.stored: dict[str, int] = {}
        self.requests = 0
        self.datasets: dict[str, Dataset] = {}
        self.lock = threading.Lock()
        self.server: Any = None

    def _handle(self, event: Any) -> int:
        self.requests += 1
        if self.delay_s:
            time.sleep(self.delay_s)
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
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._handle)],
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
