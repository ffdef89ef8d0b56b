"""Write ``model.yaml`` (with sha256 of every model file) and ``MODEL_CARD.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dicomnode.inference.manifest import ModelBundle, load_bundle, sha256_file

MODEL_ID = "lln-t2-demo"
VERSION = "0.1.0"
FILES = ("nnunet/dataset.json", "nnunet/plans.json", "nnunet/fold_0/checkpoint_final.pth")
INTENDED_USE = (
    "Demonstration of the dicomnode mri-lln pipeline: lateral lymph-node regions and nodes "
    "on T2 pelvic MR, trained on synthetic phantoms only. NOT FOR CLINICAL USE."
)


def write_bundle(out: Path) -> ModelBundle:
    """Write ``out/model.yaml`` for the files already in ``out/nnunet`` and verify it."""
    manifest: dict[str, Any] = {
        "id": MODEL_ID,
        "version": VERSION,
        "task": "mri-lln",
        "backend": "nnunetv2",
        "not_for_clinical_use": True,
        "intended_use": INTENDED_USE,
        "model_card": "MODEL_CARD.md",
        "files": [{"path": rel, "sha256": sha256_file(out / rel)} for rel in FILES],
        "input": {
            "modality": "MR",
            "model_folder": "nnunet",
            "configuration": "3d_fullres",
            "folds": [0],
            "checkpoint": "checkpoint_final.pth",
            "use_mirroring": False,
        },
        "labels": {
            1: {"role": "region", "station": "internal_iliac"},
            2: {"role": "region", "station": "obturator"},
            3: {"role": "region", "station": "external_iliac"},
            4: {"role": "node", "class": "positive"},
            5: {"role": "node", "class": "negative"},
        },
        "thresholds": {"short_axis_positive_mm": 7.0},
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


def write_card(out: Path, metrics: dict[str, Any], run: dict[str, Any]) -> None:
    """Write ``out/MODEL_CARD.md`` from the template next to this file."""
    template = (Path(__file__).parent / "MODEL_CARD.template.md").read_text()
    text = template.format(
        model_id=MODEL_ID,
        version=VERSION,
        metrics=_table(metrics),
        run=_table(run),
    )
    (out / "MODEL_CARD.md").write_text(text)
