"""The Storage SCP: allowlist, presentation contexts, and the C-STORE handler.

The handler only spools and answers (STYLE rule 2). pynetdicom writes each data set to a
file as its PDUs arrive (chunked receive: a 1 GB slide level is never held in memory); the
handler reads that file's header once (only the elements routing and assembly need, pixels
checked for completeness but not read), moves the file into the spool, makes it durable
(``Spool.make_durable``: a shared ``syncfs``) and returns a named status.
It never decodes pixels, never runs a model, and never raises (a raise would become an
unspecific 0xC211).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.config import Config
from dicomnode.dicom.headers import ROUTING_KEYWORDS, InstanceInfo, instance_info, routing_headers
from dicomnode.errors import IngestError
from dicomnode.metrics import Metrics
from dicomnode.net import status as st
from dicomnode.net import tuning
from dicomnode.spool import Spool

__all__ = ["ACCEPTED_SOP_CLASSES", "StorageSCP"]

log = logging.getLogger(__name__)

#: Storage SOP classes the node processes (others are answered 0x0122).
ACCEPTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.6": "VL Whole Slide Microscopy Image Storage",
}
#: Storage classes newer than pynetdicom's list; negotiated so they get a clear 0x0122.
_EXTRA_STORAGE = ("1.2.840.10008.5.1.4.1.1.66.7", "1.2.840.10008.5.1.4.1.1.91.1")


@dataclass
class StoredInstance:
    """Passed to the ``on_stored`` callback after an instance is durable."""

    info: InstanceInfo
    headers: dict[str, Any]
    new: bool


#: The only elements read of a received instance (routing, assembly, identity checks).
HEADER_KEYWORDS = sorted({*ROUTING_KEYWORDS, "SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                          "ImagesInAcquisition", "NumberOfFrames", "TotalPixelMatrixColumns",
                          "TotalPixelMatrixRows", "TotalPixelMatrixFocalPlanes", "NumberOfOpticalPaths",
                          "Columns", "Rows", "DimensionOrganizationType"})
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}


def read_header(path: Path) -> Dataset:
    """Read a received file once: only :data:`HEADER_KEYWORDS`, pixels checked, not read.

    Raises
    ------
    IngestError
        0xC000 (not DICOM, truncated) or 0xA900 (no pixel data), saying what was wrong.
    """
    with open(path, "rb") as fh:
        try:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=HEADER_KEYWORDS)
        except Exception as exc:  # noqa: BLE001 - any decoder error means we cannot understand it
            raise IngestError(f"unparseable data set: {exc}", st.CANNOT_UNDERSTAND) from exc
        if not any(tag.group == 0x0008 for tag in ds.keys()):
            raise IngestError("unparseable data set: no identifying (0008,xxxx) elements; not DICOM?",
                              st.CANNOT_UNDERSTAND)
        _check_lengths(ds)
        _check_pixel_element(fh, str(ds.file_meta.TransferSyntaxUID), os.fstat(fh.fileno()).st_size)
    return ds


def _check_lengths(ds: Dataset) -> None:
    for elem in ds._dict.values():
        length, value = getattr(elem, "length", None), getattr(elem, "value", None)
        if isinstance(value, bytes) and length not in (None, 0xFFFFFFFF) and len(value) != length:
            raise IngestError(f"truncated data set: element {elem.tag} declares {length} bytes, "
                              f"{len(value)} received", st.CANNOT_UNDERSTAND)


def _check_pixel_element(fh: BinaryIO, syntax: str, size: int) -> None:
    """The file is positioned where reading stopped: the pixel element must start there
    and be complete (its declared length present, or an encapsulated one delimited)."""
    start, head = fh.tell(), fh.read(12)
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    if len(head) < 8 or struct.unpack(order + "HH", head[:4]) not in _PIXEL_TAGS:
        raise IngestError("image without Pixel Data (truncated before pixels?)", st.DATASET_MISMATCH)
    if syntax == ImplicitVRLittleEndian or head[4:6] not in _LONG_VRS:
        length, value_start = struct.unpack(order + "I", head[4:8])[0], start + 8
        if syntax != ImplicitVRLittleEndian:
            length = struct.unpack(order + "H", head[6:8])[0]
    else:
        length, value_start = struct.unpack(order + "I", head[8:12])[0], start + 12
    if length == 0xFFFFFFFF:
        fh.seek(max(value_start, size - 65536))
        tail = fh.read()
        delimiter = struct.pack(order + "HHI", 0xFFFE, 0xE0DD, 0)
        if not (tail.endswith(delimiter) or delimiter + struct.pack(order + "HH", 0xFFFC, 0xFFFC) in tail):
            raise IngestError("truncated data set: encapsulated Pixel Data has no sequence delimiter",
                              st.CANNOT_UNDERSTAND)
    elif value_start + length > size:
        raise IngestError(f"truncated data set: Pixel Data declares {length} bytes, "
                          f"{size - value_start} received", st.CANNOT_UNDERSTAND)


def _check_identity(ds: Dataset, event: Any) -> None:
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID"):
        if not ds.get(keyword):
            raise IngestError(f"required attribute {keyword} missing", st.DATASET_MISMATCH)
    affected = event.request.AffectedSOPInstanceUID
    if str(ds.SOPInstanceUID) != str(affected):
        raise IngestError(f"SOPInstanceUID {ds.SOPInstanceUID} differs from the request's "
                          f"Affected SOP Instance UID {affected}", st.DATASET_MISMATCH)


class _ReusePortServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with ``SO_REUSEPORT`` set before the bind."""

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class StorageSCP:
    """pynetdicom AE configured from :class:`Config`, writing into a :class:`Spool`.

    Parameters
    ----------
    config
        Node configuration (AE title, port, allowlist, TLS, watermark).
    spool
        Where instances go.
    metrics
        Counters to update.
    on_stored
        Called (under the series lock) after an instance is durable, with a
        :class:`StoredInstance`; the assembler's entry point.
    after_stored
        Called after the series lock is released, before the answer; an
        :class:`~dicomnode.errors.IngestError` it raises becomes the answer's status (the
        scale-out receivers record the series in PostgreSQL here).
    """

    def __init__(self, config: Config, spool: Spool, metrics: Metrics,
                 on_stored: Callable[[StoredInstance], None], reuse_port: bool = False,
                 after_stored: Callable[[StoredInstance], None] | None = None) -> None:
        self.config, self.spool, self.metrics, self.on_stored = config, spool, metrics, on_stored
        self.reuse_port, self.after_stored = reuse_port, after_stored
        self.ae = AE(ae_title=config.node.ae_title)
        self.ae.maximum_associations = config.node.max_associations
        self.ae.require_called_aet = True
        tuning.configure(config.node.pynetdicom_tuning)
        tuning.apply(self.ae)
        # Received data sets go to a file as their PDUs arrive, never whole into memory
        # (pynetdicom's public switch; process-wide, and harmless to other SCPs).
        _config.STORE_RECV_CHUNKED_DATASET = True
        tuning.receive_into(self.ae, spool.root / "tmp")
        self.ae.add_supported_context(Verification)
        for context in StoragePresentationContexts:
            self.ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        for uid in _EXTRA_STORAGE:
            self.ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        self.server: Any = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> int:
        """Start listening (non-blocking); returns the bound port."""
        handlers: list[Any] = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, lambda e: st.SUCCESS),
                    (evt.EVT_REQUESTED, self.check_peer)]
        address = (self.config.node.host, self.config.node.port)
        if self.reuse_port:  # several processes on one port: the kernel spreads associations
            self.server = self.ae.make_server(address, evt_handlers=handlers, ssl_context=self._ssl_context(),
                                              server_class=_ReusePortServer)
            self.ae._servers.append(self.server)  # as start_server() does; shutdown() removes it
            threading.Thread(target=self.server.serve_forever, name="AcceptorServer", daemon=True).start()
        else:
            self.server = self.ae.start_server(address, block=False, evt_handlers=handlers,
                                               ssl_context=self._ssl_context())
        port = int(self.server.server_address[1])
        log.info("listening as %s on %s:%d (tls=%s)", self.config.node.ae_title,
                 self.config.node.host, port, self.config.node.tls.enabled)
        return port

    def stop(self) -> None:
        """Stop accepting associations and close the running ones.

        Open associations are aborted: every instance acknowledged so far is on disk, and
        an unacknowledged one is the sender's to send again. Left open, an idle
        association would keep the process alive until its network timeout (pynetdicom's
        association threads are not daemons).
        """
        if self.server is not None:
            for assoc in list(self.server.active_associations):
                if assoc.is_established:  # one being rejected is closing already (Sta13)
                    assoc.abort()
            self.server.shutdown()
            self.server = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.config.node.tls
        if not tls.enabled:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        if tls.ca is not None:
            ctx.load_verify_locations(cafile=str(tls.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
        return ctx

    # -- handlers -----------------------------------------------------------------------
    def check_peer(self, event: Any) -> None:
        """EVT_REQUESTED: reject callers outside the allowlist (calling AE not recognised)."""
        assoc = event.assoc
        # requestor.ae_title is only filled in during negotiation, after EVT_REQUESTED
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        address = assoc.requestor.address
        if any(entry.permits(calling, address) for entry in self.config.node.allow):
            return
        self.metrics.inc("dicomnode_associations_rejected_total")
        log.warning("association rejected: calling AE %r from %s is not in node.allow", calling, address)
        # result 0x01 rejected-permanent, source 0x01 service user, reason 0x03 calling AE not recognised
        assoc.acse.send_reject(0x01, 0x01, 0x03)
        assoc.kill()  # as pynetdicom's own rejection does: lets the DUL flush the A-ASSOCIATE-RJ

    def handle_store(self, event: Any) -> int:
        """EVT_C_STORE: spool durably, then answer; every failure is a named status."""
        peer = f"{event.assoc.requestor.ae_title}@{event.assoc.requestor.address}"
        try:
            stored = self._store(event)
        except IngestError as exc:
            self.metrics.inc("dicomnode_instances_refused_total", status=f"0x{exc.status:04X}")
            log.warning("C-STORE from %s refused with %s: %s (SOP Instance %s)", peer,
                        st.describe(exc.status), exc, event.request.AffectedSOPInstanceUID)
            return exc.status
        except Exception as exc:  # noqa: BLE001 - the handler must answer, never raise
            self.metrics.inc("dicomnode_instances_refused_total", status="0xA700")
            log.exception("C-STORE from %s failed while writing: %s", peer, exc)
            return st.OUT_OF_RESOURCES
        self.metrics.inc("dicomnode_instances_received_total")
        log.debug("stored %s series %s from %s (new=%s)", stored.info.sop_instance_uid,
                  stored.info.series_uid, peer, stored.new)
        return st.SUCCESS

    def _store(self, event: Any) -> StoredInstance:
        sop_class = str(event.request.AffectedSOPClassUID)
        if sop_class not in ACCEPTED_SOP_CLASSES:
            raise IngestError(f"SOP class {sop_class} is not processed by this node", st.SOP_CLASS_NOT_SUPPORTED)
        free = self.spool.free_mb()
        if free < self.config.spool.min_free_mb:
            raise IngestError(f"spool free space {free:.0f} MiB below spool.min_free_mb "
                              f"{self.config.spool.min_free_mb}", st.OUT_OF_RESOURCES)
        received = Path(event.dataset_path)  # written by pynetdicom as it arrived (chunked)
        ds = read_header(received)
        _check_identity(ds, event)
        info, headers = instance_info(ds), routing_headers(ds)
        try:
            tmp = self.spool.adopt_temp(received)
        except OSError as exc:
            raise IngestError(f"spool write failed: {exc.strerror}", st.OUT_OF_RESOURCES) from exc
        with self.spool.series_lock(info.series_uid):
            try:
                new = self.spool.commit_instance(tmp, info.series_uid, info.sop_instance_uid, headers)
                self.spool.make_durable()
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise IngestError(f"spool write failed: {exc.strerror}", st.OUT_OF_RESOURCES) from exc
            stored = StoredInstance(info, headers, new)
            self.on_stored(stored)
        if self.after_stored is not None:
            self.after_stored(stored)
        return stored
