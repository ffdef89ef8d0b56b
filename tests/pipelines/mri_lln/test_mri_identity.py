"""The ``mri-lln`` pipeline's label map from DICOM equals ``nnUNetv2_predict`` on the same series.

The reference path shares nothing with the pipeline's DICOM handling: SimpleITK's DICOM
series reader (GDCM's slice sorting and geometry) → ``case_0000.nii.gz`` →
``nnUNetv2_predict_from_modelfolder`` (nnU-Net's own NIfTI reader, spacing and axis
handling) → ``case.nii.gz``. The pipeline path is what the worker child runs:
``create_pipeline`` from the bundle's manifest, ``run(files)``, and the label map read back
from the SEG it sends (by source SOP Instance UID, in SimpleITK's slice order, so on the
NIfTI grid).

The SEG has one segment per nodal region (exactly the region labels 1-3) and one per node
(a face-connected component of labels 4/5, with the node's class in the findings), so the
comparison is voxel for voxel on regions and node voxels, node for node on the partition
into nodes, and per node on the model class (majority of 4 vs 5 voxels).

Once with fold 0 alone (the manifest's ``input.folds: [0]``), once with the demo bundle's
ensemble of folds 0 and 1 (``-f 0 1``), which must differ from fold 0 alone on the case,
so a pipeline that silently used one fold would not pass.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import yaml
from pydicom.sr.codedict import codes
from scipy import ndimage

from dicomnode.inference.manifest import load_bundle
from dicomnode.pipelines import create_pipeline
from dicomnode.pipelines.base import PipelineContext, PipelineResult
from dicomnode.pipelines.mri_lln.codes import STATION_CODES
from dicomnode.synth.mr import generate_case

DEMO = Path(__file__).resolve().parents[3] / "models" / "lln-t2-demo"
CLI = Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"
NODE = 255  # node voxels (labels 4 and 5) in the compared maps
_FACES = ndimage.generate_binary_structure(3, 1)


def _phantom(folder: Path) -> Path:
    """A synthetic series whose row and column spacings, sizes and in-plane angle all
    differ, so that swapping any two axes or spacings changes what nnU-Net sees."""
    case = generate_case(9100, shape=(22, 72, 90), spacing_mm=(3.3, 1.4, 1.7), oblique_deg=7.0, n_nodes=4)
    case.write(folder)
    return folder


def _sitk_series(folder: Path) -> tuple[sitk.Image, list[Path]]:
    """The series as SimpleITK reads it, and its files in SimpleITK's (z) order."""
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    return reader.Execute(), [Path(n) for n in names]


