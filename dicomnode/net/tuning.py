"""pynetdicom, tuned for ingest speed: its public knobs, plus three patches pinned to 3.0.4.

Measured in ../shared/reference/INGEST-STUDY.md: a stock pynetdicom SCP spends most of
each instance polling, not working. Its DUL thread sleeps ``_run_loop_delay`` (1 ms)
whenever a loop found nothing to do, the acceptor's reactor sleeps a hard-coded 1 ms per
loop, and each C-STORE-RSP is built through a pydicom Dataset encoded twice.

Public settings (always applied when tuning is on):
- maximum PDU 128 KiB (``AE.maximum_pdu_size``): a 300 KB instance arrives in 3 PDUs, not 20;
- pynetdicom's per-message log handler off (``_config.LOG_HANDLER_LEVEL = "none"``); the
  node's own log lines are unaffected;
- a file sent by path (replay, dispatch) goes out as its bytes, read in chunks
  (``_config.STORE_SEND_CHUNKED_DATASET``), instead of being decoded and encoded again; the
  SCU proposes each file's own transfer syntax, so nothing needs converting.

Patches (only for the pynetdicom version they were written against, and only when the
patched functions' source still hashes to what was reviewed; otherwise pynetdicom runs
stock and the log says why):
1. ``DULServiceProvider.run_reactor``: waits on the socket and a wake-up pipe (written by
   ``send_pdu``/``kill_dul``) instead of sleeping; never longer than ``IDLE_WAIT_S`` so
   timers and kill flags are still seen.
2. ``Association._run_reactor`` (acceptor): waits on an event the DUL sets after every
   state-machine action, instead of sleeping 1 ms per loop.
5. ``transport.deepcopy`` (used once, for the acceptor's copy of the supported contexts
   per association): a list of ``PresentationContext`` is copied field by field (their
   values are strings, ints and lists of UIDs) instead of by ``copy.deepcopy``, which took
   ~0.1 s per association for the ~160 storage classes x all transfer syntaxes we accept.
4. ``dimse_messages.NamedTemporaryFile``: a chunked receive (``STORE_RECV_CHUNKED_DATASET``)
   for an AE registered with :func:`receive_into` writes into that folder (the spool's
   ``tmp/``), so the handler renames the file instead of copying it from ``/tmp``.
3. ``DIMSEServiceProvider.send_msg``: a plain C-STORE-RSP (no error comment, no offending
   element, nobody bound to ``EVT_DIMSE_SENT``) is packed directly; the bytes equal
   pynetdicom's own encoding (``tests/core/test_tuning.py``). On an established plain-TCP
   association with nothing queued, the association thread writes that PDU to the socket
   itself (TCP is full duplex; the DUL thread only reads meanwhile), saving a hand-over to
   the DUL thread per instance; otherwise the DUL sends it as usual.
6. The requestor's side (``replay``), in :mod:`dicomnode.net.wire`: ``send_msg`` writes a
   file's C-STORE-RQ from the calling thread in ~1 MB writes (fragmented exactly as
   ``encode_msg`` would) and then reads the next file while the answer is awaited;
   ``association.split_dataset`` reads the file meta with ``struct``; ``receive_primitive``
   turns a requestor's plain C-STORE-RSP into its primitive without a pydicom Dataset.

Upstream proposal (for pynetdicom): make the DUL reactor block on ``select`` over the
socket and a self-pipe instead of sleeping, and let the acceptor reactor block on its
queues; that alone doubles a no-op SCP's rate. Cache the encoding of fixed-shape
responses. On the requestor's side: hand the DUL one encoded message (or let the calling
thread write it) instead of one P-DATA primitive, queue hop and wake-up per PDU, and
decode fixed-shape responses without a Dataset (figures in wire.py).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import struct
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynetdicom
from pynetdicom import _config, association, dimse_messages, evt, transport
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext

from dicomnode.net import reactors, wire

__all__ = ["MAX_PDU", "PATCHED", "PINNED_VERSION", "apply", "configure", "receive_into", "patch_state", "source_digest"]

log = logging.getLogger(__name__)

MAX_PDU = 131072
PINNED_VERSION = "3.0.4"
#: sha256 (first 16 hex digits) of the source of each function the patches replace or rely on, as reviewed.
PATCHED: dict[str, str] = {
    "pynetdicom.dul.DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "pynetdicom.dul.DULServiceProvider.send_pdu": "7cbce5da8594124e",
    "pynetdicom.dul.DULServiceProvider.kill_dul": "5ceccf8dd01c2072",
    "pynetdicom.association.Association._run_reactor": "f28838c5559e462a",
    "pynetdicom.dimse.DIMSEServiceProvider.send_msg": "a839cf2fb46976d9",
    "pynetdicom.transport.RequestHandler._create_association": "05c8d12b79863cdb",
    "pynetdicom.presentation.PresentationContext.__init__": "37a8842ac07cd8f3",
    "pynetdicom.dimse_messages.DIMSEMessage.decode_msg": "f51c777e841a76be",
    "pynetdicom.dimse_messages.DIMSEMessage.encode_msg": "73000c902c52832d",
    "pynetdicom.dimse.DIMSEServiceProvider.receive_primitive": "5f99c86b14a15cef",
    "pynetdicom.dimse_messages.DIMSEMessage.message_to_primitive": "f8f43d34e43450ef",
    "pynetdicom.association.Association.send_c_store": "fa5a8127f349f8e7",
    "pynetdicom.dsutils.split_dataset": "377ac781c097b81f",
}
_ORIGINAL: dict[str, Callable[..., Any]] = {}
_CHUNK_DIRS: weakref.WeakKeyDictionary[Any, Path] = weakref.WeakKeyDictionary()


def _lookup(qualname: str) -> Callable[..., Any]:
    module, cls, func = qualname.rsplit(".", 2)
    return getattr(getattr(__import__(module, fromlist=[cls]), cls), func)  # type: ignore[no-any-return]


#: the functions as pynetdicom ships them (captured before any patch)
_UPSTREAM = {name: _lookup(name) for name in PATCHED}
_state = {"applied": False, "reason": "not applied", "enabled": True}
_lock = threading.Lock()


def source_digest(qualname: str) -> str:
    """sha256 (16 hex digits) of the installed pynetdicom's source of ``module.Class.function``."""
    return hashlib.sha256(inspect.getsource(_UPSTREAM[qualname]).encode()).hexdigest()[:16]


