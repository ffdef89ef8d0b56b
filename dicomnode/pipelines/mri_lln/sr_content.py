"""The content of the ``mri-lln`` TID 1500 Measurement Report: its measurement groups.

Per node:

* a TID 1411 volumetric group referencing the node's SEG segment (same TrackingUID),
  finding site = station code + laterality, measurements short axis, long axis and
  volume, qualitative evaluation "Neoplasm, Secondary" present/absent (the final status);
* two TID 1410 planar groups, ``LN-n short axis`` and ``LN-n long axis``, each a 2-point
  POLYLINE on the slice where that axis was measured, so OHIF can draw them (OHIF 3.13
  crashes on SRs whose only groups are volumetric ones).

A TID 1501 summary group ``LLN status`` carries the patient level: "Lymph node"
present/absent (any node detected), "Neoplasm, Secondary" present/absent (lateral
lymph-node status) and the number of positive nodes. The observer is the model, as a
device (:func:`observation_context`).

The viewer SR gets other groups (:func:`viewer_groups`), shaped by what OHIF 3.13.2 shows
(``extensions/cornerstone-dicom-sr/src/getSopClassHandlerModule.ts``): for a group with a
top-level SCOORD (TID 1410) its text box is "<NUM meaning>: <value> <unit>" per measurement
plus ``363698007: <site meaning>`` (it labels the finding site with the bare SNOMED code
value, and shows neither tracking identifier nor laterality). A TID 1501 group whose NUMs
are each INFERRED FROM their SCOORD polyline (TID 300) is drawn as well, and there OHIF
shows a "Comment" TEXT item first and ignores the SNOMED finding site. So each node gets one
TID 1501 group per key slice: both axes (or one, when they lie on different slices), the
finding site and status as coded items, and a comment ``LN-3 left external iliac lymph
node, positive`` that OHIF prints above "Short axis: 4.85 mm" / "Long axis: 8.08 mm".
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicomnode.dicom.volume import Volume
from dicomnode.errors import OutputError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.common import MANUFACTURER
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln.axes import AxisMeasurement
from dicomnode.pipelines.mri_lln.codes import LATERALITY_CODES, node_caption, node_tracking_uid, station_code
from dicomnode.pipelines.mri_lln.criteria import shown_mm
from dicomnode.pipelines.mri_lln.findings import LlnFindings, NodeFinding

if TYPE_CHECKING:
    import highdicom as hd

_Group = Union[
    "hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations",
    "hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations",
    "hd.sr.MeasurementsAndQualitativeEvaluations",
]

__all__ = [
    "BORDERLINE",
    "axes_statement",
    "COMMENT",
    "METASTASIS",
    "SUMMARY_TRACKING_ID",
    "measurement_groups",
    "observation_context",
    "viewer_groups",
]

SUMMARY_TRACKING_ID = "LLN status"
METASTASIS = codes.cid7159.NeoplasmSecondary  # SCT 14799000
COMMENT = Code("121106", "DCM", "Comment")
#: DCM 111848: the short axis is within one in-plane pixel of the size threshold.
BORDERLINE = codes.DCM.Borderline
_TRACKING = ("112039", "112040")  # Tracking Identifier, Tracking Unique Identifier


def _present(flag: bool) -> Code:
    value: Code = codes.SCT.Present if flag else codes.SCT.Absent
    return value


def _finding_site(node: NodeFinding) -> hd.sr.FindingSite:
    import highdicom as hd

    return hd.sr.FindingSite(anatomic_location=station_code(node.station), laterality=LATERALITY_CODES[node.side])


def _status(node: NodeFinding) -> list[hd.sr.QualitativeEvaluation]:
    """The node's final status, and "Borderline: Present" when its short axis is within one
    in-plane pixel of the threshold (:mod:`.criteria`)."""
    import highdicom as hd

    status = [hd.sr.QualitativeEvaluation(name=METASTASIS, value=_present(node.positive))]
    if node.borderline:
        status.append(hd.sr.QualitativeEvaluation(name=BORDERLINE, value=codes.SCT.Present))
    return status


def _mm(name: Code, value: float) -> hd.sr.Measurement:
    """A length as shown and compared (:func:`~.criteria.shown_mm`)."""
    import highdicom as hd

    return hd.sr.Measurement(name=name, value=shown_mm(value), unit=codes.UCUM.Millimeter)


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


def axes_statement(findings: LlnFindings) -> str:
    """The SR's statement of where the axes were measured: the acquisition plane, and its
    tilt from the true axial plane (the size rule is defined on axial images)."""
    tilt = round(findings.tilt_deg, 1)
    where = "Short and long axes are measured in the acquisition plane"
    if tilt < 0.5:
        return f"{where}, which is axial (tilt {tilt:g}° from the true axial plane)."
    return (
        f"{where}, which is tilted {tilt:g}° from the true axial plane: an oblique section of a "
        "node can be wider than its axial one, so a short axis near the size threshold may be "
        "smaller in the axial plane."
    )


def measurement_groups(
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


def observation_context(bundle: ModelBundle, ctx: PipelineContext) -> hd.sr.ObservationContext:
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


def _concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else ""


def _inferred_num(planar: Dataset) -> Dataset:
    """A copy of the planar group's NUM with a copy of its SCOORD under it (INFERRED FROM)."""
    items = planar.ContentSequence
    num: Dataset = copy.deepcopy(next(it for it in items if it.ValueType == "NUM"))
    region = copy.deepcopy(next(it for it in items if it.ValueType == "SCOORD"))
    region.RelationshipType = "INFERRED FROM"
    num.ContentSequence = [*num.get("ContentSequence", []), region]
    return num


