"""Benchmarks run by ``make bench``; each script writes its figures with :func:`save_results`."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(name: str, rows: object) -> Path:
    """Write ``rows`` to ``bench/results/<name>.json`` (gitignored) and return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_echo(port: int, called: str, timeout_s: float = 60.0) -> None:
    """Wait until a C-ECHO to ``called`` on 127.0.0.1:``port`` succeeds."""
    from dicomnode.net.scu import echo

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if echo("127.0.0.1", port, called=called, timeout_s=2) == 0:
                return
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.2)
    raise RuntimeError(f"receiver on port {port} did not answer C-ECHO within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within a minute."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
