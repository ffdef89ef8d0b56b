"""MR lateral-lymph-node findings → TID 1500 Measurement Report (Comprehensive 3D SR).

Per node:

* a TID 1411 volumetric group referencing the node's SEG segment (same TrackingUID),
  finding site = station code + laterality, measurements short axis, long axis and
  volume, qualitative evaluation "Neoplasm, Secondary" present/absent (the final status);
* two TID 1410 planar groups, ``LN-n short axis`` and ``LN-n long axis``, each a 2-point
  POLYLINE on the slice where that axis was measured, so OHIF can draw them (OHIF 3.13
  crashes on SRs whose only groups are volumetric ones).

A TID 1501 summary group ``LLN status`` carries the patient level: "Lymph node"
present/absent (any node detected), "Neoplasm, Secondary" present/absent (lateral
lymph-node status) and the number of positive nodes. A series without nodes gets only the
summary (no lymph nodes detected, status negative) and no SEG is referenced.
"""

from __future__ import annotations

import copy
import io
import logging
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicomnode.dicom.volume import Volume
from dicomnode.errors import OutputError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.common import MANUFACTURER, encode, series_description
from dicomnode.outputs.mri_seg import (
    LATERALITY_CODES,
    node_tracking_uid,
    source_images,
    station_code,
)
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.lln_findings import AxisMeasurement, LlnFindings, NodeFinding

if TYPE_CHECKING:
    import highdicom as hd

_Group = Union[
    "hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations",
    "hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations",
    "hd.sr.MeasurementsAndQualitativeEvaluations",
]

__all__ = ["SR_SERIES_NUMBER", "SUMMARY_TRACKING_ID", "VIEWER_SR_SERIES_NUMBER", "build_sr", "build_viewer_sr"]

logger = logging.getLogger(__name__)

SR_SERIES_NUMBER = 902
#: The planar-only companion SR for viewers (OHIF 3.13 crashes on any measurement group
#: without image coordinates: volumetric groups and the summary group alike).
VIEWER_SR_SERIES_NUMBER = 903
SUMMARY_TRACKING_ID = "LLN status"
METASTASIS = codes.cid7159.NeoplasmSecondary  # SCT 14799000


def _present(flag: bool) -> Code:
    value: Code = codes.SCT.Present if flag else codes.SCT.Absent
    return value


def _finding_site(node: NodeFinding) -> hd.sr.FindingSite:
    import highdicom as hd

    return hd.sr.FindingSite(anatomic_location=station_code(node.station), laterality=LATERALITY_CODES[node.side])


def _status(node: NodeFinding) -> list[hd.sr.QualitativeEvaluation]:
    import highdicom as hd

    return [hd.sr.QualitativeEvaluation(name=METASTASIS, value=_present(node.positive))]


def _mm(name: Code, value: float) -> hd.sr.Measurement:
    import highdicom as hd

    return hd.sr.Measurement(name=name, value=round(value, 2), unit=codes.UCUM.Millimeter)


def _referenced_segment(seg: Dataset, number: int) -> hd.sr.ReferencedSegment:
    """Segment reference with the source images of its frames.

    Built by hand because highdicom 0.28's ``ReferencedSegment.from_segmentation`` reads
    SegmentIdentificationSequence from the per-frame groups only, and a single-segment
    SEG keeps it in the shared groups (DICOM-OUTPUTS.md §1.c pitfall 1).
    """
    import highdicom as hd

    shared = seg.SharedFunctionalGroupsSequence[0]
    sources: dict[tuple[str, str], list[int]] = {}
    for item in seg.PerFrameFunctionalGroupsSequence:
        ident = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        if int(ident[0].ReferencedSegmentNumber) != number:
            continue
        for derivation in item.get("DerivationImageSequence", []):
            for src in derivation.SourceImageSequence:
                key = (str(src.ReferencedSOPClassUID), str(src.ReferencedSOPInstanceUID))
                frames = sources.setdefault(key, [])
                if "ReferencedFrameNumber" in src:
                    frames.append(int(src.ReferencedFrameNumber))
    if not sources:
        raise OutputError(f"SEG segment {number} has no frames with source image references")
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=number,
        source_images=[
            hd.sr.SourceImageForSegmentation(cls, uid, sorted(set(frames)) or None)
            for (cls, uid), frames in sources.items()
        ],
    )