def patch_state() -> tuple[bool, str]:
    """Whether the patches are in place, and why (not)."""
    return bool(_state["applied"]), str(_state["reason"])


def _why_not() -> str | None:
    version = pynetdicom.__version__
    if version != PINNED_VERSION:
        return f"pynetdicom {version} is not the reviewed {PINNED_VERSION}"
    changed = [name for name, digest in PATCHED.items() if source_digest(name) != digest]
    if changed:
        return f"pynetdicom source changed since review: {', '.join(changed)}"
    return None


def configure(enabled: bool) -> None:
    """The process-wide choice (``node.pynetdicom_tuning``); ``False`` keeps pynetdicom stock.

    Patches already installed stay (they are per class); a node sets this before its
    first AE exists.
    """
    _state["enabled"] = enabled


def receive_into(ae: Any, folder: Path) -> None:
    """Chunked receives of ``ae``'s associations write their files in ``folder``."""
    _CHUNK_DIRS[ae] = folder


def apply(ae: Any) -> bool:
    """Tune ``ae`` (and, once per process, pynetdicom); returns whether patches are active."""
    if not _state["enabled"]:
        return False
    ae.maximum_pdu_size = MAX_PDU
    _config.LOG_HANDLER_LEVEL = "none"
    _config.STORE_SEND_CHUNKED_DATASET = True
    with _lock:
        if not _state["applied"]:
            reason = _why_not()
            if reason is None:
                _install()
                _state.update(applied=True, reason=f"patched pynetdicom {PINNED_VERSION}")
            elif _state["reason"] != reason:
                _state["reason"] = reason
                log.warning("pynetdicom runs stock (slower ingest): %s", reason)
    return bool(_state["applied"])


