"""A tiled DICOM SEG as a slide's ground truth: read back equal to the mask it was built from
(BINARY and FRACTIONAL, tumour segment picked by its label), and a SEG of another slide or on
another grid is a clear per-case error."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from slide_seg import build_slide_seg, slide_level

from dicomnode.evaluate.cases import CaseError
from dicomnode.evaluate.truth_wsi_seg import read_slide_truth, read_wsi_seg
from dicomnode.synth.wsi import generate_slide


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("slide_seg")
    a = generate_slide(root / "a", 50, size_mm=(1.0, 1.0), mpp=2.0, deposits=[(0.4, 0.5, 0.3), (0.8, 0.2, 0.1)])
    b = generate_slide(root / "b", 51, size_mm=(1.0, 1.0), mpp=2.0, deposits=[])
    return a, b, root


def _base(slide) -> pydicom.Dataset:
    return slide_level(slide.files, slide.mpp)


@pytest.mark.parametrize("fractional", [False, True], ids=["binary", "fractional"])
def test_slide_seg_reads_back_equal_to_the_mask(slides, fractional: bool) -> None:
    a, _, root = slides
    mask = a.mask(4.0)
    assert 0 < mask.sum() < mask.size
    path = build_slide_seg(slide_level(a.files, 4.0), mask, root / f"gt_{fractional}.dcm", fractional=fractional)
    truth = read_slide_truth(path, None, _base(a), a.mpp)
    assert truth.mask_mpp == pytest.approx(4.0)
    assert truth.mask is not None and np.array_equal(truth.mask, mask)
    # resampled to what the WSI evaluation asks for: each SEG pixel covers 2 x 2 level-0 pixels
    assert np.array_equal(truth.raster(a.mpp, a.mpp, a.size_px), mask.repeat(2, axis=0).repeat(2, axis=1))


def test_seg_of_another_slide_is_a_case_error(slides) -> None:
    a, b, root = slides
    path = build_slide_seg(slide_level(a.files, 4.0), a.mask(4.0), root / "gt_a.dcm")
    with pytest.raises(CaseError, match="references another slide"):
        read_wsi_seg(path, _base(b), b.mpp)


def test_seg_on_another_grid_is_a_case_error(slides) -> None:
    a, _, root = slides
    path = build_slide_seg(slide_level(a.files, 4.0), a.mask(4.0), root / "gt_5um.dcm", spacing_um=5.0)
    with pytest.raises(CaseError, match="is not a grid of the slide"):
        read_wsi_seg(path, _base(a), a.mpp)