def _volumetric(
    node: NodeFinding, seg: Dataset, bundle: ModelBundle, ctx: PipelineContext
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    import highdicom as hd

    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=node_tracking_uid(ctx, bundle, node), identifier=node.tracking_id
        ),
        referenced_segment=_referenced_segment(seg, node.number),
        finding_type=codes.SCT.LymphNode,
        finding_category=codes.SCT.AnatomicalStructure,
        finding_sites=[_finding_site(node)],
        algorithm_id=hd.sr.AlgorithmIdentification(name=bundle.id, version=bundle.version),
        measurements=[
            _mm(codes.SCT.ShortAxis, node.short_axis.length_mm),
            _mm(codes.SCT.LongAxis, node.long_axis.length_mm),
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=round(node.volume_mm3, 1),
                unit=codes.UCUM.CubicMillimeter,
            ),
        ],
        qualitative_evaluations=_status(node),
    )


def _planar(
    node: NodeFinding,
    which: str,
    axis: AxisMeasurement,
    image: tuple[Dataset, int | None],
    ids: tuple[str, ModelBundle],
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    import highdicom as hd

    dataset, frame = image
    uid, bundle = ids
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([axis.start, axis.end], dtype=float),
        source_image=hd.sr.SourceImageForRegion.from_source_image(
            dataset, referenced_frame_numbers=None if frame is None else [frame]
        ),
    )
    name = codes.SCT.ShortAxis if which == "short" else codes.SCT.LongAxis
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=f"{node.tracking_id} {which} axis"),
        referenced_region=region,
        finding_type=codes.SCT.LymphNode,
        finding_category=codes.SCT.AnatomicalStructure,
        finding_sites=[_finding_site(node)],
        algorithm_id=hd.sr.AlgorithmIdentification(name=bundle.id, version=bundle.version),
        measurements=[_mm(name, axis.length_mm)],
        qualitative_evaluations=_status(node),
    )


def _summary(
    findings: LlnFindings, bundle: ModelBundle, ctx: PipelineContext
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    import highdicom as hd

    n_positive = sum(n.positive for n in findings.nodes)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ctx.uid(bundle, "sr.summary.tracking"), identifier=SUMMARY_TRACKING_ID
        ),
        finding_type=codes.SCT.LymphNode,
        finding_category=codes.SCT.AnatomicalStructure,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.PelvicLymphNode)],
        algorithm_id=hd.sr.AlgorithmIdentification(name=bundle.id, version=bundle.version),
        measurements=[
            hd.sr.Measurement(name=codes.DCM.NumberOfNodesPositive, value=n_positive, unit=codes.UCUM.NoUnits)
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=codes.SCT.LymphNode, value=_present(bool(findings.nodes))),
            hd.sr.QualitativeEvaluation(name=METASTASIS, value=_present(findings.lln_positive)),
        ],
    )


def _groups(
    volume: Volume,
    findings: LlnFindings,
    sources: Sequence[Dataset],
    seg: Dataset | None,
    ctx_bundle: tuple[PipelineContext, ModelBundle],
) -> list[_Group]:
    ctx, bundle = ctx_bundle
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}

    def image(z: int) -> tuple[Dataset, int | None]:
        src = volume.sources[z]
        return by_uid[src.sop_instance_uid], src.frame_number

    groups: list[_Group] = [_summary(findings, bundle, ctx)]
    for node in findings.nodes:
        if seg is None:
            raise OutputError("nodes were found but no SEG was given to reference")
        groups.append(_volumetric(node, seg, bundle, ctx))
        for which, axis in (("short", node.short_axis), ("long", node.long_axis)):
            uid = ctx.uid(bundle, f"node.{node.number}.{which}-axis.tracking")
            groups.append(_planar(node, which, axis, image(axis.slice_index), (uid, bundle)))
    return groups


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
    """Encode, parse back with pydicom and count the groups by their TID 1500 structure.

    (A full highdicom ``srread`` of a 20-node SR took 3.5 s in the pipeline; the tests do
    that deeper read-back, with dcmqi too.) The bytes go to ``store`` for writing.
    """
    parsed = pydicom.dcmread(io.BytesIO(encode(sr, store)))
    n = len(findings.nodes)
    counts = _group_counts(parsed)
    expected = (0, 2 * n, 0) if viewer else (n, 2 * n, 1)
    if counts != expected:
        raise OutputError(f"SR read-back has (volumetric, planar, summary) groups {counts}, expected {expected}")


