"""What the label values of an ``mri-lln`` model mean (its manifest's ``labels`` and ``thresholds``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicomnode.errors import PipelineError

__all__ = ["DEFAULT_MIN_SHORT_AXIS_MM", "DEFAULT_MIN_VOLUME_MM3", "LabelScheme"]

DEFAULT_MIN_VOLUME_MM3 = 14.0
DEFAULT_MIN_SHORT_AXIS_MM = 2.0


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
    min_node_volume_mm3, min_node_short_axis_mm
        A component with a smaller volume or short axis is not a node but "below size"
        (:mod:`.criteria`). Defaults: 14 mm³, the volume of a 3 mm sphere, and 2 mm: the
        smallest nodes pelvic T2 MRI at 0.5-0.8 mm pixels lets a reader discern are about
        3 mm, while the 1-2-voxel specks a model leaves (1.5-3 mm³ at 0.7 × 0.7 × 3.5 mm,
        7-14 mm³ on the 1.5 × 1.5 × 3 mm phantoms) or one-pixel streaks are no node; the
        smallest phantom node the demo model finds is 47 mm³, 3.2 mm.
    """

    regions: Mapping[int, str]
    positive: tuple[int, ...]
    negative: tuple[int, ...]
    short_axis_positive_mm: float = 7.0
    min_node_volume_mm3: float = DEFAULT_MIN_VOLUME_MM3
    min_node_short_axis_mm: float = DEFAULT_MIN_SHORT_AXIS_MM

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
        threshold = _mm(thresholds, "short_axis_positive_mm", 7.0)
        min_volume = _mm(thresholds, "min_node_volume_mm3", DEFAULT_MIN_VOLUME_MM3)
        min_short = _mm(thresholds, "min_node_short_axis_mm", DEFAULT_MIN_SHORT_AXIS_MM)
        return cls(regions, tuple(classes["positive"]), tuple(classes["negative"]), threshold, min_volume, min_short)


def _mm(thresholds: Mapping[str, Any], key: str, default: float) -> float:
    """A non-negative number from ``thresholds`` (the default when absent)."""
    value = thresholds.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not number >= 0:  # also NaN
        raise PipelineError(f"model thresholds: {key} {value!r} must be a number >= 0")
    return number
