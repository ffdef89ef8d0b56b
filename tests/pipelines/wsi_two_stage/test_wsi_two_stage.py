"""wsi-two-stage end to end on flat-colour slides with known deposits and tiny real ONNX models."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from scipy import ndimage
from test_wsi_support import THRESHOLDS, FlatSlide, blueness, export_models, patch_blueness, write_flat_slide

from dicomnode.dicom.slide import open_slide
from dicomnode.errors import ConfigError
from dicomnode.inference.manifest import ModelBundle, load_bundle
from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.pipelines import create_pipeline
from dicomnode.pipelines.base import PipelineContext, PipelineResult
from dicomnode.pipelines.wsi_two_stage import WsiTwoStagePipeline, create

OUT_MPP = 4.0
CPU = {"providers": ["CPUExecutionProvider"], "intra_op_threads": 1, "read_workers": 2}
POSITIVE = [(1.2, 1.5, 0.9), (2.9, 1.5, 0.15)]  # micro 0.9 mm, ITC 0.15 mm


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return load_bundle(export_models(tmp_path_factory.mktemp("bundle")))


@pytest.fixture(scope="module")
def positive(tmp_path_factory: pytest.TempPathFactory) -> FlatSlide:
    return write_flat_slide(tmp_path_factory.mktemp("pos"), POSITIVE)


@pytest.fixture(scope="module")
def pipeline(bundle: ModelBundle) -> WsiTwoStagePipeline:
    return create(bundle, CPU)


def context(tmp_path: Path, series: str = "1.2.3.4.5") -> PipelineContext:
    return PipelineContext(
        pipeline="wsi-two-stage",
        study_uid="1.2.3",
        series_uid=series,
        workdir=tmp_path,
        job_id="test",
    )


@pytest.fixture(scope="module")
def positive_result(
    pipeline: WsiTwoStagePipeline, positive: FlatSlide, tmp_path_factory: pytest.TempPathFactory
) -> PipelineResult:
    return pipeline.run(positive.files, context(tmp_path_factory.mktemp("run")))


def test_deposits_sizes_and_class(positive_result: PipelineResult) -> None:
    f: dict[str, Any] = dict(positive_result.findings)
    assert f["class"] == "micro" and f["metastasis"] is True
    assert len(f["deposits"]) == 2
    for dep, (cx, cy, dia) in zip(f["deposits"], POSITIVE, strict=True):
        assert abs(dep["largest_dimension_mm"] - dia) <= OUT_MPP / 1000 + 1e-9
        assert dep["centroid_mm"] == pytest.approx([cx, cy], abs=OUT_MPP / 1000)
        # area within one output pixel along the perimeter
        tol = math.pi * dia * OUT_MPP / 1000
        assert abs(dep["area_mm2"] - math.pi * dia**2 / 4) <= tol
    assert [d["class"] for d in f["deposits"]] == ["micro", "itc"]
    assert f["largest_deposit_mm"] == f["deposits"][0]["largest_dimension_mm"]


def test_slide_level_counts(positive: FlatSlide, positive_result: PipelineResult) -> None:
    f = positive_result.findings
    ellipse_mm2 = math.pi * 1.8 * 1.35
    assert f["tissue_area_mm2"] == pytest.approx(ellipse_mm2, rel=0.03)
    patch_mm2 = (32 * 2.5 / 1000) ** 2
    assert f["classifier_patches"] == pytest.approx(ellipse_mm2 / patch_mm2, rel=0.1)
    # positive patches: exactly those whose blueness mean (the classifier graph, in numpy on
    # the same pixels) reaches the threshold; the discs lie well inside the tissue, so every
    # such patch is a classified one. No patch mean is near the threshold (no float ties).
    means = patch_blueness(positive.files)
    threshold = THRESHOLDS["tumour_probability"]
    assert np.abs(means - threshold).min() > 0.01
    assert f["positive_patches"] == int((means >= threshold).sum())
    assert f["max_probability"] == pytest.approx(1.0, abs=0.01)
    assert 0 < f["segmenter_calls"] < f["classifier_patches"]


def test_outputs_are_valid_and_match_findings(positive_result: PipelineResult, tmp_path: Path) -> None:
    from dicomnode.worker_child import write_result

    seg, sr = positive_result.datasets
    assert positive_result.files["preview.png"][:8] == b"\x89PNG\r\n\x1a\n"
    # written as the worker writes them: the read-back checks' bytes, not a second encode
    assert set(positive_result.encoded) == {seg.SOPInstanceUID, sr.SOPInstanceUID}
    write_result(positive_result, tmp_path)
    seg_path, sr_path = tmp_path / f"SEG-{seg.SOPInstanceUID}.dcm", tmp_path / f"SR-{sr.SOPInstanceUID}.dcm"
    assert dciodvfy_errors(seg_path) == []
    assert dciodvfy_errors(sr_path) == []
    back = hd.seg.segread(seg_path)
    tumour = back.get_total_pixel_matrix(segment_numbers=[1])[..., 0] > 0
    assert ndimage.label(tumour, np.ones((3, 3)))[1] == 2
    area = tumour.sum() * (OUT_MPP / 1000) ** 2
    assert area == pytest.approx(positive_result.findings["tumour_area_mm2"], abs=1e-5)
    groups = hd.sr.srread(sr_path).content.get_planar_roi_measurement_groups()
    assert len(groups) == 2


def test_uids_are_deterministic(
    pipeline: WsiTwoStagePipeline,
    bundle: ModelBundle,
    positive_result: PipelineResult,
    tmp_path: Path,
) -> None:
    ctx = context(tmp_path)
    seg, sr = positive_result.datasets
    assert seg.SOPInstanceUID == ctx.uid(bundle, "seg.instance")
    assert sr.SOPInstanceUID == ctx.uid(bundle, "sr.instance")
    assert seg.SeriesInstanceUID != sr.SeriesInstanceUID


def test_dense_finds_the_same_deposits_with_more_calls(
    bundle: ModelBundle, positive: FlatSlide, positive_result: PipelineResult, tmp_path: Path
) -> None:
    dense = create(bundle, {**CPU, "dense": True}).run(positive.files, context(tmp_path))
    assert dense.findings["deposits"] == positive_result.findings["deposits"]
    assert dense.findings["segmenter_calls"] > 2 * positive_result.findings["segmenter_calls"]
    assert dense.findings["dense"] is True


def test_stitched_mask_has_no_seams(bundle: ModelBundle, positive: FlatSlide) -> None:
    pipe = create(bundle, {**CPU, "dense": True})
    with open_slide(positive.files) as slide:
        analysis = pipe.analyse(slide)
        whole = slide.read_raster(slide.raster(OUT_MPP))
    # the same graph applied to the whole raster at once (no tiles): blur of blueness
    expected = ndimage.uniform_filter(blueness(whole).astype(np.float64), 9, mode="constant")
    got = analysis.segmenter.prob
    assert got.shape == expected.shape
    covered = got > 0  # dense mode covers all tissue tiles
    inner = np.zeros_like(covered)
    inner[8:-8, 8:-8] = True
    diff = np.abs(got - expected)[covered & inner]
    assert covered.mean() > 0.5
    assert diff.max() < 1e-3


def test_negative_slide(pipeline: WsiTwoStagePipeline, tmp_path: Path) -> None:
    slide = write_flat_slide(tmp_path / "neg", [], size_mm=(2.0, 1.5))
    result = pipeline.run(slide.files, context(tmp_path, "1.2.3.4.6"))
    f = result.findings
    assert f["class"] == "none" and f["deposits"] == [] and f["positive_patches"] == 0
    assert f["segmenter_calls"] == 0 and f["largest_deposit_mm"] == 0.0
    seg, sr = result.datasets
    seg.save_as(tmp_path / "seg.dcm")
    sr.save_as(tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    assert "Absent" in str(hd.sr.srread(tmp_path / "sr.dcm"))


def test_registry_builds_it(bundle: ModelBundle) -> None:
    pipe = create_pipeline("wsi-two-stage", bundle, CPU)
    assert isinstance(pipe, WsiTwoStagePipeline) and pipe.name == "wsi-two-stage"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"dense": "yes"}, "settings.dense"),
        ({"batchsize": 3}, "settings.batchsize"),
        ({"providers": "CPU"}, "settings.providers"),
        ({"segmenter_margin": 64}, "settings.segmenter_margin"),
        ({"batch_size": 0}, "settings.batch_size"),
        ({"tissue_mpp": 0.0}, "settings.tissue_mpp"),
        ({"min_tissue_fraction": 1.5}, "settings.min_tissue_fraction"),
    ],
)
def test_bad_settings_are_refused(bundle: ModelBundle, settings: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        create(bundle, settings)


def test_patient_study_specimen_come_from_the_source(positive: FlatSlide, positive_result: PipelineResult) -> None:
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in positive.files]
    source = max(heads, key=lambda h: int(h.TotalPixelMatrixColumns))
    for out in positive_result.datasets:
        for kw in ("PatientName", "PatientID", "StudyInstanceUID"):
            assert out.get(kw) == source.get(kw), kw
    seg = positive_result.datasets[0]
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ContainerIdentifier == source.ContainerIdentifier == f"SYNTH-SLIDE-{positive.seed}"
    assert seg.SpecimenDescriptionSequence[0].SpecimenUID == source.SpecimenDescriptionSequence[0].SpecimenUID
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
