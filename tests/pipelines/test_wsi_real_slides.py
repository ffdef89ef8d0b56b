"""wsi-two-stage on every real slide of the shared test data.

With the demo bundle (models/wsi-ln-demo) once it is committed, else with the tiny test
bundle of test_wsi_support: the point here is how each real file is handled (valid
outputs or a clear refusal), not the model's answer.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from test_wsi_support import export_models

from dicomnode.errors import PipelineError
from dicomnode.inference.manifest import ModelBundle, load_bundle
from dicomnode.outputs.validate import dciodvfy_available, dciodvfy_errors
from dicomnode.pipelines.base import PipelineContext, PipelineResult
from dicomnode.pipelines.wsi_two_stage import WsiTwoStagePipeline, create

WSI = Path("/work/shared/testdata/wsi")
DEMO = Path(__file__).resolve().parents[2] / "models" / "wsi-ln-demo"
CMU = ["cmu1-small-region-pyramid-wsidicomizer", "cmu1-small-region-pyramid-wsi2dcm"]

pytestmark = pytest.mark.skipif(not WSI.is_dir(), reason="shared WSI test data not present")


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
def cmu_results(pipeline: WsiTwoStagePipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, PipelineResult]:
    return {name: run(pipeline, WSI / name, tmp_path_factory.mktemp(name)) for name in CMU}


@pytest.mark.parametrize("name", CMU)
def test_cmu_runs_to_valid_outputs(cmu_results: dict[str, PipelineResult], name: str, tmp_path: Path) -> None:
    result = cmu_results[name]
    seg, sr = result.datasets
    for ds, fname in ((seg, "seg.dcm"), (sr, "sr.dcm")):
        ds.save_as(tmp_path / fname)
        if dciodvfy_available():
            assert dciodvfy_errors(tmp_path / fname) == []
    source = pydicom.dcmread(files(WSI / name)[0], stop_before_pixels=True)
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
    f = result.findings
    assert f["class"] in {"none", "itc", "micro", "macro"}
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
    pipeline: WsiTwoStagePipeline, name: str, tmp_path: Path
) -> None:
    # brightfield and opened by wsidicom, but 29 / 16.8 µm/px: no level fine enough
    with pytest.raises(
        PipelineError,
        match=r"slide too coarse for the model: finest level is "
        r"(28\.969|16\.783) µm/px",
    ):
        run(pipeline, WSI / name, tmp_path)


def test_fluorescence_is_unsupported(pipeline: WsiTwoStagePipeline, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="unsupported: not a brightfield RGB slide"):
        run(pipeline, WSI / "wg26-3dhistech-bpaec-fluorescence", tmp_path)


def test_column_major_tcga_is_a_clear_error(pipeline: WsiTwoStagePipeline, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="cannot open slide with wsidicom.*column-major"):
        run(pipeline, WSI / "pathml-tcga-prostate", tmp_path)
