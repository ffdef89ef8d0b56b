"""Real test inputs for the WSI pipeline mechanics, and checks of those inputs.

* :func:`write_flat_slide` — a flat-colour brightfield slide (white glass, pink tissue
  ellipse, blue discs = "deposits" of known size) written as a VL WSI DICOM pyramid by
  :func:`dicomnode.synth.wsi.write_pyramid` from a numpy array.
* :func:`export_models` — two tiny deterministic ONNX graphs exported with torch:
  "blueness" b = sigmoid(k·(B − R − 0.2)) per pixel; the classifier returns the patch mean
  of b (the fraction of blue pixels), the segmenter a 9 × 9 zero-padded box blur of b (its
  zero padding makes tile borders wrong unless the pipeline stitches tile centres only).

These are real models run by ONNX Runtime, not fakes: they only happen to be simple enough
that the right answer is known.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

BACKGROUND = (243, 242, 244)
TISSUE = (230, 150, 190)
TUMOUR = (80, 80, 220)
K = 25.0
CLS_SPEC = {
    "file": "classifier.onnx",
    "input_name": "input",
    "output_name": "prob",
    "mpp": 2.5,
    "patch_size": 32,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
}
SEG_SPEC = {
    "file": "segmenter.onnx",
    "input_name": "input",
    "output_name": "prob",
    "mpp": 4.0,
    "patch_size": 64,
    "output_mpp": 4.0,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
}
THRESHOLDS = {
    "gate_probability": 0.3,
    "tumour_probability": 0.5,
    "itc_max_mm": 0.2,
    "micro_max_mm": 2.0,
    "heatmap_bands": [0.5, 0.7, 0.9],
}


@dataclass(frozen=True)
class FlatSlide:
    """A written flat-colour slide and its truth."""

    files: list[Path]
    mpp: float
    size_px: tuple[int, int]
    deposits: list[tuple[float, float, float]]  # (x_mm, y_mm, diameter_mm)
    seed: int  # of its metadata and UIDs (dicomnode.synth.wsi.write_pyramid)


def paint(size_px: tuple[int, int], mpp: float, deposits: list[tuple[float, float, float]]) -> np.ndarray:
    """The level-0 RGB array: pixel centres inside the ellipse / discs get the colours."""
    w, h = size_px
    y = (np.arange(h)[:, None] + 0.5) * mpp / 1000.0
    x = (np.arange(w)[None, :] + 0.5) * mpp / 1000.0
    wmm, hmm = w * mpp / 1000.0, h * mpp / 1000.0
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUND
    tissue = ((x - wmm / 2) / (0.45 * wmm)) ** 2 + ((y - hmm / 2) / (0.45 * hmm)) ** 2 < 1
    img[tissue] = TISSUE
    for cx, cy, d in deposits:
        img[(x - cx) ** 2 + (y - cy) ** 2 < (d / 2) ** 2] = TUMOUR
    return img


def write_flat_slide(
    folder: Path,
    deposits: list[tuple[float, float, float]],
    *,
    size_mm: tuple[float, float] = (4.0, 3.0),
    mpp: float = 1.0,
) -> FlatSlide:
    """Write a flat-colour slide pyramid with wsidicom; return its files and truth."""
    from dicomnode.synth.wsi import write_pyramid

    size = (round(size_mm[0] * 1000 / mpp), round(size_mm[1] * 1000 / mpp))
    array = paint(size, mpp, deposits)
    seed = zlib.crc32(repr((size, mpp, deposits)).encode())  # own UIDs per distinct slide
    folder.mkdir(parents=True, exist_ok=True)
    files = write_pyramid(folder, lambda x, y, w, h: array[y : y + h, x : x + w], size, mpp, seed,
                          fill=BACKGROUND, jpeg_quality=80)
    return FlatSlide(files, mpp, size, deposits, seed)


def _modules() -> tuple[object, object]:
    import torch

    class Blue(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(K * (x[:, 2:3] - x[:, 0:1] - 0.2))

    class Classifier(Blue):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x).mean(dim=(1, 2, 3))

    class Segmenter(Blue):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(super().forward(x), 9, stride=1, padding=4, count_include_pad=True)

    return Classifier().eval(), Segmenter().eval()


def export_models(folder: Path) -> Path:
    """Export both graphs and write a complete wsi-two-stage bundle in ``folder``."""
    import torch

    from dicomnode.inference.manifest import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    for module, spec in zip(_modules(), (CLS_SPEC, SEG_SPEC), strict=True):
        size = int(spec["patch_size"])
        torch.onnx.export(
            module,
            (torch.zeros(2, 3, size, size),),
            str(folder / spec["file"]),
            input_names=["input"],
            output_names=["prob"],
            dynamo=False,
            dynamic_axes={"input": {0: "n"}, "prob": {0: "n"}},
        )
    manifest = {
        "id": "wsi-flat-test",
        "version": "0.0.1",
        "task": "wsi-two-stage",
        "backend": "onnx",
        "intended_use": "pipeline tests only",
        "not_for_clinical_use": True,
        "files": [{"path": s["file"], "sha256": sha256_file(folder / s["file"])} for s in (CLS_SPEC, SEG_SPEC)],
        "input": {"classifier": CLS_SPEC, "segmenter": SEG_SPEC},
        "labels": {"tumour": {"code": "14799000", "scheme": "SCT", "meaning": "Neoplasm, Secondary"}},
        "thresholds": THRESHOLDS,
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def blueness(rgb: np.ndarray) -> np.ndarray:
    """numpy twin of the graphs' per-pixel blueness (for expectations)."""
    x = rgb.astype(np.float32) / 255.0
    return 1.0 / (1.0 + np.exp(-K * (x[..., 2] - x[..., 0] - 0.2)))


