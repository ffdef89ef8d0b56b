"""Deterministic UIDs for derived objects.

A SEG or SR derived from a source series gets UIDs computed from (source series UID,
pipeline, model id, model version, output kind), so re-running or replaying a study gives
the same UIDs and a PACS stores one copy.
"""

from __future__ import annotations

from pydicom.uid import generate_uid

__all__ = ["DEFAULT_UID_ROOT", "derive_uid"]

#: pydicom's registered root for generated UIDs; sites should set their own in config.
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.8.498."


def derive_uid(*parts: str, root: str = DEFAULT_UID_ROOT) -> str:
    """Return a UID that depends only on ``parts`` and ``root``.

    Parameters
    ----------
    *parts
        Strings that identify the derived object, e.g. the source SeriesInstanceUID,
        the pipeline name, model id and version, and ``"seg.instance"``.
    root
        UID prefix ending in ``"."``.

    Returns
    -------
    str
        A valid UID (at most 64 characters).
    """
    if not parts:
        raise ValueError("'parts' must name at least one component")
    return str(generate_uid(prefix=root, entropy_srcs=["\x1f".join(parts)]))
