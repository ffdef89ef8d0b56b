"""Tiled DICOM SEG on a whole slide: tumour mask plus the three-band classifier heatmap.

One SEG instance, one total pixel matrix, at the segmenter's output resolution (never
upsampled to level 0):

1. "Neoplasm, Secondary" — the binary tumour mask (segmenter probability ≥ threshold);
2. "Heatmap p>0.9" (red), 3. "Heatmap 0.7-0.9" (green), 4. "Heatmap 0.5-0.7" (blue) — the
   classifier's patch probabilities in the three display bands.

The heatmap bands live on the coarser classifier patch grid; each patch covers a whole
block of output pixels, so the bands are painted onto the output grid by nearest lookup
(an integer repeat when the patch size is a multiple of the output pixel). That keeps one
geometry for all four segments, so a viewer overlays them without resampling; empty tiles
are left out (TILED_SPARSE). Separate SEG instances per resolution were the alternative; they would
need two frames of reference checks in every viewer for no information gain.

The SEG's top-left pixel is placed explicitly (PlanePositionSlideSequence) so that output
pixel (r, c) covers level-0 pixels ``[c·f, (c+1)·f) × [r·f, (r+1)·f)``, ``f`` = output
µm/px ÷ level-0 µm/px: the same slide point as the model saw.

Encoding: uncompressed, bit-packed frames (Explicit VR Little Endian), 8 KiB per 256² tile
and segment. JPEG 2000 Lossless (until issue 14) is valid DICOM, but dicom-microscopy-viewer
0.48 (the engine of Slim and of OHIF's microscopy mode) cannot show it: it expects every
decoded BINARY frame bit-packed and refuses the one-byte-per-pixel JPEG 2000 frames ("Frame
value does not have expected length: 65536 instead of 8192"; tests/viewer/test_microscopy.py).
Should a compressed syntax come back, encode its frames in the calling thread only:
pylibjpeg-openjpeg's encoder is not safe to call from two threads at once (issue 8;
``bench/encode_stress.py``); ``workers=0`` keeps highdicom serial.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.errors import OutputError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.common import MANUFACTURER, SOFTWARE_VERSION, TYPE2_PATIENT_STUDY, series_description

__all__ = [
    "BAND_COLOURS",
    "TUMOUR_COLOUR",
    "SegGeometry",
    "band_masks",
    "build_wsi_seg",
    "slide_reference",
    "to_output_grid",
]

logger = logging.getLogger(__name__)

#: Display colours of the heatmap bands, highest band first (SEEDS §2).
BAND_COLOURS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 200, 0), (0, 0, 255))
TUMOUR_COLOUR = (255, 255, 0)
SEG_SERIES_NUMBER = 9101
_TYPE2_COPIED = (*TYPE2_PATIENT_STUDY, "ContainerIdentifier")


@dataclass(frozen=True)
class SegGeometry:
    """Where the output grid lies on the slide.

    Attributes
    ----------
    base
        Level-0 header (source image of the SEG).
    base_mpp
        Level-0 µm/px.
    mpp
        Output grid µm/px.
    """

    base: Dataset
    base_mpp: float
    mpp: float

    @property
    def factor(self) -> float:
        """Level-0 pixels per output pixel."""
        return self.mpp / self.base_mpp


def slide_reference(base: Dataset, specimen_uid: str) -> Dataset:
    """A copy of ``base`` that highdicom can derive a conformant SEG/SR from.

    Tolerant on input, strict on output: what a converter left out is filled in the copy
    (each logged as a warning) — empty Type 2 Patient/Study attributes, origin (0, 0)
    for a missing TotalPixelMatrixOriginSequence (what viewers assume), the usual
    ImageOrientationSlide, and an "UNKNOWN" specimen (``specimen_uid``, deterministic)
    when the source names none. SOP/series/study UIDs stay the source's.
    """
    ref = Dataset()
    ref.update(base)
    ref.file_meta = getattr(base, "file_meta", FileMetaDataset())
    missing = [kw for kw in _TYPE2_COPIED if kw not in ref]
    if missing:
        logger.warning("source lacks Type 2 attribute(s) %s; writing them empty", missing)
        for kw in missing:
            setattr(ref, kw, "")
    _fill_specimen(ref, specimen_uid)
    if "TotalPixelMatrixOriginSequence" not in ref:
        logger.warning("source has no TotalPixelMatrixOriginSequence; assuming origin (0, 0)")
        item = Dataset()
        item.XOffsetInSlideCoordinateSystem = 0.0
        item.YOffsetInSlideCoordinateSystem = 0.0
        ref.TotalPixelMatrixOriginSequence = [item]
    if "ImageOrientationSlide" not in ref:
        logger.warning("source has no ImageOrientationSlide; assuming [0,-1,0,-1,0,0]")
        ref.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    return ref


def _fill_specimen(ref: Dataset, specimen_uid: str) -> None:
    if not ref.get("ContainerIdentifier"):
        logger.warning("source has no ContainerIdentifier; writing 'UNKNOWN'")
        ref.ContainerIdentifier = "UNKNOWN"
    for kw in ("IssuerOfTheContainerIdentifierSequence", "ContainerTypeCodeSequence"):
        if kw not in ref:
            setattr(ref, kw, [])
    if not ref.get("SpecimenDescriptionSequence"):
        logger.warning("source has no SpecimenDescriptionSequence; describing it as UNKNOWN")
        item = Dataset()
        item.SpecimenIdentifier = "UNKNOWN"
        item.SpecimenUID = specimen_uid
        item.IssuerOfTheSpecimenIdentifierSequence = []
        item.SpecimenPreparationSequence = []
        ref.SpecimenDescriptionSequence = [item]


def band_masks(prob: np.ndarray, classified: np.ndarray, bands: Sequence[float]) -> np.ndarray:
    """Three boolean band masks ``(3, rows, cols)``: p > hi, mid < p ≤ hi, lo ≤ p ≤ mid.

    ``bands`` is ``[lo, mid, hi]`` (e.g. 0.5, 0.7, 0.9); only classified patches count.
    """
    lo, mid, hi = (float(b) for b in bands)
    p = np.where(classified, prob, -1.0)
    return np.stack([p > hi, (p > mid) & (p <= hi), (p >= lo) & (p <= mid)])


def to_output_grid(cells: np.ndarray, cell_um: float, mpp: float, shape: tuple[int, int]) -> np.ndarray:
    """Paint a patch-grid array onto a finer output grid (nearest by pixel centre)."""
    ri = ((np.arange(shape[0]) + 0.5) * mpp // cell_um).astype(int)
    ci = ((np.arange(shape[1]) + 0.5) * mpp // cell_um).astype(int)
    ri, ci = ri[ri < cells.shape[-2]], ci[ci < cells.shape[-1]]
    # the indices never decrease, so the lookup is a repeat of each cell row/column
    # (``cells[..., ri, :][..., ci]`` with one copy of the output instead of a gather)
    block = np.repeat(cells, np.bincount(ri, minlength=cells.shape[-2]), axis=-2)
    block = np.repeat(block, np.bincount(ci, minlength=cells.shape[-1]), axis=-1)
    out = np.zeros(cells.shape[:-2] + shape, cells.dtype)
    out[..., : ri.size, : ci.size] = block
    return out


def _algorithm(bundle: ModelBundle) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=bundle.id, version=bundle.version, family=codes.cid7162.ArtificialIntelligence
    )


def _tumour_code(bundle: ModelBundle) -> hd.sr.CodedConcept:
    label = (bundle.labels or {}).get("tumour") or {}
    if not label:
        return hd.sr.CodedConcept.from_code(codes.cid7159.NeoplasmSecondary)
    return hd.sr.CodedConcept(str(label["code"]), str(label["scheme"]), str(label["meaning"]))


def _descriptions(
    bundle: ModelBundle, bands: Sequence[float], uid: Callable[[str], str]
) -> list[hd.seg.SegmentDescription]:
    algo, tumour = _algorithm(bundle), _tumour_code(bundle)
    lo, mid, hi = (f"{float(b):g}" for b in bands)
    labels = [tumour.meaning, f"Heatmap p>{hi}", f"Heatmap {mid}-{hi}", f"Heatmap {lo}-{mid}"]
    colours = [TUMOUR_COLOUR, *BAND_COLOURS]
    return [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=label,
            segmented_property_category=codes.cid7150.MorphologicallyAbnormalStructure,
            segmented_property_type=tumour,
            algorithm_type="AUTOMATIC",
            algorithm_identification=algo,
            tracking_id=f"wsi-{'tumour' if n == 1 else f'band-{n - 1}'}",
            tracking_uid=uid(f"seg.segment.{n}"),
            display_color=hd.color.CIELabColor.from_rgb(*rgb),
        )
        for n, (label, rgb) in enumerate(zip(labels, colours, strict=True), start=1)
    ]


def _plane_position(geometry: SegGeometry, ref: Dataset) -> hd.PlanePositionSequence:
    """Slide position of the centre of output pixel (0, 0)."""
    tr = hd.spatial.ImageToReferenceTransformer.for_image(ref, for_total_pixel_matrix=True)
    half = geometry.factor / 2.0
    x, y, z = tr(np.array([[half, half]], float))[0]
    return hd.PlanePositionSequence(
        coordinate_system=hd.CoordinateSystemNames.SLIDE,
        image_position=(float(x), float(y), float(z)),
        pixel_matrix_position=(1, 1),
    )


def build_wsi_seg(
    geometry: SegGeometry,
    tumour: np.ndarray,
    bands: np.ndarray,
    bundle: ModelBundle,
    uid: Callable[[str], str],
    *,
    band_limits: Sequence[float],
) -> hd.seg.Segmentation:
    """Build the tiled BINARY SEG.

    Parameters
    ----------
    geometry
        Source level-0 header and the output grid's µm/px.
    tumour
        Boolean ``(rows, cols)`` tumour mask at ``geometry.mpp``.
    bands
        Boolean ``(3, rows, cols)`` heatmap bands on the same grid (highest band first).
    bundle
        The model bundle (algorithm identification, tumour code, description).
    uid
        ``uid(kind)`` → deterministic UID (``PipelineContext.uid`` bound to the bundle).
    band_limits
        ``[lo, mid, hi]`` heatmap limits (for the segment labels).

    Notes
    -----
    Frames are written uncompressed and bit-packed, what slide viewers decode (module
    docstring, *Encoding*).

    Raises
    ------
    OutputError
        highdicom refused the inputs.
    """
    if bands.shape != (3, *tumour.shape):
        raise OutputError(f"heatmap bands {bands.shape} do not match mask {tumour.shape}")
    ref = slide_reference(geometry.base, uid("specimen"))
    stacked = np.concatenate([tumour[None], bands], axis=0).transpose(1, 2, 0)[None].astype(np.uint8)
    seg = _segmentation(geometry, ref, stacked, bundle, uid, band_limits)
    seg.PatientOrientation = ""  # Type 2C; empty is valid and keeps dciodvfy quiet (§3.1)
    logger.info(
        "SEG: %d frames, %dx%d at %.3f µm/px",
        int(seg.NumberOfFrames),
        tumour.shape[1],
        tumour.shape[0],
        geometry.mpp,
    )
    return seg


def _segmentation(
    geometry: SegGeometry,
    ref: Dataset,
    stacked: np.ndarray,
    bundle: ModelBundle,
    uid: Callable[[str], str],
    band_limits: Sequence[float],
) -> hd.seg.Segmentation:
    """The highdicom constructor call of :func:`build_wsi_seg`."""
    spacing = geometry.mpp / 1000.0
    thickness = _slice_thickness(ref)
    try:
        return hd.seg.Segmentation(
            source_images=[ref],
            pixel_array=stacked,
            segmentation_type="BINARY",
            segment_descriptions=_descriptions(bundle, band_limits, uid),
            series_instance_uid=uid("seg.series"),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=uid("seg.instance"),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=bundle.id,
            software_versions=SOFTWARE_VERSION,
            device_serial_number=bundle.version,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            tile_pixel_array=True,
            tile_size=(256, 256),
            pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=[spacing, spacing], slice_thickness=thickness),
            plane_positions=[_plane_position(geometry, ref)],
            series_description=series_description(bundle, "WSI metastasis SEG"),
            content_label="METASTASIS",
            content_description="tumour mask + heatmap bands",
            workers=0,  # serial (module docstring, *Encoding*)
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(f"cannot build WSI SEG: {exc}") from exc


def _slice_thickness(ref: Dataset) -> float:
    try:
        pm = ref.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        return float(pm.SliceThickness)
    except (AttributeError, IndexError, KeyError, TypeError):
        return float(ref.get("ImagedVolumeDepth", 0.001) or 0.001)
