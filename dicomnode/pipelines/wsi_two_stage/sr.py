"""TID 1500 Measurement Report (Comprehensive 3D SR) for a whole slide.

Content:

* a slide-level TID 1501 group: metastasis present/absent, the AJCC size class of the
  largest deposit, its largest dimension (mm), total tumour area (mm²) and the highest
  tumour probability;
* a tissue group: tissue area (mm²);
* one TID 1410 planar group per deposit (largest first, at most ``max_deposits``): the
  outline as a SCOORD3D POLYGON in slide coordinates (what Slim and OHIF's microscopy mode
  draw), its area and largest dimension.

Pitfalls avoided (shared reference §1.c): no ReferencedSegmentationFrame items (they
trip dciodvfy and highdicom on single-segment SEGs); the SEG is listed as evidence. The
size class has no DICOM/SNOMED code in pydicom, so it uses the private scheme
``99DCMNODE``, declared in CodingSchemeIdentificationSequence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicomnode.errors import OutputError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.common import MANUFACTURER, series_description

__all__ = ["DepositReport", "SlideReport", "build_wsi_sr", "size_class_code"]

logger = logging.getLogger(__name__)

SR_SERIES_NUMBER = 9102
PRIVATE_SCHEME = "99DCMNODE"
_SIZE_CLASS_NAME = hd.sr.CodedConcept("SIZECLASS", PRIVATE_SCHEME, "Metastasis size class (AJCC)")
_SIZE_CLASSES = {
    "none": ("NONE", "No metastasis"),
    "itc": ("ITC", "Isolated tumour cells"),
    "micro": ("MICRO", "Micrometastasis"),
    "macro": ("MACRO", "Macrometastasis"),
}


@dataclass(frozen=True)
class DepositReport:
    """One deposit as reported.

    Attributes
    ----------
    number
        1-based, largest first.
    largest_dimension_mm, area_mm2
        Measurements.
    size_class
        ``itc`` / ``micro`` / ``macro`` for the deposit alone.
    outline
        Closed polygon ``(N, 2)`` of (column, row) level-0 total-pixel-matrix coordinates,
        (0, 0) = top-left corner of the top-left pixel.
    """

    number: int
    largest_dimension_mm: float
    area_mm2: float
    size_class: str
    outline: np.ndarray


@dataclass(frozen=True)
class SlideReport:
    """Slide-level findings."""

    size_class: str
    largest_deposit_mm: float
    tumour_area_mm2: float
    tissue_area_mm2: float
    max_probability: float
    deposits: Sequence[DepositReport]


def size_class_code(size_class: str) -> hd.sr.CodedConcept:
    """Private code for ``none`` / ``itc`` / ``micro`` / ``macro``."""
    try:
        value, meaning = _SIZE_CLASSES[size_class]
    except KeyError as exc:
        raise OutputError(f"unknown size class {size_class!r}; use {sorted(_SIZE_CLASSES)}") from exc
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, meaning)


def _presence(present: bool) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(
        codes.cid7159.NeoplasmSecondary, codes.SCT.Present if present else codes.SCT.Absent
    )


def _mm(value: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(codes.SCT.LongAxis, float(value), codes.UCUM.Millimeter)


def _mm2(value: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(codes.SCT.Area, float(value), codes.UCUM.SquareMillimeter)


def _slide_groups(
    report: SlideReport,
    base: Dataset,
    algo: hd.sr.AlgorithmIdentification,
    uid: Callable[[str], str],
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    source = [hd.sr.SourceImageForMeasurementGroup.from_source_image(base)]
    measurements = [
        _mm2(report.tumour_area_mm2),
        hd.sr.Measurement(codes.DCM.Probability, float(report.max_probability), codes.UCUM.NoUnits),
    ]
    if report.deposits:
        measurements.insert(0, _mm(report.largest_deposit_mm))
    slide = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("sr.group.slide"), identifier="slide findings"),
        finding_type=codes.cid7159.NeoplasmSecondary,
        finding_category=codes.SCT.MorphologicallyAbnormalStructure,
        algorithm_id=algo,
        measurements=measurements,
        source_images=source,
        qualitative_evaluations=[
            _presence(report.size_class != "none"),
            hd.sr.QualitativeEvaluation(_SIZE_CLASS_NAME, size_class_code(report.size_class)),
        ],
    )
    tissue = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("sr.group.tissue"), identifier="tissue"),
        finding_type=codes.SCT.Tissue,
        algorithm_id=algo,
        source_images=source,
        measurements=[_mm2(report.tissue_area_mm2)],
    )
    return [slide, tissue]


def _deposit_group(
    dep: DepositReport,
    base: Dataset,
    algo: hd.sr.AlgorithmIdentification,
    uid: Callable[[str], str],
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    tr = hd.spatial.ImageToReferenceTransformer.for_image(base, for_total_pixel_matrix=True)
    region = hd.sr.ImageRegion3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
        graphic_data=tr(np.asarray(dep.outline, float)),
        frame_of_reference_uid=base.FrameOfReferenceUID,
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uid(f"sr.deposit.{dep.number}"), identifier=f"deposit {dep.number}"
        ),
        referenced_region=region,
        finding_type=codes.cid7159.NeoplasmSecondary,
        finding_category=codes.SCT.MorphologicallyAbnormalStructure,
        algorithm_id=algo,
        measurements=[_mm2(dep.area_mm2), _mm(dep.largest_dimension_mm)],
        qualitative_evaluations=[
            _presence(True),
            hd.sr.QualitativeEvaluation(_SIZE_CLASS_NAME, size_class_code(dep.size_class)),
        ],
    )


def _reference(ds: Dataset) -> Dataset:
    """The identifying attributes of ``ds`` (all SR evidence needs; highdicom deep-copies
    evidence, and a SEG's pixel data would only cost time)."""
    ref = Dataset()
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID"):
        setattr(ref, kw, getattr(ds, kw))
    return ref


def _observer(bundle: ModelBundle, uid: Callable[[str], str], base: Dataset) -> hd.sr.ObservationContext:
    """The model as observing device; the slide's specimen as subject (TID 1009: Slim shows
    only SRs whose Subject Class is "Specimen", with its UID, identifier and container)."""
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=uid("sr.device"),
                name=bundle.id,
                manufacturer_name=MANUFACTURER,
                model_name=f"{bundle.id} {bundle.version}",
            ),
        ),
        subject_context=hd.sr.SubjectContext.from_image(base),
    )


