"""Rules every output object follows (equipment, wording, series numbers)."""

from __future__ import annotations

from dicomnode.inference.manifest import ModelBundle

__all__ = [
    "MANUFACTURER",
    "NOT_FOR_CLINICAL_USE",
    "SOFTWARE_VERSION",
    "series_description",
]

MANUFACTURER = "dicomnode"
SOFTWARE_VERSION = "0.1.0"
NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE"


def series_description(bundle: ModelBundle, what: str) -> str:
    """SeriesDescription for an output: ``what`` + model id, flagged when not clinical.

    Truncated to the 64 characters a LO value allows.
    """
    text = f"{what} {bundle.id} {bundle.version}"
    if bundle.not_for_clinical_use:
        text = f"{text} - {NOT_FOR_CLINICAL_USE}"
    return text[:64]
