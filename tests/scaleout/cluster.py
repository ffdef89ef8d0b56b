"""A scale-out deployment on one machine for tests: each role a real ``dicomnode serve --role``
process, on a private PostgreSQL (tests/pgserver.py) and RabbitMQ (tests/rabbitserver.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from netutil import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"


class Role:
    """One ``dicomnode serve --role R`` process with its own DICOM and HTTP ports and log."""

    def __init__(self, config: Path, role: str, name: str, logs: Path, *extra: str) -> None:
        self.config, self.role, self.name, self.extra = config, role, name, extra
        self.log = logs / f"{name}.log"
        self.port, self.http_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Role:
        env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{REPO}", "DICOMNODE_HTTP__PORT": str(self.http_port)}
        argv = [sys.executable, "-m", "dicomnode", "serve", "--config", str(self.config), "--role", self.role,
                "--port", str(self.port), "--drain-timeout", "5", *self.extra]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, cwd=REPO)
        if wait:
            wait_for(self.healthy, timeout=90)
        return self

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=10) as rsp:
                return rsp.status, json.loads(rsp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited:\n{self.tail()}"
        try:
            return self.health()[0] == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as rsp:
            return str(rsp.read().decode())

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def scale_config(base: Path, *, broker_url: str, database_url: str, **executor: Any) -> Path:
    """The node config at ``base`` turned into a scale-out config (executor.kind celery)."""
    data = yaml.safe_load(base.read_text())
    data["executor"] = {"kind": "celery", "broker_url": broker_url, "database_url": database_url,
                        "claim_interval_s": 0.3, "queues": {"plumbing:create": "mri"}, **executor}
    path = base.with_name("scale.yaml")
    path.write_text(yaml.safe_dump(data))
    return path