def _is_planar_group(item: Dataset) -> bool:
    return any(it.ValueType in ("SCOORD", "SCOORD3D") for it in item.get("ContentSequence", []))


def _planar_only(item: Dataset) -> Dataset:
    """``item`` itself, or for the Imaging Measurements container a copy with only its planar groups."""
    if item.ValueType != "CONTAINER" or _code(item) != "126010":
        return item
    container = Dataset()
    for elem in item:
        if elem.keyword != "ContentSequence":
            container.add(elem)
    container.ContentSequence = [g for g in item.ContentSequence if _is_planar_group(g)]
    return container


def _observation_context(bundle: ModelBundle, ctx: PipelineContext) -> hd.sr.ObservationContext:
    """The model as the observing device (deterministic device UID)."""
    import highdicom as hd

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=ctx.uid(bundle, "sr.device"),
            name=bundle.id[:64],
            manufacturer_name=MANUFACTURER,
            model_name=f"{bundle.id} {bundle.version}"[:64],
        ),
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def build_sr(
    volume: Volume,
    findings: LlnFindings,
    bundle: ModelBundle,
    ctx: PipelineContext,
    source_datasets: Sequence[Dataset],
    seg: Dataset | None,
    *,
    encoded: MutableMapping[str, bytes] | None = None,
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
        The SEG from :func:`dicomnode.outputs.mri_seg.build_seg` (``None`` without nodes).
    encoded
        Where to keep the checked SR's Part-10 bytes (by SOP Instance UID) for writing.

    Raises
    ------
    OutputError
        The SR cannot be built or does not read back with the expected groups.
    """
    import highdicom as hd

    sources = source_images(volume, source_datasets)
    try:
        report = hd.sr.MeasurementReport(
            observation_context=_observation_context(bundle, ctx),
            procedure_reported=codes.SCT.ImagingProcedure,
            imaging_measurements=_groups(volume, findings, sources, seg, (ctx, bundle)),
            title=codes.DCM.ImagingMeasurementReport,
        )
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
    """The planar-only companion of the full SR ``sr``, for viewers, and verify it.

    Same header, evidence, observation context and short/long-axis polyline groups as
    ``sr``; no volumetric or summary groups (OHIF 3.13 cannot open those); its own series
    (number 903) and instance UIDs. Derived from ``sr`` instead of built again with
    highdicom, which costs ~40 ms per node: the groups are shared, not copied (neither
    dataset is changed after this).

    Raises
    ------
    OutputError
        The result does not read back with exactly the planar groups.
    """
    viewer = Dataset()
    for elem in sr:  # shared elements: setting one of them on `viewer` would change `sr`
        if elem.keyword not in _VIEWER_OWN:
            viewer.add(elem)
    viewer.ContentSequence = [_planar_only(item) for item in sr.ContentSequence]
    viewer.SeriesInstanceUID = ctx.uid(bundle, "sr-viewer.series")
    viewer.SOPInstanceUID = ctx.uid(bundle, "sr-viewer.instance")
    viewer.SeriesNumber = VIEWER_SR_SERIES_NUMBER
    viewer.SeriesDescription = series_description(bundle, "LLN SR viewer")
    viewer.file_meta = copy.deepcopy(sr.file_meta)
    viewer.file_meta.MediaStorageSOPInstanceUID = viewer.SOPInstanceUID
    _check_readback(viewer, findings, viewer=True, store=encoded)
    return viewer
