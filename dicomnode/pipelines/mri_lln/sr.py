"""MR lateral-lymph-node findings → TID 1500 Measurement Report (Comprehensive 3D SR).

The report's measurement groups (per node one volumetric and two planar groups, and a
summary group with the patient-level status) are built in :mod:`.sr_content`; here they
become the SR document, which is read back before it is returned (strict on output), and
its companion for viewers (:func:`build_viewer_sr`). A series without nodes
gets only the summary (no lymph nodes detected, status negative) and no SEG is referenced.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING

from pydicom import Dataset
from pydicom.sr.codedict import codes

from dicomnode.dicom.volume import Volume
from dicomnode.errors import OutputError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.common import MANUFACTURER, read_back, series_description
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln.findings import LlnFindings
from dicomnode.pipelines.mri_lln.seg import source_images
from dicomnode.pipelines.mri_lln.sr_content import (
    axes_statement,
    measurement_groups,
    observation_context,
    viewer_groups,
)
from dicomnode.pipelines.mri_lln.sr_notes import is_notes, notes_container

if TYPE_CHECKING:
    import highdicom as hd

__all__ = ["SR_SERIES_NUMBER", "VIEWER_SR_SERIES_NUMBER", "build_sr", "build_viewer_sr"]

logger = logging.getLogger(__name__)

SR_SERIES_NUMBER = 902
#: The companion SR for viewers (OHIF 3.13 crashes on any measurement group
#: without image coordinates: volumetric groups and the summary group alike).
VIEWER_SR_SERIES_NUMBER = 903


def _code(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else ""


def _group_counts(sr: Dataset) -> tuple[int, int, int]:
    """(volumetric, planar, other) TID 1500 measurement groups of an encoded-and-parsed SR."""
    counts = [0, 0, 0]
    for container in sr.ContentSequence:
        if container.ValueType != "CONTAINER" or _code(container) != "126010":  # Imaging Measurements
            continue
        for group in container.get("ContentSequence", []):
            if group.ValueType != "CONTAINER" or _code(group) != "125007":  # Measurement Group
                continue
            items = group.get("ContentSequence", [])
            if any(it.ValueType in ("SCOORD", "SCOORD3D") for it in items):
                counts[1] += 1
            elif any(it.ValueType == "IMAGE" and _code(it) == "121191" for it in items):  # Referenced Segment
                counts[0] += 1
            else:
                counts[2] += 1
    return counts[0], counts[1], counts[2]


def _check_readback(
    sr: Dataset, findings: LlnFindings, viewer: bool = False, store: MutableMapping[str, bytes] | None = None
) -> None:
    """Encode once, parse back (:func:`~dicomnode.outputs.common.read_back`) and count the
    groups by their TID 1500 structure.

    (A full highdicom ``srread`` of a 20-node SR took 3.5 s in the pipeline; the tests do
    that deeper read-back, with dcmqi too.) The bytes go to ``store`` for writing.
    """
    parsed = read_back(sr, "viewer SR" if viewer else "SR", store)
    n = len(findings.nodes)
    if viewer:  # one or two groups per node, each axis once, a caption in every group
        groups, inferred, other = _viewer_counts(parsed)
        if not (n <= groups <= 2 * n and inferred == 2 * n and other == 0):
            raise OutputError(f"viewer SR read-back has {groups} node groups with {inferred} axis polylines and "
                              f"{other} other groups, expected {n}-{2 * n} groups with {2 * n} polylines")
        return
    counts = _group_counts(parsed)
    expected = (n, 2 * n, 1)
    if counts != expected:
        raise OutputError(f"SR read-back has (volumetric, planar, summary) groups {counts}, expected {expected}")


def _is_planar_group(item: Dataset) -> bool:
    return any(it.ValueType in ("SCOORD", "SCOORD3D") for it in item.get("ContentSequence", []))


def _viewer_item(item: Dataset, findings: LlnFindings, ctx: PipelineContext, bundle: ModelBundle) -> Dataset:
    """``item`` itself, or for the Imaging Measurements container a copy with the viewer groups."""
    if item.ValueType != "CONTAINER" or _code(item) != "126010":
        return item
    container = Dataset()
    for elem in item:
        if elem.keyword != "ContentSequence":
            container.add(elem)
    planar = [g for g in item.ContentSequence if _is_planar_group(g)]
    container.ContentSequence = viewer_groups(planar, findings, (ctx, bundle))
    return container


def _viewer_counts(sr: Dataset) -> tuple[int, int, int]:
    """(groups, NUMs with an INFERRED FROM SCOORD, other groups) of a parsed viewer SR."""
    groups = inferred = other = 0
    for container in sr.ContentSequence:
        if container.ValueType != "CONTAINER" or _code(container) != "126010":
            continue
        for group in container.get("ContentSequence", []):
            items = group.get("ContentSequence", [])
            nums = [it for it in items if it.ValueType == "NUM" and any(
                c.ValueType == "SCOORD" and c.RelationshipType == "INFERRED FROM"
                for c in it.get("ContentSequence", []))]
            comments = [it for it in items if it.ValueType == "TEXT" and _code(it) == "121106"]
            if nums and comments and not _is_planar_group(group):
                groups, inferred = groups + 1, inferred + len(nums)
            else:
                other += 1
    return groups, inferred, other


def build_sr(
    volume: Volume,
    findings: LlnFindings,
    bundle: ModelBundle,
    ctx: PipelineContext,
    source_datasets: Sequence[Dataset],
    seg: Dataset | None,
    *,
    encoded: MutableMapping[str, bytes] | None = None,
    notes: Sequence[str] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build and verify the TID 1500 Comprehensive 3D SR.

    Parameters
    ----------
    volume
        Source volume (maps a slice index to its instance and frame).
    findings
        Nodes and patient status.
    bundle, ctx
        Model bundle and job context (deterministic UIDs).
    source_datasets
        The series' instances; all are recorded as evidence.
    seg
        The SEG from :func:`dicomnode.pipelines.mri_lln.seg.build_seg` (``None`` without nodes).
    encoded
        Where to keep the checked SR's Part-10 bytes (by SOP Instance UID) for writing.
    notes
        The guard's lines on the input (:mod:`.sr_notes`), as a Qualitative Evaluations
        container at the end.

    Raises
    ------
    OutputError
        The SR cannot be built or does not read back with the expected groups.
    """
    import highdicom as hd

    sources = source_images(volume, source_datasets)
    try:
        report = hd.sr.MeasurementReport(
            observation_context=observation_context(bundle, ctx),
            procedure_reported=codes.SCT.ImagingProcedure,
            imaging_measurements=measurement_groups(volume, findings, sources, seg, (ctx, bundle)),
            title=codes.DCM.ImagingMeasurementReport,
        )
        notes = [*notes, axes_statement(findings)] if findings.nodes else notes
        if notes:
            report[0].ContentSequence.append(notes_container(notes))
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*sources, *([seg] if seg is not None else [])],
            content=report,
            series_instance_uid=ctx.uid(bundle, "sr.series"),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=ctx.uid(bundle, "sr.instance"),
            instance_number=1,
            manufacturer=MANUFACTURER,
            series_description=series_description(bundle, "LLN SR"),
            is_complete=True,
            is_final=False,
            is_verified=False,  # unverified AI output
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(f"SR could not be built: {exc}") from exc
    _check_readback(sr, findings, store=encoded)
    logger.info("SR with %d node(s), LLN %s", len(findings.nodes), findings.lln_positive)
    return sr


