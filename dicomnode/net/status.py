"""Named DIMSE status codes used by dicomnode (PS3.4 Annex B, PS3.7 Annex C)."""

from __future__ import annotations

__all__ = [
    "CANNOT_UNDERSTAND", "DATASET_MISMATCH", "OUT_OF_RESOURCES", "PROCESSING_FAILURE",
    "SOP_CLASS_NOT_SUPPORTED", "SUCCESS", "describe",
]

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # Refused: out of resources (disk watermark, write failed)
DATASET_MISMATCH = 0xA900  # Error: data set does not match SOP class (required UID missing)
CANNOT_UNDERSTAND = 0xC210  # Error: cannot understand (unparseable, truncated)
SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused: SOP class not supported by this node's config
PROCESSING_FAILURE = 0x0110

_TEXT = {
    SUCCESS: "Success",
    OUT_OF_RESOURCES: "Refused: Out of Resources",
    DATASET_MISMATCH: "Error: Data Set does not match SOP Class",
    CANNOT_UNDERSTAND: "Error: Cannot understand",
    SOP_CLASS_NOT_SUPPORTED: "Refused: SOP Class not supported",
    PROCESSING_FAILURE: "Failure: Processing failure",
}


def describe(status: int) -> str:
    """``0xA700 Refused: Out of Resources`` style text for a status code."""
    text = _TEXT.get(status)
    if text is None:
        family = {0xA: "Refused/Error", 0xB: "Warning", 0xC: "Error"}.get(status >> 12, "Status")
        text = family
    return f"0x{status:04X} {text}"
