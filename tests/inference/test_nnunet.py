"""NnUNetRunner against the committed demo bundle (nnU-Net v2 on CPU)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dicomnode.errors import ModelError
from dicomnode.inference.manifest import load_bundle
from dicomnode.inference.nnunet import NnUNetRunner
from dicomnode.synth.mr import generate_case

BUNDLE = Path(__file__).resolve().parents[2] / "models" / "lln-t2-demo"
CLI = Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"


@pytest.fixture(scope="module")
def runner() -> NnUNetRunner:
    return NnUNetRunner(load_bundle(BUNDLE), device="cpu", threads=2)


def _series_image(tmp_path: Path, seed: int, oblique: float) -> tuple[sitk.Image, object]:
    """Write a synthetic case as DICOM and read it back as SimpleITK reads a series."""
    case = generate_case(seed, oblique_deg=oblique)
    case.write(tmp_path / "dicom")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "dicom")))
    return reader.Execute(), case


def test_runner_equals_nnunet_cli(tmp_path: Path, runner: NnUNetRunner) -> None:
    image, _ = _series_image(tmp_path, 9100, oblique=5.0)
    (tmp_path / "in").mkdir()
    sitk.WriteImage(image, str(tmp_path / "in" / "case_0000.nii.gz"))
    env = dict(os.environ, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0", nnUNet_compile="f")
    folds = [str(f) for f in runner.folds]  # the manifest's folds, ensembled by both
    assert folds == [str(f) for f in load_bundle(BUNDLE).input["folds"]]
    cmd = [str(CLI), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
           "-m", str(BUNDLE / "nnunet"), "-f", *folds, "--disable_tta", "-device", "cpu",
           "-npp", "1", "-nps", "1"]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
    cli = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "case.nii.gz")))
    ours = runner.predict(sitk.GetArrayFromImage(image), image.GetSpacing()[::-1])
    assert ours.dtype == np.uint8 and ours.shape == cli.shape
    assert np.count_nonzero(ours) > 0
    assert np.array_equal(ours, cli)


def test_runner_finds_nodes_on_held_out_case(tmp_path: Path, runner: NnUNetRunner) -> None:
    image, case = _series_image(tmp_path, 9101, oblique=-4.0)
    pred = runner.predict(sitk.GetArrayFromImage(image), image.GetSpacing()[::-1])
    truth, _ = ndimage.label(case.labels >= 4, structure=np.ones((3, 3, 3)))
    found = 0
    for node in case.nodes:
        i, j, k = image.TransformPhysicalPointToIndex(node.center_lps)
        found += bool(np.any(pred[truth == truth[k, j, i]] >= 4))
    assert found >= 1, f"no truth node of {len(case.nodes)} overlapped by a predicted node"
    for value in (1, 2, 3):  # every region is found: Dice > 0.5
        both = np.count_nonzero((pred == value) & (case.labels == value))
        total = np.count_nonzero(pred == value) + np.count_nonzero(case.labels == value)
        assert 2 * both / total > 0.5, f"region label {value}"


def test_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    copy = shutil.copytree(BUNDLE, tmp_path / "bundle")
    checkpoint = copy / "nnunet" / "fold_0" / "checkpoint_final.pth"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"nnunet/fold_0/checkpoint_final\.pth: sha256"):
        load_bundle(copy)


def test_missing_fold_is_named(tmp_path: Path) -> None:
    copy = shutil.copytree(BUNDLE, tmp_path / "bundle")
    bundle = load_bundle(copy)
    shutil.rmtree(copy / "nnunet" / "fold_0")
    with pytest.raises(ModelError, match=r"fold_0/checkpoint_final\.pth is missing"):
        NnUNetRunner(bundle, device="cpu")


def test_unsafe_checkpoint_is_refused(tmp_path: Path) -> None:
    copy = shutil.copytree(BUNDLE, tmp_path / "bundle")
    bundle = load_bundle(copy)
    checkpoint = copy / "nnunet" / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(b"not a torch checkpoint")  # after the hash check, as on a race
    with pytest.raises(ModelError, match=r"checkpoint .*checkpoint_final\.pth cannot be loaded"):
        NnUNetRunner(bundle, device="cpu")


class _Payload:
    """Pickles to a call of os.makedirs: must never run when a bundle is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (str(self.marker),))


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    import torch

    copy = shutil.copytree(BUNDLE, tmp_path / "bundle")
    checkpoint = copy / "nnunet" / "fold_0" / "checkpoint_final.pth"
    content = torch.load(checkpoint, weights_only=True)
    marker = tmp_path / "code-ran"
    torch.save(dict(content, trainer_name=_Payload(marker)), checkpoint)
    bundle = load_bundle(copy, verify=False)  # as if the manifest hashes were rewritten
    with pytest.raises(ModelError, match=r"fold_0/checkpoint_final\.pth cannot be loaded safely"):
        NnUNetRunner(bundle, device="cpu")
    assert not marker.exists()


def test_bad_input_is_refused(runner: NnUNetRunner) -> None:
    with pytest.raises(ModelError, match="3-D"):
        runner.predict(np.zeros((4, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(ModelError, match="spacing"):
        runner.predict(np.zeros((4, 4, 4)), (0.0, 1.0, 1.0))
