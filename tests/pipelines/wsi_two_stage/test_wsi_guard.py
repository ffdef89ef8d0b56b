"""The wsi-two-stage guard: illumination, photometric, base µm/px and tissue area of the demo
bundle's requirements, each with a slide that passes and one that fails (real slides of the
shared test data and synthetic slides)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
import yaml

from dicomnode.errors import InputRefused
from dicomnode.inference.manifest import ModelBundle, load_bundle
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.guard import GuardReport, check_files
from dicomnode.pipelines.wsi_two_stage import create
from dicomnode.synth.wsi import generate_slide

DEMO = Path(__file__).resolve().parents[3] / "models" / "wsi-ln-demo"


def _bundle(tmp_path: Path, **changes: object) -> ModelBundle:
    """The demo bundle with some requirements changed."""
    root = tmp_path / "bundle"
    shutil.copytree(DEMO, root)
    data = yaml.safe_load((root / "model.yaml").read_text())
    data["requirements"] = {**data["requirements"], **changes}
    (root / "model.yaml").write_text(yaml.safe_dump(data))
    return load_bundle(root)


def _check(bundle: ModelBundle, files: list[Path]) -> GuardReport:
    report = check_files("wsi-two-stage", bundle, files)
    assert report is not None
    return report


def _failed(report: GuardReport) -> set[str]:
    return {v.requirement for v in report.failed}


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_slide(tmp_path_factory.mktemp("slide"), 11, size_mm=(1.5, 1.5), mpp=1.0, deposits=[]).files


def _real(wsi_dir: Path, name: str) -> list[Path]:
    return sorted(p for p in (wsi_dir / name).iterdir() if p.is_file() and not p.name.endswith(".txt"))


def test_synthetic_and_real_brightfield_slides_are_accepted(slide_files: list[Path], wsi_dir: Path) -> None:
    demo = load_bundle(DEMO)
    synthetic = _check(demo, slide_files)
    assert not synthetic.refused and synthetic.measures["illumination"] == ["brightfield"]
    assert synthetic.measures["base_mpp"] == 1.0 and synthetic.measures["tissue_mm2"] > 0.25
    cmu = _check(demo, _real(wsi_dir, "cmu1-small-region-pyramid-wsidicomizer"))
    assert not cmu.refused and cmu.measures["base_mpp"] == pytest.approx(0.499)


def test_fluorescence_and_coarse_slides_are_refused(wsi_dir: Path) -> None:
    demo = load_bundle(DEMO)
    fluorescence = _check(demo, _real(wsi_dir, "wg26-3dhistech-bpaec-fluorescence"))
    assert _failed(fluorescence) == {"illumination", "photometric"}
    coarse = _check(demo, _real(wsi_dir, "ezwsi-camelyon"))
    assert _failed(coarse) == {"base_mpp"} and "found 28.968 µm/px" in coarse.reason()


def test_photometric_and_resolution_limits_follow_the_bundle(tmp_path: Path, slide_files: list[Path]) -> None:
    rgb_only = _check(_bundle(tmp_path / "a", photometric=["RGB"]), slide_files)  # the phantom is YBR_FULL_422
    assert _failed(rgb_only) == {"photometric"}
    finer = _check(_bundle(tmp_path / "b", base_mpp=[0.1, 0.6]), slide_files)  # the phantom is 1.0 µm/px
    assert _failed(finer) == {"base_mpp"}


def test_too_little_tissue_is_refused_before_the_classifier(tmp_path: Path, slide_files: list[Path]) -> None:
    bundle = _bundle(tmp_path, min_tissue_mm2=50.0)
    assert _failed(_check(bundle, slide_files)) == {"min_tissue_mm2"}
    pipeline = create(bundle, {"providers": ["CPUExecutionProvider"]})
    series = str(pydicom.dcmread(slide_files[0], stop_before_pixels=True).SeriesInstanceUID)
    ctx = PipelineContext(pipeline="wsi-two-stage", study_uid="", series_uid=series, workdir=tmp_path)
    with pytest.raises(InputRefused, match=r"min_tissue_mm2: found 1\.\d+ mm², expected ≥ 50 mm²"):
        pipeline.run(slide_files, ctx)
    accepted = create(load_bundle(DEMO), {"providers": ["CPUExecutionProvider"]}).run(slide_files, ctx)
    assert accepted.findings["input"]["accepted"] is True
    assert accepted.findings["input"]["measures"]["tissue_mm2"] == pytest.approx(accepted.findings["tissue_area_mm2"],
                                                                                 rel=0.01)
