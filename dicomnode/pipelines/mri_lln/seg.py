"""MR lateral-lymph-node findings → BINARY DICOM SEG on the source grid.

One segment per node (``LN-1`` …; yellow when positive, blue when negative; anatomic region
= station code with a laterality modifier), then one segment per nodal region present in
the label map (internal iliac red, obturator green, external iliac purple). Frames are
derived frame-by-frame from the source images (single-frame MR or Enhanced MR), so
viewers that ignore geometry still align them. The SEG is read back with highdicom and
compared with the label map before it is returned (strict on output).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes

from dicomnode.dicom.volume import Volume
from dicomnode.errors import OutputError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.common import MANUFACTURER, SOFTWARE_VERSION, TYPE2_PATIENT_STUDY, encode, series_description
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln.codes import LATERALITY_CODES, STATION_NAMES, node_tracking_uid, station_code
from dicomnode.pipelines.mri_lln.findings import LlnFindings, NodeFinding

if TYPE_CHECKING:
    import highdicom as hd

__all__ = ["SEG_SERIES_NUMBER", "build_seg", "segment_map", "source_images"]

logger = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 901
_REGION_RGB = {
    "internal_iliac": (255, 0, 0),
    "obturator": (0, 255, 0),
    "external_iliac": (128, 0, 128),
}
_TYPE2_COPIED = TYPE2_PATIENT_STUDY
_NODE_RGB = {True: (255, 255, 0), False: (0, 0, 255)}


def source_images(volume: Volume, datasets: Sequence[Dataset]) -> list[Dataset]:
    """The source instances in volume (z) order; one dataset for an Enhanced MR.

    Returns shallow copies adjusted for highdicom (see :func:`_tolerant_copy`).

    Raises
    ------
    OutputError
        A SOP instance of the volume is missing from ``datasets``.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    ordered: list[Dataset] = []
    for src in volume.sources:
        ds = by_uid.get(src.sop_instance_uid)
        if ds is None:
            raise OutputError(f"source instance {src.sop_instance_uid} of the volume not given")
        if not ordered or ordered[-1] is not ds:
            ordered.append(ds)
    if len(ordered) != len({id(d) for d in ordered}):
        raise OutputError("frames of several multi-frame instances are interleaved along z")
    first_iop = ordered[0].get("ImageOrientationPatient")
    return [_tolerant_copy(ds, first_iop) for ds in ordered]


def _tolerant_copy(ds: Dataset, first_iop: object) -> Dataset:
    """Shallow copy that highdicom accepts for real-world sources.

    highdicom requires byte-identical ImageOrientationPatient strings across single-frame
    sources and a *shared* PlaneOrientation/PixelMeasures for multi-frame sources.
    Scanners round IOP per slice and Siemens Enhanced MR puts both per frame;
    :func:`~dicomnode.dicom.volume.load_volume` has already checked that all planes share
    one orientation and grid (within 1e-3), so the first plane's values stand for all.
    Type 2 patient/study attributes that a source lacks are added empty, as the standard
    allows, because highdicom copies them into the SEG.
    """
    copy = Dataset(ds)
    copy.file_meta = ds.file_meta if hasattr(ds, "file_meta") else FileMetaDataset()
    for keyword in _TYPE2_COPIED:  # Type 2: present, possibly empty, in every output
        if keyword not in copy:
            setattr(copy, keyword, None)
    if not re.fullmatch(r"\d{3}[DWMY]", str(copy.get("PatientAge", "000Y"))):
        del copy.PatientAge  # Type 3; some exports write e.g. "0Y", invalid for VR AS
    if "PerFrameFunctionalGroupsSequence" not in ds:
        copy.ImageOrientationPatient = first_iop
        return copy
    shared = Dataset(ds.SharedFunctionalGroupsSequence[0]) if ds.get("SharedFunctionalGroupsSequence") else Dataset()
    frame1 = ds.PerFrameFunctionalGroupsSequence[0]
    for macro in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        if macro not in shared and macro in frame1:
            shared[macro] = frame1[macro]
    copy.SharedFunctionalGroupsSequence = [shared]
    return copy


def _frame_array(volume: Volume, array: np.ndarray) -> np.ndarray:
    """Reorder a ``(z, y, x)`` array into source frame order (identity for single-frame)."""
    numbers = [s.frame_number for s in volume.sources]
    if numbers[0] is None:
        return array
    if len({s.sop_instance_uid for s in volume.sources}) != 1:
        raise OutputError("a SEG can reference frames of one Enhanced MR instance only")
    out = np.zeros_like(array)
    for z, number in enumerate(numbers):
        out[int(number) - 1] = array[z]  # type: ignore[arg-type]
    return out


def _algorithm(bundle: ModelBundle) -> hd.AlgorithmIdentificationSequence:
    import highdicom as hd

    return hd.AlgorithmIdentificationSequence(
        name=bundle.id, version=bundle.version, family=codes.cid7162.ArtificialIntelligence
    )


def _site(station: str | None, side: str | None) -> hd.sr.CodedConcept:
    """Anatomic region item: station code with a laterality modifier."""
    from highdicom.sr import CodedConcept

    item = CodedConcept.from_code(station_code(station))
    if side in LATERALITY_CODES:
        item.AnatomicRegionModifierSequence = [CodedConcept.from_code(LATERALITY_CODES[side])]
    return item


