"""ONNX Runtime adapter: numbers equal torch's, providers, spec checks, the demo bundle."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from dicomnode.errors import ModelError  # noqa: E402
from dicomnode.inference.manifest import load_bundle  # noqa: E402
from dicomnode.inference.onnx import OnnxModel, is_available, select_providers  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class TinyClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(torch.relu(self.conv(x)).mean((2, 3)))).reshape(-1)


class TinySegmenter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


def _export(module: torch.nn.Module, path: Path, size: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(
        module.eval(),
        (torch.rand(2, 3, size, size),),
        dynamo=True,
        opset_version=18,
        input_names=["input"],
        output_names=["prob"],
        dynamic_shapes=({0: batch},),
    )
    program.save(str(path))


def _spec(size: int, **over: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "input_name": "input",
        "output_name": "prob",
        "mpp": 2.0,
        "patch_size": size,
        "mean": MEAN,
        "std": STD,
    }
    spec.update(over)
    return spec


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("onnx")
    clf, seg = TinyClassifier(), TinySegmenter()
    _export(clf, folder / "clf.onnx", 16)
    _export(seg, folder / "seg.onnx", 16)
    return {
        "clf": clf,
        "seg": seg,
        "clf_path": folder / "clf.onnx",
        "seg_path": folder / "seg.onnx",
    }


def _torch_reference(module: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    x = (batch.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
    with torch.no_grad():
        return module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def test_classifier_matches_torch(graphs: dict) -> None:
    batch = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    model = OnnxModel(graphs["clf_path"], _spec(16), providers=["CPUExecutionProvider"])
    got = model.predict(batch)
    assert got.shape == (5,) and got.dtype == np.float32
    np.testing.assert_allclose(got, _torch_reference(graphs["clf"], batch), rtol=1e-5, atol=1e-6)
    assert model.predict(batch[:0]).shape == (0,)
    assert model.mpp == 2.0 and model.patch_size == 16


def test_segmenter_channel_is_squeezed(graphs: dict) -> None:
    batch = np.random.default_rng(2).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    model = OnnxModel(graphs["seg_path"], _spec(16))
    got = model.predict(batch)
    assert got.shape == (3, 16, 16)
    np.testing.assert_allclose(got, _torch_reference(graphs["seg"], batch)[:, 0], atol=1e-6)


def test_provider_selection_and_logging(graphs: dict, caplog: pytest.LogCaptureFixture) -> None:
    available = ort.get_available_providers()
    assert is_available()
    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert select_providers(wanted) == [p for p in wanted if p in available]
    with caplog.at_level(logging.WARNING, logger="dicomnode.inference.onnx"):
        assert select_providers(["NoSuchExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider" in caplog.text
    with caplog.at_level(logging.INFO, logger="dicomnode.inference.onnx"):
        model = OnnxModel(graphs["clf_path"], _spec(16))
    assert model.providers and set(model.providers) <= set(available)
    assert f"providers {model.providers}" in caplog.text


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"input_name": "pixels"}, "graph has no input 'pixels'"),
        ({"output_name": "logits"}, "graph has no output 'logits'"),
        ({"patch_size": 32}, r"shape \['batch', 3, 16, 16\].*patch_size 32"),
        ({"mean": [0.5, 0.5]}, "'mean' must be 3 numbers"),
        ({"std": [0.2, 0.0, 0.2]}, "'std' must be positive"),
    ],
)
def test_spec_mismatch_is_refused(graphs: dict, over: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match) as err:
        OnnxModel(graphs["clf_path"], _spec(16, **over))
    assert "clf.onnx" in str(err.value)


def test_missing_key_file_and_garbage_are_refused(graphs: dict, tmp_path: Path) -> None:
    spec = _spec(16)
    del spec["mpp"]
    with pytest.raises(ModelError, match="clf.onnx: input spec lacks key.*mpp"):
        OnnxModel(graphs["clf_path"], spec)
    with pytest.raises(ModelError, match="nothere.onnx not found"):
        OnnxModel(tmp_path / "nothere.onnx", _spec(16))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="bad.onnx: ONNX Runtime cannot load it"):
        OnnxModel(bad, _spec(16))


def test_wrong_batch_dtype_or_shape_is_refused(graphs: dict) -> None:
    model = OnnxModel(graphs["clf_path"], _spec(16))
    with pytest.raises(ModelError, match="clf.onnx: expects a uint8 RGB batch, got float32"):
        model.predict(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(ModelError, match=r"batch shape \(1, 16, 16, 4\).*\(N, 16, 16, 3\)"):
        model.predict(np.zeros((1, 16, 16, 4), np.uint8))


def _read_level(folder: Path, mpp: float) -> np.ndarray:
    from wsidicom import WsiDicom

    with WsiDicom.open(folder) as wsi:
        level = next(lv for lv in wsi.levels if abs(lv.mpp.width - mpp) < 1e-3)
        size = (level.size.width, level.size.height)
        return np.asarray(wsi.read_region((0, 0), level.level, size).convert("RGB"))


def _windows(mask: np.ndarray, size: int) -> np.ndarray:
    """Fraction of ``mask`` in each non-overlapping ``size``² window."""
    rows, cols = mask.shape[0] // size, mask.shape[1] // size
    return mask[: rows * size, : cols * size].reshape(rows, size, cols, size).mean((1, 3))


def test_demo_bundle_separates_tumour_from_normal(tmp_path: Path) -> None:
    from dicomnode.synth.wsi import generate_slide

    bundle = load_bundle(REPO / "models" / "wsi-ln-demo")
    assert bundle.task == "wsi-two-stage" and bundle.backend == "onnx"
    assert bundle.not_for_clinical_use
    slide = generate_slide(tmp_path / "s", 4242, size_mm=(1.5, 1.5), deposits=[(0.8, 0.7, 0.6)])
    spec = bundle.input["classifier"]
    clf = OnnxModel(bundle.path(spec["file"]), spec)
    size = clf.patch_size
    image = _read_level(slide.folder, clf.mpp)
    tumour = _windows(slide.mask(clf.mpp), size)
    tissue = _windows(slide.tissue_mask(clf.mpp), size)
    patches = image[: tumour.shape[0] * size, : tumour.shape[1] * size]
    grid = patches.reshape(tumour.shape[0], size, tumour.shape[1], size, 3).swapaxes(1, 2)
    prob = clf.predict(grid.reshape(-1, size, size, 3)).reshape(tumour.shape)
    gate = float(bundle.thresholds["gate_probability"])
    assert prob[tumour > 0.9].min() > gate  # every patch full of tumour passes the gate
    assert prob[(tissue > 0.9) & (tumour == 0)].max() < gate  # no normal patch does
    sspec = bundle.input["segmenter"]
    seg = OnnxModel(bundle.path(sspec["file"]), sspec)
    s_img, s_mask = _read_level(slide.folder, seg.mpp), slide.mask(seg.mpp)
    r, c = (int(v * 1000 / seg.mpp) - seg.patch_size // 2 for v in (0.7, 0.8))
    tile = s_img[r : r + seg.patch_size, c : c + seg.patch_size][None]
    out = seg.predict(tile)[0] >= float(bundle.thresholds["tumour_probability"])
    truth = s_mask[r : r + seg.patch_size, c : c + seg.patch_size]
    assert 2 * (out & truth).sum() / (out.sum() + truth.sum()) > 0.8


def _helper_graph(path: Path, elem_type: int) -> None:
    """A hand-built graph ``input (elem_type) -> Cast(float) -> prob``, shape kept."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Cast", ["input"], ["prob"], to=TensorProto.FLOAT)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", elem_type, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def test_graph_input_dtype_mismatch_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto

    _helper_graph(tmp_path / "u8.onnx", TensorProto.UINT8)
    with pytest.raises(ModelError, match=r"u8.onnx: input 'input' is tensor\(uint8\)"):
        OnnxModel(tmp_path / "u8.onnx", _spec(16))


def test_unexpected_output_shape_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto

    _helper_graph(tmp_path / "id.onnx", TensorProto.FLOAT)
    model = OnnxModel(tmp_path / "id.onnx", _spec(16))
    with pytest.raises(ModelError, match=r"id.onnx: output 'prob' has shape \(2, 3, 16, 16\)"):
        model.predict(np.zeros((2, 16, 16, 3), np.uint8))
