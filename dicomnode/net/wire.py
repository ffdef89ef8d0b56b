"""The requestor's side of :mod:`dicomnode.net.tuning`: DIMSE bytes by ``struct``.

``dicomnode replay`` sends files by path (``send_c_store(path)`` with
``STORE_SEND_CHUNKED_DATASET``: the file's bytes, not a decoded and re-encoded Dataset).
Against dcmtk ``storescu`` to one ``storescp`` (``bench/ingest.py --rows replay``, 296 KB MR
instances) stock pynetdicom 3.0.4 sent at 0.42x: each 16 KB PDU went through a P-DATA
primitive, the DUL's queues and state machine and a wake-up of the DUL thread; the file
meta was read by pydicom's general reader; the 120-byte C-STORE-RSP was decoded through a
pydicom Dataset; and each file was opened only once the previous answer was in. What
``tuning`` installs from here, each for the common case only, each falling back to
pynetdicom's own code otherwise:

- :func:`send_file_directly`: the C-STORE-RQ of a file written to the socket by the calling
  thread in writes of about :data:`SEND_BATCH` bytes (:func:`store_rq_batches`, fragmented
  exactly as pynetdicom's ``encode_msg`` does), when the association is established over
  plain TCP, nothing is queued and nobody is bound to the send events (TCP is full duplex;
  the DUL thread only reads meanwhile);
- :func:`read_ahead`: while that C-STORE's answer is awaited (the peer is busy storing),
  the thread reads the file it sends next, so the next C-STORE starts at once;
- :func:`split_dataset`: group 0002 read with ``struct`` from one 4 KB read, the same raw
  elements and data set offset as pynetdicom's ``dsutils.split_dataset``;
- :func:`store_rsp_primitive`: a plain C-STORE-RSP (one PDV, the seven elements in order)
  made into pynetdicom's ``C_STORE`` primitive without a pydicom Dataset.

Measured (2026-11-30, 2-core VM shared with other jobs, ``bench/ingest.py --rows replay
--mr 1000 --repeats 3`` four times, old and new code alternating): median of the 12
rounds 0.42x -> 0.92x storescu (single rounds 0.55-1.25x with the machine's load at 2-4);
sender CPU 0.58-0.66 ms per instance against storescu's 0.45-0.53. Per instance, from
``store()`` to ``store()``: 3.5 -> 1.3-1.5 ms, of which storescp's own work is most.
"""

from __future__ import annotations

import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset as upstream_split_dataset

__all__ = ["READ_AHEAD_MAX", "SEND_BATCH", "may_send_directly", "read_ahead", "send_file_directly", "split_dataset",
           "store_rq_batches", "store_rq_bytes", "store_rsp_primitive"]