def _node_group(planars: Sequence[Dataset], tracking: tuple[str, str], caption: str) -> Dataset:
    """One TID 1501 group from the planar group(s) of one node on one slice."""
    import highdicom as hd

    first = planars[0]
    group = Dataset()
    for elem in first:
        if elem.keyword != "ContentSequence":
            group.add(copy.deepcopy(elem))
    content: list[Dataset] = [*hd.sr.TrackingIdentifier(uid=tracking[0], identifier=tracking[1])]
    for item in first.ContentSequence:
        if item.ValueType == "NUM":
            content.extend(_inferred_num(p) for p in planars)
        elif item.ValueType != "SCOORD" and _concept(item) not in _TRACKING:
            content.append(item)
    content.append(hd.sr.TextContentItem(name=COMMENT, value=caption, relationship_type="CONTAINS"))
    group.ContentSequence = content
    return group


def viewer_groups(
    planar: Sequence[Dataset], findings: LlnFindings, ctx_bundle: tuple[PipelineContext, ModelBundle]
) -> list[Dataset]:
    """The viewer SR's measurement groups, made from the full SR's encoded planar groups.

    Per node one group with both axis polylines when they lie on the same slice (tracking
    identifier ``LN-n``, the node's TrackingUID shared with its SEG segment), else one group
    per axis keeping the planar group's tracking identifier and UID. Items that are not
    changed are shared with ``planar``, not copied.

    Raises
    ------
    OutputError
        A node has no short- or long-axis planar group in ``planar``.
    """
    ctx, bundle = ctx_bundle
    by_id = {}
    for group in planar:
        ident = next((it for it in group.ContentSequence if _concept(it) == _TRACKING[0]), None)
        if ident is not None:
            by_id[str(ident.TextValue)] = group
    groups = []
    for node in findings.nodes:
        wanted = [f"{node.tracking_id} {which} axis" for which in ("short", "long")]
        if any(w not in by_id for w in wanted):
            raise OutputError(f"the SR has no short/long-axis group for node {node.tracking_id}")
        pair = [by_id[w] for w in wanted]
        if node.short_axis.slice_index == node.long_axis.slice_index:
            tracking = (node_tracking_uid(ctx, bundle, node), node.tracking_id)
            groups.append(_node_group(pair, tracking, node_caption(node)))
            continue
        for group in pair:
            items = {_concept(it): it for it in group.ContentSequence}
            tracking = (str(items[_TRACKING[1]].UID), str(items[_TRACKING[0]].TextValue))
            groups.append(_node_group([group], tracking, node_caption(node)))
    return groups
