"""What the label values of an ``mri-lln`` model mean (its manifest's ``labels`` and ``thresholds``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicomnode.errors import PipelineError

__all__ = ["LabelScheme"]


@dataclass(frozen=True)
class LabelScheme:
    """What the model's label values mean (from the bundle manifest).

    Attributes
    ----------
    regions
        Label value → station name (``internal_iliac``, ``obturator``, ``external_iliac``).
    positive, negative
        Label values of node-positive and node-negative voxels.
    short_axis_positive_mm
        Short axis at or above which a node is called positive.
    """

    regions: Mapping[int, str]
    positive: tuple[int, ...]
    negative: tuple[int, ...]
    short_axis_positive_mm: float = 7.0

    @classmethod
    def from_manifest(cls, labels: Mapping[Any, Any], thresholds: Mapping[str, Any]) -> LabelScheme:
        """Build from ``labels`` and ``thresholds`` of a ``model.yaml``.

        Raises
        ------
        PipelineError
            A label entry is malformed or no node labels are defined.
        """
        regions: dict[int, str] = {}
        classes: dict[str, list[int]] = {"positive": [], "negative": []}
        for key, spec in labels.items():
            value, spec = int(key), dict(spec or {})
            if spec.get("role") == "region" and spec.get("station"):
                regions[value] = str(spec["station"])
            elif spec.get("role") == "node" and spec.get("class") in classes:
                classes[str(spec["class"])].append(value)
            else:
                raise PipelineError(
                    f"model labels: entry {key}: {spec!r} must be {{role: region, station: ...}} "
                    "or {role: node, class: positive|negative}"
                )
        if not classes["positive"] or not classes["negative"]:
            raise PipelineError("model labels: need node labels of class positive and negative")
        threshold = float(thresholds.get("short_axis_positive_mm", 7.0))
        return cls(regions, tuple(classes["positive"]), tuple(classes["negative"]), threshold)
