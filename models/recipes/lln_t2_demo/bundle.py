"""Write ``model.yaml`` (with sha256 of every model file) and ``MODEL_CARD.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dicomnode.inference.manifest import ModelBundle, load_bundle, sha256_file

MODEL_ID = "lln-t2-demo"
#: 0.1.0 was fold 0 alone; 0.2.0 ensembles folds 0 and 1. Output UIDs derive from the
#: version, so a different model never reuses the UIDs of another's results.
VERSION = "0.2.0"
FILES = ("nnunet/dataset.json", "nnunet/plans.json")
INTENDED_USE = (
    "Demonstration of the dicomnode mri-lln pipeline: lateral lymph-node regions and nodes "
    "on T2 pelvic MR, trained on synthetic phantoms only. NOT FOR CLINICAL USE."
)


#: The inputs the demo model was made for (models/README.md "Input requirements"); spacing
#: defaults from the nnU-Net plans.
REQUIREMENTS: dict[str, Any] = {
    "modality": "MR", "plane": "axial", "max_tilt_deg": 20, "min_slices": 12, "min_coverage_mm": 45,
    "original_only": True,
    "fov_mm": [100, 450], "header": {"EchoTime": [60, 250], "RepetitionTime": [1500, 15000]},
    "warn": {"tilt_deg": 10, "spacing_margin": 0.25, "intensity_z": 2.0},
}


def _folds(out: Path) -> list[int]:
    """The folds trained so far: every ``out/nnunet/fold_N`` with a checkpoint."""
    found = out.glob("nnunet/fold_*/checkpoint_final.pth")
    return sorted(int(p.parent.name.removeprefix("fold_")) for p in found)


def write_bundle(out: Path) -> ModelBundle:
    """Write ``out/model.yaml`` for the files already in ``out/nnunet`` and verify it.

    Every fold present is listed (with its sha256) and ensembled (``input.folds``).
    """
    folds = _folds(out)
    files = [*FILES, *(f"nnunet/fold_{f}/checkpoint_final.pth" for f in folds)]
    manifest: dict[str, Any] = {
        "id": MODEL_ID,
        "version": VERSION,
        "task": "mri-lln",
        "backend": "nnunetv2",
        "not_for_clinical_use": True,
        "intended_use": INTENDED_USE,
        "model_card": "MODEL_CARD.md",
        "files": [{"path": rel, "sha256": sha256_file(out / rel)} for rel in files],
        "input": {
            "modality": "MR",
            "model_folder": "nnunet",
            "configuration": "3d_fullres",
            "folds": folds,
            "checkpoint": "checkpoint_final.pth",
            "use_mirroring": False,
            # data.py trains on the phantoms as stored: columns → L, rows → P, slices → S
            "orientation": "LPS",
        },
        "labels": {
            1: {"role": "region", "station": "internal_iliac"},
            2: {"role": "region", "station": "obturator"},
            3: {"role": "region", "station": "external_iliac"},
            4: {"role": "node", "class": "positive"},
            5: {"role": "node", "class": "negative"},
        },
        "thresholds": {"short_axis_positive_mm": 7.0, "min_node_volume_mm3": 14.0, "min_node_short_axis_mm": 2.0},
        "requirements": REQUIREMENTS,
    }
    text = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=100)
    (out / "model.yaml").write_text(text)
    return load_bundle(out)


def _table(rows: dict[str, Any]) -> str:
    lines = ["| quantity | value |", "| --- | --- |"]
    for key, value in rows.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines)


def _fold_table(runs: dict[str, dict[str, Any]]) -> str:
    """One column per fold: ``runs`` is ``training_run.json`` (``{"fold_0": {...}, ...}``)."""
    folds = sorted(runs)
    lines = ["| quantity | " + " | ".join(folds) + " |", "| --- |" + " --- |" * len(folds)]
    for key in runs[folds[0]]:
        cells = [runs[f].get(key, "") for f in folds]
        shown = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells]
        lines.append(f"| {key} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def write_card(out: Path, metrics: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    """Write ``out/MODEL_CARD.md`` from the template next to this file."""
    template = (Path(__file__).parent / "MODEL_CARD.template.md").read_text()
    text = template.format(
        model_id=MODEL_ID,
        version=VERSION,
        metrics=_table(metrics),
        run=_fold_table(runs),
        folds=", ".join(str(f) for f in _folds(out)),
    )
    (out / "MODEL_CARD.md").write_text(text)
