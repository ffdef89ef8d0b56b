"""Model bundle ``requirements:``: typed, strict, documented defaults (models/README.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from dicomnode.errors import ModelError
from dicomnode.inference.manifest import load_bundle
from dicomnode.inference.requirements import MrRequirements, Range, WsiRequirements

MODELS = Path(__file__).resolve().parents[2] / "models"


def _with_requirements(tmp_path: Path, name: str, requirements: object) -> Path:
    """A copy of demo bundle ``name`` whose manifest has ``requirements`` instead."""
    root = tmp_path / name
    shutil.copytree(MODELS / name, root, ignore=shutil.ignore_patterns("fold_1"))
    data = yaml.safe_load((root / "model.yaml").read_text())
    data["files"] = [f for f in data["files"] if "fold_1" not in f["path"]]
    data["requirements"] = requirements
    (root / "model.yaml").write_text(yaml.safe_dump(data))
    return root


def test_demo_bundles_declare_their_requirements() -> None:
    mri = load_bundle(MODELS / "lln-t2-demo").requirements
    assert isinstance(mri, MrRequirements)
    assert (mri.plane, mri.max_tilt_deg, mri.min_slices) == ("axial", 20.0, 12)
    assert mri.header["EchoTime"] == Range(60.0, 250.0)
    # no spacing_mm in the manifest: a quarter to twice the plans' 3.0 x 1.5 x 1.5 mm
    assert mri.plans_spacing_mm == (3.0, 1.5, 1.5)
    assert mri.spacing_mm == {"slice": Range(0.75, 6.0), "row": Range(0.375, 3.0), "column": Range(0.375, 3.0)}
    wsi = load_bundle(MODELS / "wsi-ln-demo").requirements
    assert isinstance(wsi, WsiRequirements)
    assert wsi.illumination == "brightfield" and 2.0 in wsi.base_mpp and 4.0 not in wsi.base_mpp


@pytest.mark.parametrize(("requirements", "named"), [
    ({"modality": "MR", "max_tilt": 20}, "'max_tilt'"),
    ({"modality": "MR", "spacing_mm": {"z": [1, 2]}}, "'spacing_mm.z'"),
    ({"modality": "MR", "warn": {"tilt": 3}}, "'warn.tilt'"),
    ({"modality": "SM", "stain": "HE"}, "'stain'"),
    ({"modality": "MR", "fov_mm": [300, 100]}, "fov_mm"),
    ({"modality": "MR", "min_slices": -1}, "min_slices"),
    ({"modality": "CT"}, "modality"),
])
def test_a_bad_requirement_is_refused_naming_the_key(tmp_path: Path, requirements: object, named: str) -> None:
    with pytest.raises(ModelError, match=named):
        load_bundle(_with_requirements(tmp_path, "lln-t2-demo", requirements))


def test_explicit_spacing_replaces_the_plans_default(tmp_path: Path) -> None:
    root = _with_requirements(tmp_path, "lln-t2-demo", {"modality": "MR", "spacing_mm": {"slice": [2.5, 4.0]}})
    req = load_bundle(root).requirements
    assert isinstance(req, MrRequirements) and req.spacing_mm == {"slice": Range(2.5, 4.0)}


def test_check_config_names_a_bad_requirement(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import REPO, node_config

    root = _with_requirements(tmp_path, "lln-t2-demo", {"modality": "MR", "plane": "axial", "max_tilt": 20})
    config = node_config(tmp_path, root, models={"plumbing": {"path": str(root)}})
    out = subprocess.run([sys.executable, "-m", "dicomnode", "check-config", str(config)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1
    assert "route 'mr':" in out.stderr and "unknown key 'max_tilt'" in out.stderr
