"""wsi-two-stage on every real slide of the shared test data (the ``wsi_dir`` fixture).

With the demo bundle (models/wsi-ln-demo): how each real file is handled (valid outputs
or a clear refusal); the demo model's class on skin H&E is its own call and not asserted.
With the tiny analytic bundle of test_wsi_support (blueness graphs) the answer follows from
the slide's own pixels, so the class and the stage counts are asserted exactly.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from scipy import ndimage
from test_wsi_support import SEG_SPEC, THRESHOLDS, blueness, export_models, patch_blueness

from dicomnode.dicom.slide import open_slide
from dicomnode.errors import InputRefused, PipelineError
from dicomnode.inference.manifest import ModelBundle, load_bundle
from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.pipelines.base import PipelineContext, PipelineResult
from dicomnode.pipelines.wsi_two_stage import WsiTwoStagePipeline, create

DEMO = Path(__file__).resolve().parents[3] / "models" / "wsi-ln-demo"
CMU = ["cmu1-small-region-pyramid-wsidicomizer", "cmu1-small-region-pyramid-wsi2dcm"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    if (DEMO / "model.yaml").is_file():
        return load_bundle(DEMO)
    return load_bundle(export_models(tmp_path_factory.mktemp("bundle")))


@pytest.fixture(scope="module")
def pipeline(bundle: ModelBundle) -> WsiTwoStagePipeline:
    return create(bundle, {"providers": ["CPUExecutionProvider"], "intra_op_threads": 2})


def files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.endswith(".txt")) if path.is_dir() else [path]


def run(pipeline: WsiTwoStagePipeline, path: Path, tmp: Path) -> PipelineResult:
    series = str(pydicom.dcmread(files(path)[0], stop_before_pixels=True).SeriesInstanceUID)
    ctx = PipelineContext(pipeline="wsi-two-stage", study_uid="", series_uid=series, workdir=tmp)
    return pipeline.run(files(path), ctx)


@pytest.fixture(scope="module")
def cmu_results(
    pipeline: WsiTwoStagePipeline, wsi_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, PipelineResult]:
    return {name: run(pipeline, wsi_dir / name, tmp_path_factory.mktemp(name)) for name in CMU}


@pytest.mark.parametrize("name", CMU)
def test_cmu_runs_to_valid_outputs(
    cmu_results: dict[str, PipelineResult], wsi_dir: Path, name: str, tmp_path: Path
) -> None:
    result = cmu_results[name]
    seg, sr = result.datasets
    for ds, fname in ((seg, "seg.dcm"), (sr, "sr.dcm")):
        ds.save_as(tmp_path / fname)
        assert dciodvfy_errors(tmp_path / fname) == []
    source = pydicom.dcmread(files(wsi_dir / name)[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    back = hd.seg.segread(tmp_path / "seg.dcm")
    mpp = result.findings["mpp"]["segmenter_output"]
    assert (back.TotalPixelMatrixColumns, back.TotalPixelMatrixRows) == (
        int(np.ceil(2220 * 0.499 / mpp)),
        int(np.ceil(2967 * 0.499 / mpp)),
    )
    assert len(back.SegmentSequence) == 4
    assert result.files["preview.png"][:4] == b"\x89PNG"
    f = result.findings  # the class is the demo model's call on skin: see the analytic test below
    assert f["classifier_patches"] > 0 and 0.4 < f["tissue_area_mm2"] < 0.9


def test_two_conversions_give_the_same_findings(cmu_results: dict[str, PipelineResult]) -> None:
    a, b = (cmu_results[name].findings for name in CMU)
    assert a["tissue_area_mm2"] == pytest.approx(b["tissue_area_mm2"], rel=0.03)
    assert abs(a["classifier_patches"] - b["classifier_patches"]) <= 0.03 * a["classifier_patches"]
    # (the class is the model's call on skin H&E; not asserted equal across JPEG re-encodes)


@pytest.mark.parametrize(
    "name",
    [
        "ezwsi-camelyon",
        "gcp-wsi2dcm-bone-marrow/jpeg.dicom",
        "gcp-wsi2dcm-bone-marrow/jpeg2000.dicom",
        "gcp-wsi2dcm-bone-marrow/raw.dicom",
    ],
)
def test_low_resolution_slides_are_refused_as_too_coarse(
    pipeline: WsiTwoStagePipeline, wsi_dir: Path, name: str, tmp_path: Path
) -> None:
    # brightfield, but 29 / 16.8 µm/px: outside the bundle's base_mpp (the guard refuses
    # before the slide is opened; the reader would also say "too coarse")
    with pytest.raises(
        InputRefused,
        match=r"base_mpp: found (28\.968|16\.783) µm/px, expected 0\.1–2\.04 µm/px",
    ):
        run(pipeline, wsi_dir / name, tmp_path)


def test_fluorescence_is_refused(pipeline: WsiTwoStagePipeline, wsi_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputRefused, match="illumination: found fluorescence, expected brightfield") as refused:
        run(pipeline, wsi_dir / "wg26-3dhistech-bpaec-fluorescence", tmp_path)
    assert "photometric: found MONOCHROME2" in str(refused.value)


def test_column_major_tcga_is_a_clear_error(pipeline: WsiTwoStagePipeline, wsi_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="cannot open slide with wsidicom.*column-major"):
        run(pipeline, wsi_dir / "pathml-tcga-prostate", tmp_path)


def blueness_twin(path: Path) -> tuple[float, float]:
    """The analytic bundle's two graphs in numpy on the whole slide: the highest classifier
    output over every patch of its grid, and the highest segmenter output (9 × 9
    zero-padded box blur of blueness at 4.0 µm/px) anywhere."""
    with open_slide(files(path)) as slide:
        seg_raster = slide.raster(float(SEG_SPEC["mpp"]))
        seg = ndimage.uniform_filter(blueness(slide.read_raster(seg_raster)).astype(np.float64), 9, mode="constant")
    return float(patch_blueness(files(path)).max()), float(seg.max())


@pytest.fixture(scope="module")
def analytic(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return load_bundle(export_models(tmp_path_factory.mktemp("analytic")))


@pytest.mark.parametrize("dense", [False, True], ids=["gated", "dense"])
@pytest.mark.parametrize("name", CMU)
def test_cmu_class_follows_from_its_pixels(
    analytic: ModelBundle, wsi_dir: Path, name: str, dense: bool, tmp_path: Path
) -> None:
    """With the blueness graphs the slide's answer is derived from its pixels: H&E has no
    patch that is ≥ 30 % saturated blue (B − R > 0.2), so no patch reaches the gate and the
    gated run never calls the segmenter; and no 4 µm pixel has a 9 × 9 neighbourhood that is
    half blue, so even the dense run (segmenter on every tissue tile) finds no deposit."""
    cls_max, seg_max = blueness_twin(wsi_dir / name)
    assert cls_max < THRESHOLDS["gate_probability"] and seg_max < THRESHOLDS["tumour_probability"]
    pipe = create(analytic, {"providers": ["CPUExecutionProvider"], "intra_op_threads": 2, "dense": dense})
    f = run(pipe, wsi_dir / name, tmp_path).findings
    assert (f["class"], f["metastasis"], f["deposits"], f["largest_deposit_mm"]) == ("none", False, [], 0.0)
    assert f["gated_patches"] == f["positive_patches"] == 0
    assert 0 < f["max_probability"] <= cls_max + 1e-4  # the classified patches are a subset of the grid
    assert f["segmenter_max_probability"] <= seg_max + 1e-3  # float16 mask
    if dense:  # every tissue tile (the tissue strip covers about half of the slide)
        assert f["segmenter_calls"] > 0 and f["segmenter_max_probability"] > 0
    else:
        assert f["segmenter_calls"] == 0 and f["segmenter_max_probability"] == 0.0
