"""The committed demo bundle on synthetic slides with known deposits (dicomnode.synth.wsi)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dicomnode.inference.manifest import ModelBundle, load_bundle
from dicomnode.pipelines.base import PipelineContext, PipelineResult
from dicomnode.pipelines.wsi_two_stage import create
from dicomnode.synth.wsi import SyntheticSlide, generate_slide

DEMO = Path(__file__).resolve().parents[3] / "models" / "wsi-ln-demo"
CASES = {
    "micro+itc": [(1.0, 1.1, 0.8), (2.2, 2.0, 0.15)],
    "macro": [(1.5, 1.5, 2.2)],
    "negative": [],
}

pytestmark = [
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return load_bundle(DEMO)


@pytest.fixture(scope="module")
def results(
    bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[SyntheticSlide, PipelineResult]]:
    pipe = create(bundle, {"providers": ["CPUExecutionProvider"], "intra_op_threads": 2})
    out = {}
    for n, (name, deposits) in enumerate(CASES.items()):
        folder = tmp_path_factory.mktemp(name.replace("+", "_"))
        slide = generate_slide(folder / "slide", 40 + n, size_mm=(3.0, 3.0), mpp=1.0, deposits=deposits)
        ctx = PipelineContext(
            pipeline="wsi-two-stage",
            study_uid="",
            workdir=folder,
            series_uid=f"1.2.826.0.1.3680043.8.498.{n + 1}",
        )
        out[name] = (slide, pipe.run(slide.files, ctx))
    return out


def expected_class(slide: SyntheticSlide, bundle: ModelBundle) -> str:
    if not slide.deposits:
        return "none"
    largest = max(d.largest_dimension_mm for d in slide.deposits)
    t = bundle.thresholds
    return "itc" if largest <= t["itc_max_mm"] else "micro" if largest <= t["micro_max_mm"] else "macro"


@pytest.mark.parametrize("name", list(CASES))
def test_slide_class_is_exact(
    results: dict[str, tuple[SyntheticSlide, PipelineResult]], bundle: ModelBundle, name: str
) -> None:
    slide, result = results[name]
    assert result.findings["class"] == expected_class(slide, bundle)


#: Largest tumour nucleus of the synthetic texture: radius 6 µm × size factor ≤ 1.2
#: (``dicomnode.synth.wsi.texture.tumour_rgb``: ``_nuclei(..., 16.0, 6.0, ...)``, ``0.8 + 0.4 · size``).
NUCLEUS_UM = 2 * 6.0 * 1.2


def boundary_wander_mm(px_mm: float) -> float:
    """How far the demo U-Net's tumour boundary may lie from the true circle, per side.

    The segmenter calls a pixel tumour from texture, so where it puts the edge is uncertain
    by the largest texture element it must see whole, one tumour nucleus (14.4 µm), plus the
    one output pixel at the edge that mixes tumour and stroma.
    """
    return NUCLEUS_UM / 1000 + px_mm


@pytest.mark.parametrize("name", ["micro+itc", "macro"])
def test_deposit_sizes(
    results: dict[str, tuple[SyntheticSlide, PipelineResult]], bundle: ModelBundle, name: str
) -> None:
    slide, result = results[name]
    found = result.findings["deposits"]
    px_mm = result.findings["mpp"]["segmenter_output"] / 1000
    wander = boundary_wander_mm(px_mm)
    for truth in sorted(slide.deposits, key=lambda d: -d.largest_dimension_mm):
        near = [
            d
            for d in found
            if abs(d["centroid_mm"][0] - truth.center_mm[0]) < truth.radius_mm
            and abs(d["centroid_mm"][1] - truth.center_mm[1]) < truth.radius_mm
        ]
        assert near, f"deposit at {truth.center_mm} not found"
        best = max(near, key=lambda d: d["largest_dimension_mm"])
        size = truth.largest_dimension_mm
        # Feret diameter of a disc of diameter D sampled on px pixels (centres inside, + 1 px):
        # within D ± px for a perfect mask; each of its two ends may move by `wander`
        assert abs(best["largest_dimension_mm"] - size) <= px_mm + 2 * wander
        # area: within the annulus of width `wander` around the true circle
        ring = math.pi * ((size / 2 + wander) ** 2 - (size / 2) ** 2)
        assert abs(best["area_mm2"] - truth.area_mm2) <= ring


def test_gate_spares_segmenter_calls(
    results: dict[str, tuple[SyntheticSlide, PipelineResult]],
) -> None:
    for _, result in results.values():
        f = result.findings
        assert f["segmenter_calls"] < f["classifier_patches"]
    assert results["negative"][1].findings["segmenter_calls"] <= results["micro+itc"][1].findings["segmenter_calls"]
