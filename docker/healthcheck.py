"""Container HEALTHCHECK for dicomnode: exit 0 when the node's /healthz answers 200.

The HTTP port comes from ``DICOMNODE_HTTP__PORT``, else ``http.port`` in the config file
(``DICOMNODE_CONFIG``, default /config/dicomnode.yaml), else 8080. With the HTTP server
disabled (port 0) it falls back to a TCP connect to the DICOM port. Standard library and
PyYAML only, so it stays cheap enough to run every 30 s.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from typing import Any


def _config() -> dict[str, Any]:
    path = os.environ.get("DICOMNODE_CONFIG", "/config/dicomnode.yaml")
    try:
        import yaml

        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ImportError, ValueError):
        return {}


def _setting(cfg: dict[str, Any], section: str, key: str, default: int) -> int:
    env = os.environ.get(f"DICOMNODE_{section.upper()}__{key.upper()}")
    if env is not None:
        return int(env)
    value = (cfg.get(section) or {}).get(key, default)
    return int(value)


def main() -> int:
    """Probe the node; return the process exit status for HEALTHCHECK."""
    cfg = _config()
    http_port = _setting(cfg, "http", "port", 8080)
    try:
        if http_port:
            url = f"http://127.0.0.1:{http_port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (fixed URL)
                ok = resp.status == 200
                print(f"{url}: {resp.status}")
                return 0 if ok else 1
        dicom_port = _setting(cfg, "node", "port", 11112)
        with socket.create_connection(("127.0.0.1", dicom_port), timeout=5):
            print(f"tcp 127.0.0.1:{dicom_port}: open")
            return 0
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
