"""A tiled DICOM SEG (VL WSI, from any tool) as a slide's tumour annotation.

The SEG must reference the evaluated slide: the same FrameOfReferenceUID, the same
ContainerIdentifier (when both carry one) and, when it lists referenced series, the
slide's series. Its pixel grid must be a grid of the slide: the same orientation, its
top-left corner on the slide's (within one SEG pixel), and its total pixel matrix the
slide's extent at the SEG's pixel spacing (a pyramid level, or e.g. the node's own SEG grid).
Anything else is the case's error, never silently resampled.

The tumour segment is picked as the MR reader does, by what it says it is: segments whose
SegmentLabel names tumour / metastasis / neoplasm / carcinoma (labels naming a heatmap
are skipped), else those whose segmented property type does; a SEG with a single segment
is taken as the tumour mask. Several tumour segments are united. A FRACTIONAL SEG is
tumour where the fraction is at least one half. The result is a :class:`WsiTruth` mask at
the SEG's µm/px, resampled like a PNG mask to whatever the WSI evaluation needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.evaluate.cases import TRUTH_SUFFIXES, CaseError
from dicomnode.evaluate.truth_wsi import WsiTruth, read_wsi_truth

__all__ = ["read_slide_truth", "read_wsi_seg", "tumour_segments"]

_TUMOUR_WORDS = ("tumo", "metast", "neoplas", "cancer", "carcinoma")


def _tumourish(text: str) -> bool:
    text = text.lower()
    return any(word in text for word in _TUMOUR_WORDS) and "heatmap" not in text


def tumour_segments(seg: Any) -> list[int]:
    """The segment numbers of ``seg`` that hold tumour (see the module docstring).

    Raises
    ------
    CaseError
        Several segments, none of them tumour.
    """
    numbers = [int(n) for n in seg.get_segment_numbers()]
    labels = {n: str(seg.get_segment_description(n).SegmentLabel) for n in numbers}
    by_label = [n for n in numbers if _tumourish(labels[n])]
    if by_label:
        return by_label
    by_type = [n for n in numbers if "heatmap" not in labels[n].lower()
               and _tumourish(str(seg.get_segment_description(n).segmented_property_type.meaning))]
    if by_type:
        return by_type
    if len(numbers) == 1:
        return numbers
    raise CaseError(f"none of the segments {[labels[n] for n in numbers]} is a tumour segment "
                    "(label or property type naming tumour / metastasis / neoplasm)")


def _check_reference(seg: Any, slide: Dataset, name: str) -> None:
    """The SEG references ``slide`` (frame of reference, container, series)."""
    theirs, ours = str(seg.get("FrameOfReferenceUID", "")), str(slide.get("FrameOfReferenceUID", ""))
    if theirs != ours:
        raise CaseError(f"ground truth {name} references another slide: frame of reference {theirs or '(none)'} "
                        f"vs the slide's {ours or '(none)'}")
    theirs, ours = str(seg.get("ContainerIdentifier", "") or ""), str(slide.get("ContainerIdentifier", "") or "")
    if theirs and ours and theirs != ours:
        raise CaseError(f"ground truth {name} references another slide: container {theirs!r} vs the slide's {ours!r}")
    series = [str(item.get("SeriesInstanceUID", "")) for item in seg.get("ReferencedSeriesSequence", [])]
    if series and str(slide.get("SeriesInstanceUID", "")) not in series:
        raise CaseError(f"ground truth {name} references another series ({', '.join(series)}), "
                        f"not the slide's {slide.get('SeriesInstanceUID')}")


def _origin(ds: Any) -> tuple[float, float]:
    item = ds.TotalPixelMatrixOriginSequence[0]
    return float(item.XOffsetInSlideCoordinateSystem), float(item.YOffsetInSlideCoordinateSystem)


def _check_grid(seg: Any, slide: Dataset, base_mpp: float, name: str) -> float:
    """The SEG's µm/px, after checking that its grid is a grid of the slide."""
    try:
        spacing = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    except (AttributeError, IndexError, KeyError) as exc:
        raise CaseError(f"ground truth {name} has no shared pixel spacing (not a tiled slide SEG)") from exc
    mpp = spacing[0] * 1000.0
    if abs(spacing[0] - spacing[1]) > 1e-6 * max(spacing):
        raise CaseError(f"ground truth {name}: non-square pixels {spacing} mm")
    orient = [float(v) for v in seg.get("ImageOrientationSlide", [0, -1, 0, -1, 0, 0])]
    ref_orient = [float(v) for v in slide.get("ImageOrientationSlide", [0, -1, 0, -1, 0, 0])]
    if not np.allclose(orient, ref_orient, atol=1e-3):
        raise CaseError(f"ground truth {name}: orientation {orient} differs from the slide's {ref_orient}")
    if "TotalPixelMatrixOriginSequence" in seg and "TotalPixelMatrixOriginSequence" in slide:
        (x, y), (x0, y0) = _origin(seg), _origin(slide)
        if math.hypot(x - x0, y - y0) > spacing[0] + 1e-6:
            raise CaseError(f"ground truth {name}: its grid starts at ({x:g}, {y:g}) mm on the slide, not at the "
                            f"slide's corner ({x0:g}, {y0:g}) mm — another slide or a cropped region")
    width, height = int(slide.TotalPixelMatrixColumns), int(slide.TotalPixelMatrixRows)
    expect = (math.ceil(height * base_mpp / mpp - 1e-6), math.ceil(width * base_mpp / mpp - 1e-6))
    got = (int(seg.TotalPixelMatrixRows), int(seg.TotalPixelMatrixColumns))
    if any(abs(g - e) > 1 for g, e in zip(got, expect, strict=True)):
        raise CaseError(f"ground truth {name}: {got[1]}x{got[0]} px at {mpp:g} µm/px is not a grid of the slide "
                        f"({width}x{height} px at {base_mpp:g} µm/px → {expect[1]}x{expect[0]} px)")
    return mpp