_VIEWER_OWN = frozenset({"ContentSequence", "SeriesInstanceUID", "SOPInstanceUID", "SeriesNumber", "SeriesDescription"})


def build_viewer_sr(
    sr: Dataset,
    findings: LlnFindings,
    bundle: ModelBundle,
    ctx: PipelineContext,
    *,
    encoded: MutableMapping[str, bytes] | None = None,
) -> Dataset:
    """The companion of the full SR ``sr`` for viewers, and verify it.

    Same header, evidence and observation context as ``sr``; no volumetric or summary
    groups (OHIF 3.13 cannot open those); per node the short/long-axis polylines in TID 1501
    groups with a caption (:func:`~dicomnode.pipelines.mri_lln.sr_content.viewer_groups`,
    which says why); its own series (number 903) and instance UIDs. Derived from ``sr``
    instead of built again with highdicom, which costs ~40 ms per node: unchanged items are
    shared, not copied (neither dataset is changed after this).

    Raises
    ------
    OutputError
        The result does not read back with one or two captioned groups per node holding
        each axis polyline once.
    """
    viewer = Dataset()
    for elem in sr:  # shared elements: setting one of them on `viewer` would change `sr`
        if elem.keyword not in _VIEWER_OWN:
            viewer.add(elem)
    viewer.ContentSequence = [_viewer_item(item, findings, ctx, bundle) for item in sr.ContentSequence
                              if not is_notes(item)]
    viewer.SeriesInstanceUID = ctx.uid(bundle, "sr-viewer.series")
    viewer.SOPInstanceUID = ctx.uid(bundle, "sr-viewer.instance")
    viewer.SeriesNumber = VIEWER_SR_SERIES_NUMBER
    viewer.SeriesDescription = series_description(bundle, "LLN SR viewer")
    viewer.file_meta = copy.deepcopy(sr.file_meta)
    viewer.file_meta.MediaStorageSOPInstanceUID = viewer.SOPInstanceUID
    _check_readback(viewer, findings, viewer=True, store=encoded)
    return viewer