def patch_blueness(files: list[Path]) -> np.ndarray:
    """numpy twin of the classifier graph on its whole patch grid of a slide.

    Patches of ``CLS_SPEC["patch_size"]`` px at ``CLS_SPEC["mpp"]`` from the origin, as the
    pipeline cuts them; reads past the total pixel matrix are white, as the pipeline's.
    Returns the ``(rows, cols)`` patch means of blueness.
    """
    from dicomnode.dicom.slide import open_slide

    patch = int(CLS_SPEC["patch_size"])
    with open_slide(files) as slide:
        raster = slide.raster(float(CLS_SPEC["mpp"]))
        rows, cols = -(-raster.height // patch), -(-raster.width // patch)
        b = blueness(slide.read(raster, 0, 0, cols * patch, rows * patch))
    return np.asarray(b.reshape(rows, patch, cols, patch).mean(axis=(1, 3)))


def test_flat_slide_opens_with_known_levels(tmp_path: Path) -> None:
    from dicomnode.dicom.slide import open_slide

    slide = write_flat_slide(tmp_path / "s", [(0.5, 0.5, 0.5)], size_mm=(1.0, 1.0))
    with open_slide(slide.files) as opened:
        assert [lv.mpp for lv in opened.levels][:3] == pytest.approx([1.0, 2.0, 4.0])
        centre = opened.read(opened.raster(1.0), 490, 490, 20, 20)
        assert np.abs(centre.astype(int) - TUMOUR).max() < 12
        assert math.isclose(opened.size_um[0], 1000.0)


def test_exported_models_compute_blueness(tmp_path: Path) -> None:
    from dicomnode.inference.manifest import load_bundle
    from dicomnode.inference.onnx import OnnxModel

    bundle = load_bundle(export_models(tmp_path / "m"))
    cls = OnnxModel(
        bundle.path("classifier.onnx"),
        bundle.input["classifier"],
        providers=["CPUExecutionProvider"],
    )
    seg = OnnxModel(bundle.path("segmenter.onnx"), bundle.input["segmenter"], providers=["CPUExecutionProvider"])
    patches = np.zeros((3, 32, 32, 3), np.uint8)
    patches[0], patches[1], patches[2] = TUMOUR, TISSUE, TISSUE
    patches[2, :, :8] = TUMOUR  # a quarter blue
    assert cls.predict(patches) == pytest.approx([1.0, 0.0, 0.25], abs=0.01)
    tile = np.zeros((1, 64, 64, 3), np.uint8)
    tile[:] = TUMOUR
    out = seg.predict(tile)[0]
    assert out.shape == (64, 64)
    assert out[32, 32] == pytest.approx(1.0, abs=1e-3)
    assert out[0, 0] == pytest.approx(25 / 81, abs=1e-3)  # zero padding at the tile corner