def _measurement_report(
    report: SlideReport,
    base: Dataset,
    bundle: ModelBundle,
    algo: hd.sr.AlgorithmIdentification,
    uid: Callable[[str], str],
    max_deposits: int,
) -> hd.sr.MeasurementReport:
    """The TID 1500 content: the slide groups, then a group per deposit (largest first)."""
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = [*_slide_groups(report, base, algo, uid)]
    groups += [_deposit_group(d, base, algo, uid) for d in report.deposits[:max_deposits]]
    return hd.sr.MeasurementReport(
        observation_context=_observer(bundle, uid, base),
        procedure_reported=codes.SCT.Histopathology,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )


def _document(
    base: Dataset,
    seg: Dataset,
    content: hd.sr.MeasurementReport,
    bundle: ModelBundle,
    uid: Callable[[str], str],
) -> hd.sr.Comprehensive3DSR:
    """The SR document around ``content``, with the slide and the SEG as evidence."""
    return hd.sr.Comprehensive3DSR(
        evidence=[base, _reference(seg)],
        content=content,
        series_instance_uid=uid("sr.series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uid("sr.instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=series_description(bundle, "WSI metastasis report"),
        is_complete=True,
        is_final=False,
        is_verified=False,
    )


def _private_scheme() -> Dataset:
    """The Coding Scheme Identification item of the private codes (``PRIVATE_SCHEME``)."""
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "dicomnode private codes"
    scheme.CodingSchemeResponsibleOrganization = "dicomnode"
    return scheme


def build_wsi_sr(
    base: Dataset,
    seg: Dataset,
    report: SlideReport,
    bundle: ModelBundle,
    uid: Callable[[str], str],
    *,
    max_deposits: int = 50,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 Comprehensive 3D SR.

    Parameters
    ----------
    base
        Level-0 source header, prepared with :func:`.seg.slide_reference`.
    seg
        The SEG of the same run (listed as evidence).
    report
        Slide findings and deposits (deposit outlines in level-0 pixel coordinates).
    bundle, uid
        Model bundle and ``uid(kind)`` for deterministic UIDs.
    max_deposits
        At most this many deposit groups (largest first); all count in the slide group.

    Raises
    ------
    OutputError
        highdicom refused the content.
    """
    algo = hd.sr.AlgorithmIdentification(name=bundle.id, version=bundle.version)
    try:
        content = _measurement_report(report, base, bundle, algo, uid, max_deposits)
        sr = _document(base, seg, content, bundle, uid)
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(f"cannot build WSI SR: {exc}") from exc
    sr.CodingSchemeIdentificationSequence = [_private_scheme()]
    logger.info(
        "SR: class %s, %d deposit group(s)",
        report.size_class,
        min(len(report.deposits), max_deposits),
    )
    return sr
