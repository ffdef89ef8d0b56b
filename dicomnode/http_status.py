"""Local HTTP endpoints: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["StatusServer"]

log = logging.getLogger(__name__)


class StatusServer:
    """Serves health and metrics from callables, in a daemon thread.

    Parameters
    ----------
    host, port
        Bind address; port 0 picks a free port (see :attr:`port`).
    health
        Returns ``(ok, details)``; ``/healthz`` answers 200 when ok else 503.
    metrics
        Returns the Prometheus exposition text.
    """

    def __init__(self, host: str, port: int, health: Callable[[], tuple[bool, dict[str, Any]]],
                 metrics: Callable[[], str]) -> None:
        handler = _handler(health, metrics)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("health and metrics on http://%s:%d/healthz and /metrics",
                 self.httpd.server_address[0], self.port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(health: Callable[[], tuple[bool, dict[str, Any]]], metrics: Callable[[], str]) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path.split("?")[0] == "/healthz":
                ok, details = health()
                self._reply(200 if ok else 503, "application/json", json.dumps(details).encode())
            elif self.path.split("?")[0] == "/metrics":
                self._reply(200, "text/plain; version=0.0.4", metrics().encode())
            else:
                self._reply(404, "text/plain", b"not found: try /healthz or /metrics\n")

        def _reply(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet access log
            log.debug("http %s", format % args)

    return Handler
