"""Rules every output object follows (equipment, wording, series numbers)."""

from __future__ import annotations

from dicomnode.inference.manifest import ModelBundle

__all__ = [
    "MANUFACTURER",
    "NOT_FOR_CLINICAL_USE",
    "SOFTWARE_VERSION",
    "TYPE2_PATIENT_STUDY",
    "series_description",
]

MANUFACTURER = "dicomnode"
SOFTWARE_VERSION = "0.1.0"
NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE"
#: Type 2 Patient/Study attributes every output copies from its source; some sources leave
#: them out, and an empty value is what the standard asks for when unknown.
TYPE2_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


def series_description(bundle: ModelBundle, what: str) -> str:
    """SeriesDescription for an output: ``what`` + model id, flagged when not clinical.

    Truncated to the 64 characters a LO value allows.
    """
    text = f"{what} {bundle.id} {bundle.version}"
    if bundle.not_for_clinical_use:
        text = f"{text} - {NOT_FOR_CLINICAL_USE}"
    return text[:64]
