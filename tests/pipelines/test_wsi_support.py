"""Real test inputs for the WSI pipeline mechanics, and checks of those inputs.

* :func:`write_flat_slide` — a flat-colour brightfield slide (white glass, pink tissue
  ellipse, blue discs = "deposits" of known size) written as a VL WSI DICOM pyramid by
  wsidicom from a numpy array (the shared reference ``make_wsi.py`` recipe).
* :func:`export_models` — two tiny deterministic ONNX graphs exported with torch:
  "blueness" b = sigmoid(k·(B − R − 0.2)) per pixel; the classifier returns the patch mean
  of b (the fraction of blue pixels), the segmenter a 9 × 9 zero-padded box blur of b (its
  zero padding makes tile borders wrong unless the pipeline stitches tile centres only).

These are real models run by ONNX Runtime, not fakes: they only happen to be simple enough
that the right answer is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydicom.uid import JPEGBaseline8Bit, generate_uid

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
    from wsidicom import WsiDicom

    size = (round(size_mm[0] * 1000 / mpp), round(size_mm[1] * 1000 / mpp))
    source = _numpy_source(paint(size, mpp, deposits), mpp)
    folder.mkdir(parents=True, exist_ok=True)
    with WsiDicom(source) as wsi:
        files = wsi.save(folder, add_missing_levels=True, workers=1)
    return FlatSlide(sorted(Path(f) for f in files), mpp, size, deposits)


def _numpy_source(array: np.ndarray, mpp: float) -> object:
    """A wsidicom Source serving ``array`` as JPEG tiles (shared reference make_wsi.py)."""
    from wsidicom import ImageData
    from wsidicom.codec import Encoder
    from wsidicom.geometry import Point, Size, SizeMm
    from wsidicom.instance import WsiInstance
    from wsidicom.metadata import (
        Equipment,
        Image,
        ImageType,
        Label,
        OpticalPath,
        Patient,
        Pyramid,
        Series,
        Slide,
        SlideSample,
        Study,
        WsiMetadata,
    )
    from wsidicom.metadata.schema.dicom import WsiMetadataDicomSchema
    from wsidicom.source import Source

    tile = 256

    class Data(ImageData):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(Encoder.create(JPEGBaseline8Bit, 8, "YBR_FULL_422"))

        transfer_syntax = property(lambda self: JPEGBaseline8Bit)
        image_size = property(lambda self: Size(array.shape[1], array.shape[0]))
        tile_size = property(lambda self: Size(tile, tile))
        pixel_spacing = property(lambda self: SizeMm(mpp / 1000, mpp / 1000))
        imaged_size = property(lambda self: SizeMm(array.shape[1] * mpp / 1000, array.shape[0] * mpp / 1000))
        samples_per_pixel = property(lambda self: 3)
        photometric_interpretation = property(lambda self: "YBR_FULL_422")
        bits = property(lambda self: 8)
        image_coordinate_system = property(lambda self: None)
        thread_safe = property(lambda self: True)
        lossy_compression = property(lambda self: None)
        transcoder = property(lambda self: None)

        def get_decoded_tile(self, p: Point, z: float, path: str, cache: bool = True) -> np.ndarray:
            out = np.empty((tile, tile, 3), np.uint8)
            out[:] = BACKGROUND
            blk = array[p.y * tile : (p.y + 1) * tile, p.x * tile : (p.x + 1) * tile]
            out[: blk.shape[0], : blk.shape[1]] = blk
            return out

        def get_encoded_tile(self, p: Point, z: float, path: str) -> bytes:
            return self.encoder.encode(self.get_decoded_tile(p, z, path))

    meta = WsiMetadata(
        study=Study(uid=generate_uid(), identifier="S1", description="flat test slide"),
        series=Series(uid=generate_uid(), number=1),
        patient=Patient(name="Flat^Slide", identifier="FLAT1"),
        equipment=Equipment(
            manufacturer="tests",
            model_name="numpy",
            device_serial_number="0",
            software_versions=["0"],
        ),
        slide=Slide(identifier="SLIDE1", samples=[SlideSample(identifier="S1", uid=generate_uid())]),
        pyramid=Pyramid(image=Image(), optical_paths=[OpticalPath(identifier="0")], uid=generate_uid()),
        label=Label(),
        frame_of_reference_uid=generate_uid(),
        dimension_organization_uids=[generate_uid()],
    )
    dataset = WsiMetadataDicomSchema().dump(meta, ImageType.VOLUME, True)
    level0 = WsiInstance.create_instance(Data(), dataset, ImageType.VOLUME, 0)

    class NumpySource(Source):  # type: ignore[misc]
        base_dataset = property(lambda self: level0.dataset)
        level_instances = property(lambda self: [level0])
        label_instances = property(lambda self: [])
        overview_instances = property(lambda self: [])
        thumbnail_instances = property(lambda self: [])
        annotation_instances = property(lambda self: [])

        def close(self) -> None:
            pass

    return NumpySource()


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


def test_flat_slide_opens_with_known_levels(tmp_path: Path) -> None:
    from dicomnode.pipelines.wsi_slide import open_slide

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
