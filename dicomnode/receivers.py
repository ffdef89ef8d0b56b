"""More receiver processes on the node's one port: ``node.receivers: N`` (``SO_REUSEPORT``).

One Python process receives at most about one core's worth of DICOM (the GIL). With
``node.receivers: N`` the node starts N-1 ``spawn``-ed receiver processes; each runs its own
:class:`~dicomnode.net.scp.StorageSCP` on the same address and port, and the kernel spreads
new associations over the N listening sockets (by a hash of the peer's address and port,
so a handful of associations can land unevenly).

A receiver child does only what the C-STORE handler does in the node: it spools the
instance durably and answers. It then tells the node over a pipe (``("stored", info,
headers, new)``) and the node's assembler takes it from there, exactly as for its own
associations; metric increments travel the same way. The spool stays consistent because
every write into or move of an incoming series takes the spool's series lock, which with
receivers is also a cross-process ``flock`` (:meth:`dicomnode.spool.Spool.series_lock`).

A child that dies is logged and restarted by :meth:`ReceiverPool.check` (the node's
ticker); associations it had open are lost like any broken connection (nothing they had
acknowledged is). A node that dies takes its children with it: they exit when the pipe
closes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from dicomnode.config import Config
from dicomnode.errors import DicomNodeError
from dicomnode.log import configure_logging
from dicomnode.metrics import Metrics
from dicomnode.net.scp import StorageSCP, StoredInstance
from dicomnode.spool import Spool

__all__ = ["ReceiverPool"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0


class _PipeMetrics(Metrics):
    """A receiver child's counters, sent to the node instead of kept."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        super().__init__()
        self._send = send

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._send(("inc", name, amount, labels))


def _child_main(config: Config, index: int, conn: Connection) -> None:
    """A receiver process: listen on the node's port until told to stop (or the node dies)."""
    configure_logging(config.log.format, config.log.level)
    lock = threading.Lock()

    def send(message: Any) -> None:
        with lock:  # association threads share the pipe
            conn.send(message)

    spool = Spool(config.spool.path, config.spool.sync, shared=True)
    scp = StorageSCP(config, spool, _PipeMetrics(send),
                     lambda s: send(("stored", s.info, s.headers, s.new)), reuse_port=True)
    send(("listening", scp.start(), os.getpid()))
    try:
        conn.recv()  # "stop"
    except (EOFError, OSError):
        log.warning("receiver %d: the node went away; stopping", index)
    scp.stop()


class ReceiverPool:
    """The node's extra receiver processes.

    Parameters
    ----------
    config
        The node's configuration (``node.receivers`` of them, the node being the first).
    metrics
        The node's counters; the children's increments are added with ``receiver="N"``.
    on_stored
        The node's entry point for a durable instance (called from a reader thread).
    """

    def __init__(self, config: Config, metrics: Metrics, on_stored: Callable[[StoredInstance], None]) -> None:
        self.config, self.metrics, self.on_stored = config, metrics, on_stored
        self._ctx = multiprocessing.get_context("spawn")
        self._children: dict[int, tuple[Any, Connection]] = {}
        self._stopping = False
        self._config = config

    def start(self, port: int) -> None:
        """Start the children on ``port`` (the node's bound port, also when configured as 0)."""
        # routes hold compiled matchers (not picklable) and a receiver never routes
        self._config = replace(self.config, node=replace(self.config.node, port=port), routes=())
        for index in range(1, self.config.node.receivers):
            self._start_child(index)

    def _start_child(self, index: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_child_main, args=(self._config, index, child),
                                 name=f"dicomnode-receiver-{index}", daemon=True)
        proc.start()
        child.close()
        if not parent.poll(START_TIMEOUT_S):
            proc.kill()
            raise DicomNodeError(f"receiver {index} did not start listening within {START_TIMEOUT_S:.0f} s")
        kind, port, pid = parent.recv()
        log.info("receiver %d (pid %d) listening on port %d", index, pid, port)
        self._children[index] = (proc, parent)
        threading.Thread(target=self._read, args=(index, parent), name=f"receiver-{index}-pipe",
                         daemon=True).start()

    def _read(self, index: int, conn: Connection) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "stored":
                _, info, headers, new = message
                self.on_stored(StoredInstance(info, headers, new))
            elif message[0] == "inc":
                _, name, amount, labels = message
                self.metrics.inc(name, amount, **{**labels, "receiver": str(index)})

    def check(self) -> None:
        """Restart a child that died (called by the node's ticker)."""
        for index, (proc, _) in list(self._children.items()):
            if not proc.is_alive() and not self._stopping:
                log.error("receiver %d (pid %s) exited with %s; starting it again", index, proc.pid, proc.exitcode)
                self.metrics.inc("dicomnode_receiver_restarts_total")
                self._start_child(index)

    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self._children.values()]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Tell every child to stop (its open associations are aborted) and wait."""
        self._stopping = True
        for _, conn in self._children.values():
            try:
                conn.send("stop")
            except OSError:
                pass
        for proc, _ in self._children.values():
            proc.join(timeout_s)
            if proc.is_alive():
                proc.kill()
