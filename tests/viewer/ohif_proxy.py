"""One loopback origin for the browser: the prebuilt OHIF dist at ``/``, our
``app-config.js``, and a reverse proxy of ``/dicom-web`` and ``/wado`` to Orthanc.

The OHIF npm dist is built with ``PUBLIC_URL="/"``, so it must be served at the root
(DICOM-OUTPUTS.md §4.1). The browser's ``Host`` header is forwarded so that the Orthanc
DICOMweb plugin writes BulkDataURIs that point back at this origin, not at Orthanc's port.
"""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

_FORWARD = ("accept", "content-type", "host")
_PROXIED = ("/dicom-web", "/wado")


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "application/javascript", ".mjs": "application/javascript",
        ".wasm": "application/wasm", ".json": "application/json", ".css": "text/css",
    }

    def __init__(self, *args, dist: Path, config: Path, upstream: str, **kwargs) -> None:  # noqa: ANN002,ANN003
        self.dist, self.config, self.upstream = dist, config, upstream
        super().__init__(*args, directory=str(dist), **kwargs)

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length", 0) or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARD}
        request = urllib.request.Request(self.upstream + self.path, data=body, method=self.command,
                                         headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=120)
            code = response.status
        except urllib.error.HTTPError as err:
            response, code = err, err.code
        data = response.read()
        self.send_response(code)
        content_type = response.headers.get("Content-Type")
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_bytes(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path.startswith(_PROXIED):
            return self._proxy()
        if path == "/app-config.js":
            return self._send_bytes(self.config.read_bytes(), "application/javascript")
        if path == "/" or not (self.dist / path.lstrip("/")).is_file():  # SPA routes
            self.path = "/index.html"
        return super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        return self._proxy()


class ViewerServer:
    """ThreadingHTTPServer on 127.0.0.1 (free port) in a daemon thread."""

    def __init__(self, dist: Path, config: Path, upstream: str, port: int = 0) -> None:
        handler = partial(_Handler, dist=dist, config=config, upstream=upstream)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> ViewerServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
