"""Build a ground-truth slide SEG with highdicom, as a pathologist's tool would (tests helper)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian


def slide_level(files: list[Path], mpp: float) -> pydicom.Dataset:
    """The pyramid level of a slide at ``mpp`` µm/px (read with pixels: highdicom's source image)."""
    for path in files:
        ds = pydicom.dcmread(path)
        spacing = float(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0])
        if abs(spacing * 1000 - mpp) < 1e-6:
            return ds
    raise LookupError(f"no level at {mpp} µm/px")


def build_slide_seg(level: pydicom.Dataset, tumour: np.ndarray, path: Path, *, fractional: bool = False,
                    spacing_um: float | None = None) -> Path:
    """A tiled SEG on ``level``'s grid: segment 1 "Tissue" (everything), segment 2 "Tumour" (``tumour``).

    ``fractional``: tumour pixels 0.9, a one-pixel rim around them 0.3 (below one half), else 0.
    ``spacing_um``: state this pixel spacing instead of the level's (a SEG on another grid than the slide's).
    """
    values = tumour.astype(np.float32) * 0.9
    if fractional:
        rim = np.zeros_like(tumour)
        rim[1:] |= tumour[:-1]
        rim[:, 1:] |= tumour[:, :-1]
        values[rim & ~tumour] = 0.3
    stacked = np.stack([np.ones_like(values), values], axis=-1)[None]
    extra = {}
    if spacing_um is not None:
        origin = level.TotalPixelMatrixOriginSequence[0]
        extra["plane_positions"] = [hd.PlanePositionSequence(
            coordinate_system=hd.CoordinateSystemNames.SLIDE,
            image_position=(float(origin.XOffsetInSlideCoordinateSystem),
                            float(origin.YOffsetInSlideCoordinateSystem), 0.0),
            pixel_matrix_position=(1, 1))]
        extra["pixel_measures"] = hd.PixelMeasuresSequence(pixel_spacing=[spacing_um / 1000] * 2,
                                                           slice_thickness=0.001)
    kind = "FRACTIONAL" if fractional else "BINARY"
    descriptions = [
        hd.seg.SegmentDescription(segment_number=1, segment_label="Tissue",
                                  segmented_property_category=codes.SCT.Tissue,
                                  segmented_property_type=codes.SCT.Tissue, algorithm_type="MANUAL"),
        hd.seg.SegmentDescription(segment_number=2, segment_label="Tumour",
                                  segmented_property_category=codes.cid7150.MorphologicallyAbnormalStructure,
                                  segmented_property_type=codes.cid7159.NeoplasmSecondary, algorithm_type="MANUAL"),
    ]
    seg = hd.seg.Segmentation(
        source_images=[level], pixel_array=stacked if fractional else (stacked > 0.5).astype(np.uint8),
        segmentation_type=kind, segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=77,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="pathologist", manufacturer_model_name="tool",
        software_versions="1", device_serial_number="1", tile_pixel_array=True, tile_size=(256, 256),
        transfer_syntax_uid=ExplicitVRLittleEndian, **extra)
    seg.save_as(path)
    return path
