"""pynetdicom's two reactor loops, waiting instead of sleeping (installed by ``tuning.py``).

Copies of pynetdicom 3.0.4's ``DULServiceProvider.run_reactor`` and
``Association._run_reactor`` with their sleeps replaced by waits; every other line does
what upstream does, split into short functions. ``tuning.py`` installs them only when the
upstream source still hashes to what these were written against.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu import A_ABORT_RQ

__all__ = ["IDLE_WAIT_S", "ORIGINAL", "assoc_run_reactor", "dul_run_reactor", "kill_dul", "send_pdu"]

IDLE_WAIT_S = 0.02
#: upstream ``send_pdu`` and ``kill_dul`` (wrapped, not copied), filled in by ``tuning.install``
ORIGINAL: dict[str, Callable[..., Any]] = {}


# -- 1. the DUL reactor --------------------------------------------------------------------
class _Waker:
    """A self-pipe: other threads write a byte; the DUL's select returns."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def wake(self) -> None:
        try:
            os.write(self.w, b"\0")
        except OSError:  # pipe full (already awake) or closed (reactor gone)
            pass

    def wait(self, wrapper: Any, timeout: float) -> None:
        """Return when the socket is readable, on a wake-up, or after ``timeout``."""
        raw = getattr(wrapper, "socket", None)
        fds: list[Any] = [self.r]
        if raw is not None:
            if isinstance(raw, ssl.SSLSocket) and raw.pending():
                return
            if raw.fileno() >= 0:
                fds.append(raw)
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):  # socket closed under us: the loop notices (Evt17)
            return
        if self.r in ready:
            try:
                os.read(self.r, 4096)
            except OSError:
                pass

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


def dul_run_reactor(self: DULServiceProvider) -> None:
    """pynetdicom 3.0.4 ``run_reactor`` with the idle sleep replaced by a wait."""
    waker = _Waker()
    self._dn_waker = waker  # type: ignore[attr-defined]
    self._idle_timer.start()
    try:
        _dul_loop(self, waker)
    finally:
        self._dn_waker = None  # type: ignore[attr-defined]
        waker.close()
        _wake_user(self.assoc, ended=True)


def _dul_loop(self: DULServiceProvider, waker: _Waker) -> None:
    sleep = False
    while True:
        if not self.assoc._dul_ready.is_set():
            self.assoc._dul_ready.set()
            sleep = True
        if sleep:
            waker.wait(self.socket, IDLE_WAIT_S)
        if self._kill_thread:
            break
        if self.artim_timer.expired:
            self.event_queue.put("Evt18")
        if not _dul_transport_step(self):
            return
        try:
            event = self.event_queue.get(block=False)
        except queue.Empty:
            sleep = True
            continue
        _do_action(self, event)
        _wake_user(self.assoc)
        sleep = False


def _do_action(self: DULServiceProvider, event: str) -> None:
    """Run one state-machine event; an abort asked for while the connection is already
    closing (Evt15 in Sta13: e.g. a node stopping just as a peer released) is moot, and
    upstream would end the DUL thread with an exception for it."""
    try:
        self.state_machine.do_action(event)
    except InvalidEventError:
        if event != "Evt15" or self.state_machine.current_state != "Sta13":
            raise
        logging.getLogger(__name__).debug("A-ABORT while the connection is closing: ignored")


def _dul_transport_step(self: DULServiceProvider) -> bool:
    """One send-or-receive step, as upstream; ``False`` after an abort on an exception."""
    try:
        if self._process_recv_primitive():
            pass
        elif self._is_transport_event():
            self._idle_timer.restart()
        return True
    except Exception as exc:  # noqa: BLE001 - upstream's behaviour: abort the association
        logging.getLogger("pynetdicom").error("Exception in DUL.run(), aborting association")
        logging.getLogger("pynetdicom").exception(exc)
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        self.socket.send(abort_pdu.encode())  # type: ignore[union-attr]
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True
        return False


