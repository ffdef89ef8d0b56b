"""The "not analysed" report: an Enhanced SR telling the reader the AI did not look.

When a pipeline's guard refuses a series (it is outside the model's requirements), the
route's destinations get this small SR in the series' study instead of silence: the
model (id and version), that the series was *not analysed*, each failed requirement
(found / expected) and, for a non-clinical model, "NOT FOR CLINICAL USE". The content is
plain TEXT items under one container (Enhanced SR, no measurement template), so every
SR viewer shows it; it references the refused series' instances as evidence.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING

from pydicom import Dataset
from pydicom.sr.coding import Code

from dicomnode.errors import OutputError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.common import (
    MANUFACTURER,
    NOT_FOR_CLINICAL_USE,
    TYPE2_PATIENT_STUDY,
    read_back,
    series_description,
)

if TYPE_CHECKING:
    import highdicom as hd

__all__ = ["NOT_ANALYSED_SERIES_NUMBER", "build_not_analysed_sr"]

#: Series number of the "not analysed" SR (the analysed outputs use 901–903).
NOT_ANALYSED_SERIES_NUMBER = 909
_TITLE = Code("18748-4", "LN", "Diagnostic imaging report")
_FINDING = Code("121071", "DCM", "Finding")
_COMMENT = Code("121106", "DCM", "Comment")


def _texts(bundle: ModelBundle, reasons: Sequence[str]) -> list[hd.sr.TextContentItem]:
    import highdicom as hd

    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items = [hd.sr.TextContentItem(
        name=_FINDING, relationship_type=contains,
        value=f"NOT ANALYSED: this series was not analysed by model {bundle.id} {bundle.version}; "
              "it is outside the inputs the model was made for. No findings were produced.")]
    items += [hd.sr.TextContentItem(name=_COMMENT, relationship_type=contains, value=f"Not analysed because {r}")
              for r in reasons]
    if bundle.not_for_clinical_use:
        items.append(hd.sr.TextContentItem(name=_COMMENT, relationship_type=contains, value=NOT_FOR_CLINICAL_USE))
    return items


def _evidence(sources: Sequence[Dataset]) -> list[Dataset]:
    """The sources' identifying headers, with the Type 2 patient/study attributes some
    sources leave out present and empty (highdicom copies them from the first)."""
    out = []
    for ds in sources:
        ref = Dataset()
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                        *TYPE2_PATIENT_STUDY):
            setattr(ref, keyword, ds.get(keyword, ""))
        out.append(ref)
    return out


def build_not_analysed_sr(sources: Sequence[Dataset], bundle: ModelBundle, reasons: Sequence[str],
                          uid: dict[str, str], *, encoded: MutableMapping[str, bytes] | None = None) -> Dataset:
    """Build and read back the "not analysed" SR for a refused series.

    Parameters
    ----------
    sources
        The refused series' instances (headers suffice): evidence, patient and study.
    bundle
        The model that did not look.
    reasons
        Each failed requirement (``"plane: found 88° from axial, expected ≤ 20°"``).
    uid
        Deterministic UIDs: ``series``, ``instance`` and ``device`` (the observer).
    encoded
        Where to keep the checked Part-10 bytes (by SOP Instance UID) for writing.

    Raises
    ------
    OutputError
        The SR cannot be built or does not read back.
    """
    import highdicom as hd

    device = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uid["device"], name=bundle.id[:64], manufacturer_name=MANUFACTURER,
            model_name=f"{bundle.id} {bundle.version}"[:64]))
    try:
        root = hd.sr.ContainerContentItem(name=_TITLE)
        root.ContentSequence = hd.sr.ContentSequence(
            [*hd.sr.ObservationContext(observer_device_context=device), *_texts(bundle, reasons)])
        sr = hd.sr.EnhancedSR(
            evidence=_evidence(sources), content=root, series_instance_uid=uid["series"],
            series_number=NOT_ANALYSED_SERIES_NUMBER, sop_instance_uid=uid["instance"], instance_number=1,
            manufacturer=MANUFACTURER, series_description=series_description(bundle, "NOT ANALYSED"),
            is_complete=True, is_final=False, is_verified=False)
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(f"not-analysed SR could not be built: {exc}") from exc
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the reasons say "≤ 20°"
    parsed = read_back(sr, "not-analysed SR", encoded)
    texts = [str(item.TextValue) for item in parsed.ContentSequence
             if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue in ("121071", "121106")]
    if not texts or not texts[0].startswith("NOT ANALYSED") or len(texts) < 1 + len(reasons):
        raise OutputError(f"not-analysed SR read back without its statement and reasons: {texts}")
    return sr