def _node_description(node: NodeFinding, bundle: ModelBundle, ctx: PipelineContext) -> hd.seg.SegmentDescription:
    import highdicom as hd

    where = f"{node.side} {STATION_NAMES.get(node.station or '', 'pelvic')}"
    status = "positive" if node.positive else "negative"
    return hd.seg.SegmentDescription(
        segment_number=node.number,
        segment_label=f"{node.tracking_id} {where} LN {status}"[:64],
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.LymphNode,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(bundle),
        tracking_id=node.tracking_id,
        tracking_uid=node_tracking_uid(ctx, bundle, node),
        anatomic_regions=[_site(node.station, node.side)],
        display_color=hd.color.CIELabColor.from_rgb(*_NODE_RGB[node.positive]),
    )


def _region_description(
    number: int, station: str, bundle: ModelBundle, ctx: PipelineContext
) -> hd.seg.SegmentDescription:
    import highdicom as hd

    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=f"{STATION_NAMES.get(station, station)} nodal region",
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=station_code(station),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(bundle),
        tracking_id=f"REGION-{station}",
        tracking_uid=ctx.uid(bundle, f"region.{station}.tracking"),
        display_color=hd.color.CIELabColor.from_rgb(*_REGION_RGB.get(station, (255, 128, 0))),
    )


def segment_map(label_map: np.ndarray, findings: LlnFindings) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Label-map-style segment array: node *i* → *i*, then one value per region present.

    Returns the ``(z, y, x)`` array and ``[(segment number, station), ...]`` for regions.
    """
    n = len(findings.nodes)
    regions = [(n + k + 1, s) for k, s in enumerate(findings.stations_present)]
    dtype = np.uint8 if n + len(regions) < 256 else np.uint16
    out = findings.node_map.astype(dtype)
    by_station = {s: v for v, s in findings.scheme.regions.items()}
    for number, station in regions:
        out[(label_map == by_station[station]) & (out == 0)] = number
    return out, regions


def _check_readback(
    seg: hd.seg.Segmentation, volume: Volume, expected: np.ndarray, store: MutableMapping[str, bytes] | None = None
) -> None:
    """Encode, decode with highdicom and compare every source plane with ``expected``."""
    import highdicom as hd

    back = hd.seg.segread(io.BytesIO(encode(seg, store)))
    first = volume.sources[0]
    if first.frame_number is None:
        got = back.get_pixels_by_source_instance(
            source_sop_instance_uids=[s.sop_instance_uid for s in volume.sources],
            combine_segments=True,
        )
    else:
        got = back.get_pixels_by_source_frame(
            source_sop_instance_uid=first.sop_instance_uid,
            source_frame_numbers=[int(s.frame_number or 0) for s in volume.sources],
            combine_segments=True,
            assert_missing_frames_are_empty=True,  # empty frames are omitted on purpose
        )
    if not np.array_equal(np.asarray(got), expected):
        raise OutputError("SEG read-back differs from the label map it was built from")


def _encode(
    sources: list[Dataset],
    frames: np.ndarray,
    descriptions: list[hd.seg.SegmentDescription],
    bundle: ModelBundle,
    ctx: PipelineContext,
) -> hd.seg.Segmentation:
    import highdicom as hd

    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=ctx.uid(bundle, "seg.series"),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=ctx.uid(bundle, "seg.instance"),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=bundle.id[:64],
            software_versions=SOFTWARE_VERSION,
            device_serial_number="0",
            series_description=series_description(bundle, "LLN SEG"),
            content_label="LLN",
            content_description="Lateral lymph nodes and nodal regions",
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(f"SEG could not be built: {exc}") from exc


def build_seg(
    volume: Volume,
    label_map: np.ndarray,
    findings: LlnFindings,
    bundle: ModelBundle,
    ctx: PipelineContext,
    source_datasets: Sequence[Dataset],
    encoded: MutableMapping[str, bytes] | None = None,
) -> hd.seg.Segmentation | None:
    """Build and verify the BINARY SEG; ``None`` when there is no node.

    Parameters
    ----------
    volume
        The source volume (defines the z order of ``label_map``).
    label_map
        Model label map on the volume grid.
    findings
        Nodes computed from ``label_map``.
    bundle, ctx
        Model bundle and job context (deterministic UIDs).
    source_datasets
        The series' instances (with pixel data or not).
    encoded
        Where to keep the checked SEG's Part-10 bytes (by SOP Instance UID) for writing.

    Raises
    ------
    OutputError
        The SEG cannot be built or does not read back identically.
    """
    if not findings.nodes:
        return None
    sources = source_images(volume, source_datasets)
    no_for = [str(ds.SOPInstanceUID) for ds in sources if not ds.get("FrameOfReferenceUID")]
    if no_for:
        raise OutputError(
            f"{len(no_for)} source instance(s) have no FrameOfReferenceUID (Type 1 in MR "
            f"images), so a SEG cannot be placed on them: {', '.join(no_for[:3])}"
        )
    segments, regions = segment_map(label_map, findings)
    descriptions = [_node_description(n, bundle, ctx) for n in findings.nodes]
    descriptions += [_region_description(num, st, bundle, ctx) for num, st in regions]
    seg = _encode(sources, _frame_array(volume, segments), descriptions, bundle, ctx)
    seg.ContentCreatorName = None  # Type 2 in Content Identification; unknown for a device
    _check_readback(seg, volume, segments, encoded)
    logger.info("SEG with %d segment(s), %d frame(s)", len(descriptions), seg.NumberOfFrames)
    return seg