def send_pdu(self: DULServiceProvider, primitive: Any) -> None:
    ORIGINAL["send_pdu"](self, primitive)
    waker = getattr(self, "_dn_waker", None)
    if waker is not None:
        waker.wake()


def kill_dul(self: DULServiceProvider) -> None:
    ORIGINAL["kill_dul"](self)
    waker = getattr(self, "_dn_waker", None)
    if waker is not None:
        waker.wake()


# -- 2. the acceptor's association reactor ---------------------------------------------------
def _wake_user(assoc: Any, ended: bool = False) -> None:
    """After a DUL action: wake the association's reactor if it has something to do.

    Setting an ``Event`` takes its condition's lock; doing it after every PDU cost a fifth of
    the receive path's CPU, so it is done only when a queue the reactor reads is non-empty
    (or the DUL ended), and only if not already set. A requestor's reactor paused by a
    ``send_*()`` is not woken for the response that call waits for (two thread switches per
    C-STORE in ``replay``).
    """
    event = assoc.__dict__.get("_dn_user")
    if event is None or event.is_set():
        return
    if not ended and assoc.is_requestor and not assoc._reactor_checkpoint.is_set():
        return  # a send_*() paused it and takes its own response; resumed, it re-checks the queues
    if ended or not assoc.dimse.msg_queue.empty() or not assoc.dul.to_user_queue.empty():
        event.set()


def _wait_user(assoc: Any) -> None:
    """Wait until the DUL has handed the association something (or ``IDLE_WAIT_S``).

    The event is cleared before the queues are looked at, so a message queued after the
    look sets it again and the wait returns at once.
    """
    event = assoc.__dict__.setdefault("_dn_user", threading.Event())
    event.clear()
    if assoc.dimse.msg_queue.empty() and assoc.dul.to_user_queue.empty() and assoc.dul.is_alive():
        event.wait(IDLE_WAIT_S)


def assoc_run_reactor(self: Association) -> None:
    """pynetdicom 3.0.4 ``Association._run_reactor`` with its 1 ms sleep replaced by a wait."""
    self._is_paused = False
    while not self._kill:
        # Paused while waiting (it touches no queue), so a send_*() that pauses the
        # reactor goes ahead at once instead of spinning until the wait ends.
        self._is_paused = True
        _wait_user(self)
        self._reactor_checkpoint.wait()
        self._is_paused = False
        if not self._reactor_checkpoint.is_set():
            # A send_*() paused us after the wait above returned, and may have seen the
            # stale _is_paused; its response is its own: do not take it off the queue.
            # (Upstream has the same window, only shorter: it lost responses under load.)
            continue
        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, int(context_id))  # type: ignore[arg-type]
        if _assoc_ended(self):
            return


def _assoc_ended(self: Association) -> bool:
    """Release, abort, DUL death and network timeout, exactly as upstream checks them."""
    plog = logging.getLogger("pynetdicom.assoc")
    if self.is_established and self.acse.is_release_requested():
        self.acse.send_release(is_response=True)
        plog.info("Association Released")
        self.is_released, self.is_established = True, False
        evt.trigger(self, evt.EVT_RELEASED, {})
        self.kill()
        return True
    if self.acse.is_aborted():
        plog.info("Association Aborted" + (" (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else ""))
        self.dul.receive_pdu(wait=False)
        self.is_aborted, self.is_established = True, False
        evt.trigger(self, evt.EVT_ABORTED, {})
        self.kill()
        return True
    if not self.dul.is_alive():
        self.kill()
        return True
    if self.dul.idle_timer_expired():
        plog.error("Network timeout reached")
        _on_network_timeout(self)
        return True
    return False


def _on_network_timeout(self: Association) -> None:
    if self.network_timeout_response == "A-RELEASE":
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self.release()
        self._is_paused = False
    else:
        self.abort()
    self.kill()