def _install() -> None:
    reactors.ORIGINAL.update(send_pdu=DULServiceProvider.send_pdu, kill_dul=DULServiceProvider.kill_dul)
    _ORIGINAL.update(send_msg=DIMSEServiceProvider.send_msg, receive_primitive=DIMSEServiceProvider.receive_primitive)
    DULServiceProvider.run_reactor = reactors.dul_run_reactor  # type: ignore[method-assign]
    DULServiceProvider.send_pdu = reactors.send_pdu  # type: ignore[method-assign]
    DULServiceProvider.kill_dul = reactors.kill_dul  # type: ignore[method-assign]
    Association._run_reactor = reactors.assoc_run_reactor  # type: ignore[method-assign]
    DIMSEServiceProvider.send_msg = _send_msg  # type: ignore[method-assign]
    DIMSEServiceProvider.receive_primitive = _receive_primitive  # type: ignore[method-assign]
    dimse_messages.NamedTemporaryFile = _chunk_file  # type: ignore[attr-defined]
    setattr(transport, "deepcopy", _copy_contexts)  # noqa: B010 - a module global, not an attribute
    setattr(association, "split_dataset", wire.split_dataset)  # noqa: B010 - likewise


def _copy_contexts(value: Any, memo: Any = None) -> Any:
    """``deepcopy`` for a list of presentation contexts: new objects, new lists, same strings."""
    if not (isinstance(value, list) and all(type(cx) is PresentationContext for cx in value)):
        return copy.deepcopy(value, memo)
    copies = []
    for cx in value:
        new = copy.copy(cx)
        new.__dict__.update({k: list(v) for k, v in cx.__dict__.items() if isinstance(v, list)})
        copies.append(new)
    return copies


def _chunk_file(*args: Any, **kwargs: Any) -> Any:
    """``NamedTemporaryFile`` in the folder registered for this DUL thread's AE."""
    ae = getattr(getattr(threading.current_thread(), "assoc", None), "ae", None)
    folder = _CHUNK_DIRS.get(ae) if ae is not None else None
    if folder is not None and "dir" not in kwargs:
        kwargs["dir"] = folder
    return tempfile.NamedTemporaryFile(*args, **kwargs)


# -- 3. the C-STORE response -------------------------------------------------------------------
def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, tag, len(value)) + value


def _uid(value: Any) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def store_rsp_bytes(primitive: Any) -> bytes | None:
    """The implicit-VR command set of a plain C-STORE-RSP, or ``None`` when not plain."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    if primitive.AffectedSOPClassUID is None or primitive.AffectedSOPInstanceUID is None:
        return None
    body = b"".join((
        _element(0x0002, _uid(primitive.AffectedSOPClassUID)),
        _element(0x0100, struct.pack("<H", 0x8001)),
        _element(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)),
        _element(0x0800, struct.pack("<H", 0x0101)),
        _element(0x0900, struct.pack("<H", primitive.Status)),
        _element(0x1000, _uid(primitive.AffectedSOPInstanceUID)),
    ))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    if wire.send_file_directly(self, primitive, context_id):
        return
    command = store_rsp_bytes(primitive)
    limit = self.maximum_pdu_size
    if command is None or self.assoc.get_handlers(evt.EVT_DIMSE_SENT) or (limit and len(command) + 6 > limit):
        _ORIGINAL["send_msg"](self, primitive, context_id)
        return
    pdv = b"\x03" + command
    sock = self.dul.socket
    if sock is not None and wire.may_send_directly(self.dul):
        sock.send(p_data_tf_bytes(context_id, pdv))
        return
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, pdv))
    self.dul.send_pdu(pdata)


def p_data_tf_bytes(context_id: int, pdv: bytes) -> bytes:
    """A P-DATA-TF PDU holding one presentation data value (PS3.8 9.3.5)."""
    item = struct.pack(">IB", len(pdv) + 1, context_id) + pdv
    return struct.pack(">BBI", 0x04, 0x00, len(item)) + item


def _receive_primitive(self: DIMSEServiceProvider, primitive: Any) -> None:
    """A requestor's plain C-STORE-RSP goes to the queue without a pydicom Dataset;
    everything else (and anyone bound to ``EVT_DIMSE_RECV``) takes pynetdicom's path."""
    pdvs = primitive.presentation_data_value_list
    if self.message is None and len(pdvs) == 1 and self.assoc.is_requestor:
        rsp = wire.store_rsp_primitive(pdvs[0][1], pdvs[0][0])
        if rsp is not None and not self.assoc.get_handlers(evt.EVT_DIMSE_RECV):
            self.msg_queue.put((pdvs[0][0], rsp))
            return
    _ORIGINAL["receive_primitive"](self, primitive)
