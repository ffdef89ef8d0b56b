"""The demo MRI model's label map and a manifest-only bundle for output tests.

The same values as models/lln-t2-demo/model.yaml: tests of findings and outputs use them
with label maps they construct, so they do not depend on the trained weights.
"""

from __future__ import annotations

from pathlib import Path

from dicomnode.inference.manifest import ModelBundle

LABELS = {
    1: {"role": "region", "station": "internal_iliac"},
    2: {"role": "region", "station": "obturator"},
    3: {"role": "region", "station": "external_iliac"},
    4: {"role": "node", "class": "positive"},
    5: {"role": "node", "class": "negative"},
}
THRESHOLDS = {"short_axis_positive_mm": 7.0}


def lln_bundle(version: str, root: Path = Path("models/lln-t2-demo")) -> ModelBundle:
    """A ``mri-lln`` bundle with the demo's labels and thresholds (no files)."""
    return ModelBundle(root=root, id="lln-t2-demo", version=version, task="mri-lln", backend="nnunetv2",
                       files={}, intended_use="research demo", labels=LABELS, thresholds=THRESHOLDS)