def _nnunet_cli(image: sitk.Image, model: Path, folds: tuple[int, ...], work: Path) -> np.ndarray:
    """``nnUNetv2_predict_from_modelfolder … -f FOLDS --disable_tta -device cpu`` on one image."""
    (work / "in").mkdir(parents=True)
    sitk.WriteImage(image, str(work / "in" / "case_0000.nii.gz"))
    env = dict(os.environ, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0", nnUNet_compile="f")
    cmd = [str(CLI), "-i", str(work / "in"), "-o", str(work / "out"), "-m", str(model),
           "-f", *map(str, folds), "--disable_tta", "-device", "cpu", "-npp", "1", "-nps", "1"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = sitk.ReadImage(str(work / "out" / "case.nii.gz"))
    assert out.GetSize() == image.GetSize() and np.allclose(out.GetSpacing(), image.GetSpacing())
    return sitk.GetArrayFromImage(out)


def _bundle_with_folds(root: Path, folds: list[int]) -> Path:
    """A copy of the demo bundle whose manifest selects ``folds`` (files and hashes as they are)."""
    copy = shutil.copytree(DEMO, root)
    manifest = yaml.safe_load((copy / "model.yaml").read_text())
    manifest["input"]["folds"] = folds
    (copy / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return copy


def _run_pipeline(bundle: Path, files: list[Path], workdir: Path) -> PipelineResult:
    """The pipeline as the worker child builds and runs it."""
    pipeline = create_pipeline("mri-lln", load_bundle(bundle), {"device": "cpu", "threads": 1})
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    ctx = PipelineContext("mri-lln", ds.StudyInstanceUID, ds.SeriesInstanceUID, workdir, job_id="identity")
    return pipeline.run(files, ctx)


def _seg_maps(result: PipelineResult, files: list[Path], station_values: dict[str, int]) -> tuple[np.ndarray, ...]:
    """(label map with nodes as NODE, node segment numbers) read back from the result's SEG,
    one plane per file of ``files`` (SimpleITK's order)."""
    seg_ds = next(ds for ds in result.datasets if ds.Modality == "SEG")
    seg = hd.seg.segread(io.BytesIO(result.encoded[seg_ds.SOPInstanceUID]))  # the bytes that are sent
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    numbers = np.asarray(
        seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    )
    by_code = {code.value: station_values[name] for name, code in STATION_CODES.items()}
    labels, nodes = np.zeros(numbers.shape, np.uint8), np.zeros(numbers.shape, np.int32)
    for number in seg.segment_numbers:
        kind = seg.get_segment_description(number).segmented_property_type.value
        if kind == codes.SCT.LymphNode.value:
            labels[numbers == number], nodes[numbers == number] = NODE, number
        else:
            labels[numbers == number] = by_code[kind]
    return labels, nodes


def _below_size(result: PipelineResult, components: np.ndarray, count: int, nodes: np.ndarray,
                voxel_mm3: float) -> set[int]:
    """The reference's components the SEG leaves out: each must be one of the findings'
    ``below_size`` entries (same volume), and below the minimum node size."""
    dropped = set(range(1, count + 1)) - set(np.unique(components[nodes > 0]).tolist())
    small = result.findings["below_size"]
    volumes = sorted(round(float(np.count_nonzero(components == c)) * voxel_mm3, 1) for c in dropped)
    assert volumes == pytest.approx(sorted(n["volume_mm3"] for n in small), abs=0.11)
    limits = result.findings["min_node_volume_mm3"], result.findings["min_node_short_axis_mm"]
    assert all(n["volume_mm3"] < limits[0] or n["short_axis_mm"] < limits[1] for n in small)
    return dropped


def _assert_identical(
    result: PipelineResult, files: list[Path], reference: np.ndarray, bundle: Path, image: sitk.Image
) -> None:
    """Regions voxel for voxel, nodes as the same partition, each node's model class; the
    components below the bundle's minimum node size are not nodes (no SEG segment)."""
    stations = {spec["station"]: int(v) for v, spec in load_bundle(bundle).labels.items() if "station" in spec}
    labels, nodes = _seg_maps(result, files, stations)
    components, count = ndimage.label(reference >= 4, _FACES)
    dropped = _below_size(result, components, count, nodes, float(np.prod(image.GetSpacing())))
    expected = np.where(reference >= 4, NODE, reference)
    expected[np.isin(components, list(dropped))] = 0
    assert labels.shape == expected.shape
    differ = np.count_nonzero(labels != expected)
    assert differ == 0, f"{differ} voxel(s) differ from nnUNetv2_predict"
    found = result.findings["nodes"]
    assert len(found) == count - len(dropped) == len(np.unique(nodes)) - 1
    for number, node in enumerate(found, start=1):
        component = np.unique(components[nodes == number])
        assert component.size == 1 and np.array_equal(components == component[0], nodes == number)
        voxels = reference[nodes == number]
        majority = "positive" if np.count_nonzero(voxels == 4) >= np.count_nonzero(voxels == 5) else "negative"
        assert node["model_class"] == majority, node["tracking_id"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[sitk.Image, list[Path]]:
    return _sitk_series(_phantom(tmp_path_factory.mktemp("phantom")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., np.ndarray]:
    """nnUNetv2_predict's label map per (series, folds), computed once."""
    cache: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def get(name: str, image: sitk.Image, folds: tuple[int, ...]) -> np.ndarray:
        key = (name, folds)
        if key not in cache:
            cache[key] = _nnunet_cli(image, DEMO / "nnunet", folds, tmp_path_factory.mktemp("cli"))
        return cache[key]

    return get


def test_one_fold_pipeline_equals_nnunet_predict(phantom, reference, tmp_path: Path) -> None:
    image, files = phantom
    bundle = _bundle_with_folds(tmp_path / "bundle", [0])
    result = _run_pipeline(bundle, files, tmp_path)
    assert result.findings["n_nodes"] >= 1  # nodes found: a SEG to compare
    _assert_identical(result, files, reference("phantom", image, (0,)), bundle, image)


def test_ensemble_pipeline_equals_nnunet_predict(phantom, reference, tmp_path: Path) -> None:
    image, files = phantom
    assert load_bundle(DEMO).input["folds"] == [0, 1]
    ensemble = reference("phantom", image, (0, 1))
    assert np.count_nonzero(ensemble != reference("phantom", image, (0,))) > 0  # fold 1 changes the result here
    _assert_identical(_run_pipeline(DEMO, files, tmp_path), files, ensemble, DEMO, image)


def test_real_t2_pipeline_equals_nnunet_predict(testdata: Path, reference, tmp_path: Path) -> None:
    image, files = _sitk_series(testdata / "mr" / "prostate-t2-axial-siemens-verio")
    result = _run_pipeline(DEMO, files, tmp_path)
    assert result.findings["n_nodes"] >= 1  # false positives on a prostate: a SEG to compare
    _assert_identical(result, files, reference("t2", image, (0, 1)), DEMO, image)