def read_wsi_seg(path: Path, slide: Dataset, base_mpp: float) -> WsiTruth:
    """A slide SEG as a tumour mask at its own µm/px (see the module docstring).

    Parameters
    ----------
    path
        The SEG file.
    slide
        The slide's level-0 header (what the SEG must reference).
    base_mpp
        Level-0 µm/px.

    Raises
    ------
    CaseError
        Unreadable, another slide, another grid, or no tumour segment.
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom/pydicom raise many types for a broken file
        raise CaseError(f"cannot read ground-truth SEG {path.name}: {type(exc).__name__}: {exc}") from exc
    if "TotalPixelMatrixRows" not in seg:
        raise CaseError(f"ground truth {path.name} is not a slide SEG (no total pixel matrix)")
    _check_reference(seg, slide, path.name)
    mpp = _check_grid(seg, slide, base_mpp, path.name)
    numbers = tumour_segments(seg)
    try:
        pixels = seg.get_total_pixel_matrix(segment_numbers=numbers, combine_segments=False)
    except Exception as exc:  # highdicom raises many types for inconsistent frames
        raise CaseError(f"cannot assemble ground-truth SEG {path.name}: {type(exc).__name__}: {exc}") from exc
    mask: np.ndarray = np.asarray((np.asarray(pixels, dtype=float) >= 0.5).any(axis=-1))
    return WsiTruth(path.name, mask=mask, mask_mpp=mpp)


def read_slide_truth(path: Path, mask_mpp: float | None, slide: Dataset, base_mpp: float) -> WsiTruth:
    """Any WSI ground truth: an annotation file (:func:`read_wsi_truth`) or a DICOM SEG.

    Raises
    ------
    CaseError
        See :func:`read_wsi_truth` and :func:`read_wsi_seg`.
    """
    if path.name.lower().endswith(TRUTH_SUFFIXES):  # annotation files; else a SEG
        return read_wsi_truth(path, mask_mpp)
    return read_wsi_seg(path, slide, base_mpp)