#: bytes of P-DATA-TF PDUs gathered into one socket write: few system calls, so the sending
#: thread rarely gives up the GIL (getting it back can cost a switch interval)
SEND_BATCH = 1 << 20
#: explicit VR little endian VRs with a 2-byte length, and with a 4-byte one (PS3.5 7.1.2)
_SHORT_VRS = frozenset("AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
_LONG_VRS = frozenset("OB OD OF OL OV OW SV UC UN UR UT UV".split())
_META_READ = 4096
#: the elements of a plain C-STORE-RSP command set, in order (PS3.7 9.3.1.2)
_RSP_TAGS = (0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x1000)
#: files up to this size are read ahead whole; larger ones only their file meta
READ_AHEAD_MAX = 8 << 20
_ahead = threading.local()
#: what ``send_c_store`` reads from a file's meta
_META_KEYWORDS = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")


def may_send_directly(dul: Any) -> bool:
    """Whether the association thread may write a message itself instead of handing it
    to the DUL thread (one thread hand-over less per message): established (Sta6), nothing
    queued before it, a plain socket (an SSL socket must not be written while the DUL reads
    it), and nobody listening for the DUL's send events."""
    raw = getattr(dul.socket, "socket", None)
    return (raw is not None and not isinstance(raw, ssl.SSLSocket)
            and dul.state_machine.current_state == "Sta6"
            and dul.to_provider_queue.empty() and dul.event_queue.empty()
            and not dul.assoc.get_handlers(evt.EVT_PDU_SENT) and not dul.assoc.get_handlers(evt.EVT_DATA_SENT))


def _command(elements: list[tuple[int, bytes]]) -> bytes:
    """An implicit VR little endian command set with its group length (PS3.7 6.3.1)."""
    body = b"".join(struct.pack("<HHI", 0x0000, tag, len(value)) + value for tag, value in elements)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def _ui(value: Any) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def store_rq_bytes(primitive: Any) -> bytes | None:
    """The command set of a C-STORE-RQ whose data set is a file (``send_c_store(path)``),
    or ``None`` when it is anything else (a data set in memory, a C-MOVE originator)."""
    if not isinstance(primitive, C_STORE) or primitive.MessageID is None or primitive._dataset_path is None:
        return None
    if primitive.MessageIDBeingRespondedTo is not None or primitive.DataSet is not None:
        return None
    if primitive.MoveOriginatorApplicationEntityTitle is not None or primitive.MoveOriginatorMessageID is not None:
        return None
    if primitive.AffectedSOPClassUID is None or primitive.AffectedSOPInstanceUID is None:
        return None
    return _command([(0x0002, _ui(primitive.AffectedSOPClassUID)), (0x0100, b"\x01\x00"),
                     (0x0110, struct.pack("<H", primitive.MessageID)), (0x0700, struct.pack("<H", primitive.Priority)),
                     (0x0800, b"\x01\x00"), (0x1000, _ui(primitive.AffectedSOPInstanceUID))])


def send_file_directly(dimse: Any, primitive: Any, context_id: int) -> bool:
    """Write the C-STORE-RQ of a file to the socket from the calling thread; ``False``
    (nothing sent) when this fast path does not apply."""
    command = store_rq_bytes(primitive)
    limit = dimse.maximum_pdu_size
    if command is None or not limit or limit - 6 > SEND_BATCH or len(command) + 6 > limit:
        return False
    if dimse.assoc.get_handlers(evt.EVT_DIMSE_SENT) or not may_send_directly(dimse.dul):
        return False
    path, offset = primitive._dataset_path
    raw = dimse.dul.socket.socket
    try:
        ready = _take_ready(path, offset)
        if ready is not None:
            _send_all(raw, store_rq_batches(command, _memory_reader(ready), len(ready), context_id, limit))
        else:
            with open(path, "rb") as fh:
                length = fh.seek(0, 2) - fh.seek(offset)
                _send_all(raw, store_rq_batches(command, fh.read, length, context_id, limit))
    except OSError:  # as pynetdicom's AssociationSocket.send: the connection closed (Evt17)
        dimse.dul.event_queue.put("Evt17")
    _read_next()
    return True


def _send_all(raw: Any, batches: Iterator[bytes]) -> None:
    for batch in batches:
        raw.sendall(batch)


def store_rq_batches(command: bytes, read: Callable[[int], bytes | memoryview], length: int, context_id: int,
                     max_pdu: int) -> Iterator[bytes]:
    """A C-STORE-RQ as P-DATA-TF PDUs, fragmented as pynetdicom's ``encode_msg`` does: the
    command set in one PDV (0x03), then ``length`` bytes of data set (``read(n)`` gives the
    next ``n``) in PDVs of ``max_pdu - 6`` bytes (0x00, the last 0x02); joined into pieces
    of about :data:`SEND_BATCH` bytes, each one socket write."""
    size = max_pdu - 6
    fragments, per_batch = max(1, -(-length // size)), max(1, SEND_BATCH // size)
    for first in range(0, fragments, per_batch):
        count = min(per_batch, fragments - first)
        data = memoryview(read(count * size))
        parts: list[bytes | memoryview] = [_pdv_header(context_id, 0x03, len(command)), command] if first == 0 else []
        for i in range(count):
            piece = data[i * size:(i + 1) * size]
            parts += (_pdv_header(context_id, 0x02 if first + i == fragments - 1 else 0x00, len(piece)), piece)
        yield b"".join(parts)


def _pdv_header(context_id: int, flag: int, length: int) -> bytes:
    """P-DATA-TF PDU header holding one PDV of ``length`` bytes after its control header (PS3.8 9.3.5)."""
    return struct.pack(">BBIIBB", 0x04, 0x00, length + 6, length + 2, context_id, flag)


def _memory_reader(data: bytes) -> Callable[[int], memoryview]:
    view, done = memoryview(data), 0

    def read(count: int) -> memoryview:
        nonlocal done
        done += count
        return view[done - count:done]
    return read


def read_ahead(path: Path | None) -> None:
    """After this thread's next C-STORE-RQ of a file has been written, while its response
    is awaited, read ``path`` (the file this thread sends next: its file meta and, up to
    :data:`READ_AHEAD_MAX`, its data set), so that the next C-STORE starts at once."""
    _ahead.next = path


def _take_ready(path: Path, offset: int) -> bytes | None:
    """The data set of ``path`` if it was read ahead (and is taken now), else ``None``."""
    ready, _ahead.data = getattr(_ahead, "data", None), None
    if ready is None or ready[0] != path or ready[1] != offset:
        return None
    return ready[2]  # type: ignore[no-any-return]


def _read_next() -> None:
    """Read the file announced by :func:`read_ahead` (file meta, offset, data set bytes)."""
    path, _ahead.next, _ahead.meta = getattr(_ahead, "next", None), None, None
    if path is None:
        return
    try:
        meta, offset = split_dataset(path)
        for keyword in _META_KEYWORDS:  # decoded now, not when send_c_store reads them
            meta.get(keyword)
        with open(path, "rb") as fh:
            size = fh.seek(0, 2) - fh.seek(offset)
            data = fh.read() if size <= READ_AHEAD_MAX else None
    except Exception:  # noqa: BLE001 - its own C-STORE reads it again and reports what is wrong
        return
    _ahead.meta = (path, meta, offset)
    _ahead.data = (path, offset, data) if data is not None else None


def split_dataset(path: Path) -> tuple[Dataset, int]:
    """pynetdicom's ``dsutils.split_dataset`` (the file meta elements, raw, and the data
    set's offset) from one 4 KB read; anything unusual (no preamble, a sequence, an empty
    or undefined length, a longer file meta) goes to pynetdicom's own."""
    ready, _ahead.meta = getattr(_ahead, "meta", None), None
    if ready is not None and ready[0] == path:
        return ready[1], ready[2]
    with open(path, "rb") as fh:
        head = fh.read(_META_READ)
    found = _file_meta(head)
    if found is None:
        return upstream_split_dataset(path)
    meta = Dataset(found[0])
    meta.set_original_encoding(False, True, default_encoding)
    return meta, found[1]


def _file_meta(head: bytes) -> tuple[dict[BaseTag, DataElement | RawDataElement], int] | None:
    """Group 0002's raw elements and where the data set starts, or ``None`` if not plain."""
    if head[128:132] != b"DICM":
        return None
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    pos = 132
    while pos + 8 <= len(head):
        group, elem, code, length = struct.unpack_from("<HH2sH", head, pos)
        if group != 2:
            return elements, pos
        vr, start = code.decode("latin-1"), pos + 8
        if vr in _LONG_VRS:
            (length,), start = struct.unpack_from("<I", head, start), start + 4
        elif vr not in _SHORT_VRS:
            return None
        if not 0 < length <= len(head) - start:
            return None
        tag = BaseTag(group << 16 | elem)
        elements[tag] = RawDataElement(tag, vr, length, head[start:start + length], start, False, True)
        pos = start + length
    return None


def store_rsp_primitive(pdv: bytes, context_id: int) -> C_STORE | None:
    """The C-STORE-RSP in ``pdv`` (a whole command set, control header 0x03) as the
    primitive pynetdicom's ``message_to_primitive`` makes, or ``None`` if not plain."""
    fields = _command_fields(pdv)
    if fields is None or tuple(fields) != _RSP_TAGS or fields[0x0100] != b"\x01\x80":
        return None
    if fields[0x0800] != b"\x01\x01" or len(fields[0x0120]) != 2 or len(fields[0x0900]) != 2:
        return None
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = struct.unpack("<H", fields[0x0120])[0]
    rsp.AffectedSOPClassUID = fields[0x0002].rstrip(b"\0 ").decode("ascii")
    rsp.Status = struct.unpack("<H", fields[0x0900])[0]
    rsp.AffectedSOPInstanceUID = fields[0x1000].rstrip(b"\0 ").decode("ascii")
    rsp._context_id = context_id  # as message_to_primitive sets them
    rsp._dataset_path = rsp._dataset_file = None
    return rsp


def _command_fields(pdv: bytes) -> dict[int, bytes] | None:
    """Element number → value of a command set in one PDV, or ``None`` if malformed."""
    if pdv[:1] != b"\x03":
        return None
    fields: dict[int, bytes] = {}
    pos = 1
    while pos + 8 <= len(pdv):
        group, elem, length = struct.unpack_from("<HHI", pdv, pos)
        if group != 0 or elem in fields or pos + 8 + length > len(pdv):
            return None
        fields[elem] = pdv[pos + 8:pos + 8 + length]
        pos += 8 + length
    if pos != len(pdv) or fields.get(0x0000) != struct.pack("<I", len(pdv) - 13):
        return None
    return fields
