"""The model sees its training orientation whatever the stored orientation (issue 12).

The demo model was trained on the phantoms as stored (columns → patient left, rows →
posterior, slices → superior: ``input.orientation: LPS``). The same phantom stored in the
eight axis-flip/permutation variants of an axial series (rows reversed, columns reversed,
rows and columns swapped, and their combinations; a swap also reverses the slice normal,
so the slice order too) must give the same nodes, stations and sides: before the node
reoriented the array, rows reversed swapped internal and external iliac.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.dicom.volume import ModelGrid, is_axis_code, load_volume, to_model_grid
from dicomnode.errors import ModelError, VolumeError
from dicomnode.inference.manifest import load_bundle
from dicomnode.inference.nnunet import model_orientation
from dicomnode.pipelines import create_pipeline
from dicomnode.pipelines.base import PipelineContext
from dicomnode.synth.mr import generate_case
from dicomnode.synth.mr.variants import VARIANTS, stored_as, variant_name

DEMO = Path(__file__).resolve().parents[3] / "models" / "lln-t2-demo"


def _store(case_datasets: list[pydicom.Dataset], variant: tuple[bool, bool, bool], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for k, ds in enumerate(stored_as(case_datasets, variant)):
        paths.append(folder / f"slice{k:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _summary(findings: dict) -> list[tuple]:
    """Per node, in LPS order: station, side, status, model class, centroid (0.1 mm)."""
    rows = [
        (n["station"], n["side"], n["status"], n["model_class"], tuple(round(v, 1) for v in n["centroid_lps_mm"]))
        for n in findings["nodes"]
    ]
    return sorted(rows, key=lambda r: r[4])


# ------------------------------------------------------------------------- pure axis mapping


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_name)
def test_every_variant_maps_onto_the_stored_array(variant, tmp_path: Path) -> None:
    """The model grid of any variant is the LPS-stored array voxel for voxel, with the same
    spacing, and restore() gives back the variant's own array."""
    case = generate_case(31, shape=(6, 20, 16), spacing_mm=(3.0, 1.1, 1.7), n_nodes=1)
    reference = load_volume(case.datasets)
    volume = load_volume(_store(case.datasets, variant, tmp_path / "v"))
    grid = to_model_grid(volume, "LPS")
    assert np.array_equal(grid.array, reference.array)
    assert grid.spacing_zyx == pytest.approx(reference.spacing_zyx)
    assert grid.array.flags["C_CONTIGUOUS"]
    assert np.array_equal(grid.restore(grid.array), volume.array)


def test_axis_codes_and_an_oblique_series() -> None:
    assert is_axis_code("LPS") and is_axis_code("RAS") and is_axis_code("SPL")
    assert not any(is_axis_code(c) for c in ("LLS", "LP", "LPSX", "LPX", None, 3))
    # 30° in-plane rotation: the nearest orthogonal orientation is the stored one
    volume = load_volume(generate_case(32, shape=(4, 12, 12), oblique_deg=30.0, n_nodes=1).datasets)
    grid = to_model_grid(volume, "LPS")
    assert (grid.order, grid.flips) == ((0, 1, 2), ())
    flipped = to_model_grid(volume, "RAI")  # every axis reversed, none swapped
    assert (flipped.order, flipped.flips) == ((0, 1, 2), (0, 1, 2))
    assert np.array_equal(flipped.array, volume.array[::-1, ::-1, ::-1])
    with pytest.raises(VolumeError, match=r"axis code 'LPQ'"):
        to_model_grid(volume, "LPQ")
    identity = to_model_grid(volume, None)
    assert isinstance(identity, ModelGrid) and np.array_equal(identity.array, volume.array)


def test_bundle_orientation_is_read_and_checked() -> None:
    from dataclasses import replace

    bundle = load_bundle(DEMO)
    assert model_orientation(bundle) == "LPS"
    assert model_orientation(replace(bundle, input={})) is None
    with pytest.raises(ModelError, match=r"input.orientation 'LPL' is not an axis code"):
        model_orientation(replace(bundle, input={"orientation": "LPL"}))


# -------------------------------------------------------------------- demo model, end to end


@pytest.fixture(scope="module")
def pipeline():
    return create_pipeline("mri-lln", load_bundle(DEMO), {"device": "cpu", "threads": 1})


def test_eight_stored_orientations_give_the_same_findings(pipeline, tmp_path: Path) -> None:
    case = generate_case(21, n_nodes=3)
    results = {}
    for variant in VARIANTS:
        paths = _store(case.datasets, variant, tmp_path / variant_name(variant))
        ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
        ctx = PipelineContext("mri-lln", ds.StudyInstanceUID, ds.SeriesInstanceUID, tmp_path, job_id="o")
        results[variant] = pipeline.run(paths, ctx).findings
    stored = results[(False, False, False)]
    truth = sorted((n.station, n.side) for n in case.nodes)
    assert sorted((n["station"], n["side"]) for n in stored["nodes"]) == truth
    for variant, found in results.items():
        assert _summary(found) == _summary(stored), variant
        assert found["lln_status"] == stored["lln_status"], variant
        shorts = sorted(n["short_axis_mm"] for n in found["nodes"])
        assert shorts == pytest.approx(sorted(n["short_axis_mm"] for n in stored["nodes"]), abs=0.2), variant
