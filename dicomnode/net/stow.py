"""DICOMweb STOW-RS sender (multipart/related; type="application/dicom")."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

from dicomnode.config import Destination
from dicomnode.errors import DispatchError

__all__ = ["stow_files"]


def stow_files(dest: Destination, files: Sequence[Path]) -> int:
    """POST ``files`` to ``dest.url`` in one STOW-RS request; return the number sent.

    Raises
    ------
    DispatchError
        Connection failure or any HTTP status other than 200/202.
    """
    boundary = f"dicomnode-{uuid.uuid4().hex}"
    parts = []
    for path in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        parts.append(path.read_bytes())
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(dest.url, data=b"".join(parts), method="POST", headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    try:
        with urllib.request.urlopen(request, timeout=dest.timeout_s) as response:
            code = response.status
    except urllib.error.HTTPError as exc:
        raise DispatchError(f"STOW-RS {dest.url} answered HTTP {exc.code}", destination=dest.name,
                            status=exc.code) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DispatchError(f"STOW-RS {dest.url} unreachable: {exc}", destination=dest.name) from exc
    if code not in (200, 202):
        raise DispatchError(f"STOW-RS {dest.url} answered HTTP {code}", destination=dest.name, status=code)
    return len(files)
