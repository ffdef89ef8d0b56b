"""DICOMweb STOW-RS sender (multipart/related; type="application/dicom").

PS3.18 §10.5.3: 200 means every instance was stored; 202 means some were stored and the
response's Failed SOP Sequence (0008,1198) lists the others; 4xx/5xx mean none was.
A 202 with failures is a failed delivery (the dispatcher retries the whole request;
deterministic UIDs make the repeats harmless).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicomnode.config import Destination
from dicomnode.errors import DispatchError

__all__ = ["stow_files"]

_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"


def _body(files: Sequence[Path], boundary: str) -> bytes:
    parts = []
    for path in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        parts.append(path.read_bytes())
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def _failed_instances(payload: bytes) -> list[str]:
    """``UID (reason 0xNNNN)`` for each item of the response's Failed SOP Sequence."""
    try:
        answer: Any = json.loads(payload or b"{}")
    except ValueError:
        return ["(unreadable STOW-RS response)"]
    if not isinstance(answer, dict):
        return ["(unexpected STOW-RS response)"]
    items = (answer.get(_FAILED_SOP_SEQUENCE) or {}).get("Value") or []
    failed = []
    for item in items:
        uid = ((item.get(_REFERENCED_SOP_INSTANCE_UID) or {}).get("Value") or ["?"])[0]
        reason = ((item.get(_FAILURE_REASON) or {}).get("Value") or [None])[0]
        failed.append(f"{uid} (reason 0x{int(reason):04X})" if reason is not None else str(uid))
    return failed


def stow_files(dest: Destination, files: Sequence[Path]) -> int:
    """POST ``files`` to ``dest.url`` in one STOW-RS request; return the number sent.

    Raises
    ------
    DispatchError
        Connection failure, an HTTP status other than 200/202, or a 202 whose
        Failed SOP Sequence names instances that were not stored.
    """
    boundary = f"dicomnode-{uuid.uuid4().hex}"
    request = urllib.request.Request(dest.url, data=_body(files, boundary), method="POST", headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    try:
        with urllib.request.urlopen(request, timeout=dest.timeout_s) as response:
            code, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        code, payload = exc.code, b""
    except (urllib.error.URLError, OSError) as exc:
        raise DispatchError(f"STOW-RS {dest.url} unreachable: {exc}", destination=dest.name) from exc
    if code not in (200, 202):
        raise DispatchError(f"STOW-RS {dest.url} answered HTTP {code}", destination=dest.name, status=code)
    failed = _failed_instances(payload) if code == 202 else []
    if failed:
        raise DispatchError(f"STOW-RS {dest.url} answered HTTP 202 but did not store {len(failed)} of "
                            f"{len(files)} instances: {', '.join(failed)}", destination=dest.name, status=code)
    return len(files)
