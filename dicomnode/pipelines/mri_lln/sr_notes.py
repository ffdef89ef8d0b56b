"""The guard's word in the mri-lln SR: what was measured on the input and its flags.

A TID 1500 "Qualitative Evaluations" container (UMLS C0034375) of TEXT comments at the end
of the report: one line with the input's measures (tilt, spacing, coverage, field of view,
intensity against the training data) and one per out-of-distribution flag. The viewer SR
leaves it out (it keeps only what OHIF can draw).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

__all__ = ["NOTES_CODE", "input_notes", "is_notes", "notes_container"]

NOTES_CODE = "C0034375"  # UMLS "Qualitative Evaluations" (TID 1500 row 12)


def input_notes(guard: Mapping[str, Any], model: str) -> list[str]:
    """The SR's lines for a guard report (``findings.json``'s ``input``)."""
    m = guard.get("measures") or {}
    if not m:
        return []
    spacing, intensity = m.get("spacing_mm", {}), m.get("intensity", {})
    z = intensity.get("z")
    line = (f"Input checked against the requirements of {model}: accepted. Tilt {m.get('tilt_deg')}°; "
            f"spacing {spacing.get('slice')} × {spacing.get('row')} × {spacing.get('column')} mm; "
            f"{m.get('slices')} slices, {m.get('coverage_mm')} mm; FOV {' × '.join(map(str, m.get('fov_mm', [])))} mm; "
            f"body intensity median {intensity.get('median')}"
            + (f" ({z:+g} SD from the training foreground mean)." if z is not None else "."))
    return [line, *(f"Input flag (outside the training distribution, analysed anyway): {f}"
                    for f in guard.get("flags") or [])]


def notes_container(notes: Sequence[str]) -> Dataset:
    """The Qualitative Evaluations container holding ``notes`` as TEXT comments."""
    import highdicom as hd

    container = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept(NOTES_CODE, "UMLS", "Qualitative Evaluations"),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence([
        hd.sr.TextContentItem(name=hd.sr.CodedConcept("121106", "DCM", "Comment"), value=note[:1024],
                              relationship_type=hd.sr.RelationshipTypeValues.CONTAINS) for note in notes])
    return container


def is_notes(item: Dataset) -> bool:
    """Whether a content item is the notes container."""
    names = item.get("ConceptNameCodeSequence")
    return item.get("ValueType") == "CONTAINER" and bool(names) and str(names[0].CodeValue) == NOTES_CODE
