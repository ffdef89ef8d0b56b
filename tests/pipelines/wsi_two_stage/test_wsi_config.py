"""Manifest spec and thresholds of wsi-two-stage bundles: what is refused, and how."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_wsi_support import THRESHOLDS

from dicomnode.errors import ModelError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.wsi_two_stage.config import WsiSettings, model_spec, thresholds

CLS = {"file": "c.onnx", "mpp": 2.0, "patch_size": 64}
SEG = {"file": "s.onnx", "mpp": 4.0, "patch_size": 128, "output_mpp": 4.0}


def bundle(inp: dict[str, Any] | None = None, thr: dict[str, Any] | None = None) -> ModelBundle:
    return ModelBundle(
        root=Path("."),
        id="b",
        version="1",
        task="wsi-two-stage",
        backend="onnx",
        files={"c.onnx": "0", "s.onnx": "0"},
        intended_use="tests",
        input=inp if inp is not None else {"classifier": CLS, "segmenter": SEG},
        thresholds=thr if thr is not None else THRESHOLDS,
    )


def test_valid_manifest() -> None:
    b = bundle()
    cls, seg = model_spec(b, "classifier"), model_spec(b, "segmenter")
    assert (cls.mpp, cls.patch_size, cls.output_mpp) == (2.0, 64, None)
    assert (seg.mpp, seg.patch_size, seg.output_mpp) == (4.0, 128, 4.0)
    t = thresholds(b)
    assert t.heatmap_bands == (0.5, 0.7, 0.9) and t.micro_max_mm == 2.0


@pytest.mark.parametrize(
    ("inp", "match"),
    [
        ({"classifier": CLS}, "needs a mapping 'input.segmenter'"),
        ({"classifier": CLS, "segmenter": {**SEG, "output_mpp": None}}, "output_mpp must be"),
        ({"classifier": {**CLS, "patch_size": 64.5}, "segmenter": SEG}, "patch_size must be an int"),
        ({"classifier": {**CLS, "file": "x.onnx"}, "segmenter": SEG}, "'x.onnx' is not listed"),
    ],
)
def test_bad_input_sections(inp: dict[str, Any], match: str) -> None:
    b = bundle(inp)
    with pytest.raises(ModelError, match=match):
        model_spec(b, "classifier")
        model_spec(b, "segmenter")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"heatmap_bands": [0.9, 0.7, 0.5]}, "three increasing"),
        ({"heatmap_bands": [0.5, 0.7]}, "three increasing"),
        ({"gate_probability": 1.2}, "out of range"),
        ({"itc_max_mm": 3.0}, "out of range"),
        ({"tumour_probability": None}, "tumour_probability must be a number"),
    ],
)
def test_bad_thresholds(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        thresholds(bundle(thr={**THRESHOLDS, **change}))


def test_settings_defaults_and_coercion() -> None:
    s = WsiSettings.from_mapping({"providers": ["CPUExecutionProvider"], "tissue_mpp": 16})
    assert s.providers == ("CPUExecutionProvider",) and s.tissue_mpp == 16.0
    assert WsiSettings.from_mapping({}) == WsiSettings()
