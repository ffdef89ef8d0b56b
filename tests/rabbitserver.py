"""A private RabbitMQ broker (Debian ``rabbitmq-server``) for tests: loopback ports, own data dir.

:class:`RabbitServer` runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` with its Mnesia
database, logs, Erlang cookie (``HOME``), config and PID file in a fresh temp directory,
listening on 127.0.0.1 only (AMQP, its own epmd and distribution ports) on free ports: never
the system service. It is stopped with ``rabbitmqctl stop`` (and its PID killed if that fails), and
can be stopped and started again on the same data (the outage tests). It runs inside the
test network namespace like everything else that listens.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from netutil import free_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
#: consumer_timeout above the longest test job (the docs say: above worker.job_timeout_s)
CONFIG = "loopback_users = none\nconsumer_timeout = 3600000\nlog.console = false\n"


class RabbitServer:
    """One private broker; :attr:`url` is its ``amqp://`` URL (guest over loopback)."""

    def __init__(self, root: Path) -> None:
        assert (RABBIT_BIN / "rabbitmq-server").exists(), \
            "RabbitMQ is not installed (no /usr/lib/rabbitmq/bin/rabbitmq-server): run `make deps`"
        self.root, self.port = root, free_port()
        self.node = f"dn{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (root / "home").mkdir(parents=True, exist_ok=True)
        (root / "rabbitmq.conf").write_text(CONFIG)
        (root / "enabled_plugins").write_text("[].\n")
        self.env = {**os.environ, "HOME": str(root / "home"), "RABBITMQ_NODENAME": self.node,
                    "RABBITMQ_MNESIA_BASE": str(root / "mnesia"), "RABBITMQ_LOG_BASE": str(root / "log"),
                    "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_DIST_PORT": str(free_port()), "ERL_EPMD_PORT": str(free_port()),
                    "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
                    "RABBITMQ_PID_FILE": str(root / "rabbit.pid"),
                    # Erlang's port mapper and distribution port: loopback only as well
                    "ERL_EPMD_ADDRESS": "127.0.0.1",
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"}
        self.proc: subprocess.Popen[bytes] | None = None

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        with (self.root / "server.out").open("ab") as out:
            self.proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env, stdout=out,
                                         stderr=out, start_new_session=True)
        deadline = time.monotonic() + 90
        while self.ctl("await_startup", "--timeout", "5", timeout=30).returncode != 0:
            assert self.proc.poll() is None, (self.root / "server.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "rabbitmq-server did not start in 90 s"
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.ctl("stop", timeout=60).returncode != 0 or self._wait(30) is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        # epmd (started by the first node) outlives the broker: end it with the server
        subprocess.run(["epmd", "-port", self.env["ERL_EPMD_PORT"], "-kill"], capture_output=True, env=self.env)

    def _wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def queue_lengths(self) -> dict[str, int]:
        listed = self.ctl("list_queues", "name", "messages", "--quiet", "--no-table-headers").stdout
        return {name: int(n) for name, n in (line.split() for line in listed.splitlines() if line.strip())}


@contextmanager
def rabbit_server() -> Iterator[RabbitServer]:
    """A started private broker, stopped (and its directory removed) afterwards."""
    root = Path(tempfile.mkdtemp(prefix="dicomnode-rabbit-"))
    server = RabbitServer(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
