"""Independent validation of output files with dicom3tools ``dciodvfy``.

Known false positives of the 2022 Debian dciodvfy (it predates LABELMAP and TILED_FULL
SEG; see shared reference DICOM-OUTPUTS.md §3.1) can be allowed by substring.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from dicomnode.errors import OutputError

__all__ = ["dciodvfy_errors", "dciodvfy_available"]


def dciodvfy_available() -> bool:
    """Whether the ``dciodvfy`` binary (Debian ``dicom3tools``) is on PATH."""
    return shutil.which("dciodvfy") is not None


def dciodvfy_errors(path: Path, allow: Iterable[str] = ()) -> list[str]:
    """Run ``dciodvfy -new`` on ``path`` and return its ``Error`` lines.

    Parameters
    ----------
    path
        DICOM file to check.
    allow
        Substrings of error lines to ignore (documented tool limitations only).

    Raises
    ------
    OutputError
        ``dciodvfy`` is not installed.
    """
    exe = shutil.which("dciodvfy")
    if exe is None:
        raise OutputError("dciodvfy not found: install Debian package 'dicom3tools' (make deps)")
    proc = subprocess.run([exe, "-new", str(path)], capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    allowed = tuple(allow)
    return [ln for ln in lines if ln.startswith("Error") and not any(a in ln for a in allowed)]
