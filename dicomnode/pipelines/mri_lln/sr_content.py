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
"""

from __future__ import annotations

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
from dicomnode.pipelines.mri_lln.codes import LATERALITY_CODES, node_tracking_uid, station_code
from dicomnode.pipelines.mri_lln.findings import LlnFindings, NodeFinding

if TYPE_CHECKING:
    import highdicom as hd

_Group = Union[
    "hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations",
    "hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations",
    "hd.sr.MeasurementsAndQualitativeEvaluations",
]

__all__ = ["METASTASIS", "SUMMARY_TRACKING_ID", "measurement_groups", "observation_context"]

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
