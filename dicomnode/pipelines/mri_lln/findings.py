"""Lateral lymph nodes from a label map: per-node measurements and the patient status.

Input is a label map on the :class:`~dicomnode.dicom.volume.Volume` grid (``(z, y, x)``)
and the manifest's ``labels`` / ``thresholds``. Per node (a face-connected component of
the node-positive + node-negative labels):

* model class: majority of positive vs negative voxels (a tie counts as positive);
* station and side (:mod:`.stations`): the region the node overlaps most, else the
  nearest; left or right of the pelvic midline;
* short and long axis in the acquisition plane (:mod:`.axes`): long = max over slices of
  the largest in-plane diameter, short = max over slices of the longest chord
  perpendicular to that slice's long axis, in mm using PixelSpacing; the plane's tilt from
  the true axial plane is reported with them (``acquisition_tilt_deg``), since an oblique
  section of a node is not its axial one;
* volume (voxels × voxel volume), and the final status = model-positive OR short axis ≥
  threshold, with the reasons; the short axis compared is the one shown (0.01 mm), and a
  node within one in-plane pixel of the threshold is flagged borderline (:mod:`.criteria`);
* a component below the bundle's minimum node size is not a node: it is listed in
  ``below_size`` and never changes the status, the SEG or the SR.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from dicomnode.dicom.volume import Volume
from dicomnode.errors import PipelineError
from dicomnode.pipelines.mri_lln.axes import AxisMeasurement, node_axes
from dicomnode.pipelines.mri_lln.criteria import below_size_reasons, is_borderline, shown_mm, size_status
from dicomnode.pipelines.mri_lln.labels import LabelScheme
from dicomnode.pipelines.mri_lln.stations import (
    FACES,
    centroid_zyx,
    pelvic_midline,
    region_map,
    station_by_distance,
    station_by_overlap,
)

__all__ = ["LlnFindings", "NodeFinding", "compute_findings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeFinding:
    """Measurements and status of one lymph node."""

    number: int
    tracking_id: str
    n_voxels: int
    volume_mm3: float
    positive_voxels: int
    negative_voxels: int
    model_class: str
    station: str | None
    station_method: str
    side: str
    centroid_lps: tuple[float, float, float]
    short_axis: AxisMeasurement
    long_axis: AxisMeasurement
    positive: bool
    reasons: tuple[str, ...]
    borderline: bool = False
    below_size: tuple[str, ...] = ()

    @property
    def key_slice(self) -> int:
        """The slice of the short axis (the measurement that decides the size criterion)."""
        return self.short_axis.slice_index

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "tracking_id": self.tracking_id,
            **(
                {"below_size": list(self.below_size)}
                if self.below_size
                else {
                    "status": "positive" if self.positive else "negative",
                    "reasons": list(self.reasons),
                    "borderline": self.borderline,
                }
            ),
            "model_class": self.model_class,
            "station": self.station,
            "station_method": self.station_method,
            "side": self.side,
            "short_axis_mm": shown_mm(self.short_axis.length_mm),
            "long_axis_mm": shown_mm(self.long_axis.length_mm),
            "volume_mm3": round(self.volume_mm3, 1),
            "key_slice": self.key_slice,
            "centroid_lps_mm": [round(v, 2) for v in self.centroid_lps],
        }


@dataclass(frozen=True)
class LlnFindings:
    """All nodes of one series and the patient-level lateral-lymph-node status.

    ``node_map`` (uint16, the volume's ``(z, y, x)`` grid) holds each node's number;
    the components in ``below_size`` are not in it.
    """

    nodes: tuple[NodeFinding, ...]
    scheme: LabelScheme
    midline_x_lps: float
    midline_method: str
    stations_present: tuple[str, ...]
    node_map: np.ndarray = field(compare=False, repr=False)
    below_size: tuple[NodeFinding, ...] = ()
    tilt_deg: float = 0.0

    @property
    def lln_positive(self) -> bool:
        """Patient-level status: any node positive."""
        return any(n.positive for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable summary (no patient identifiers)."""
        return {
            "lln_status": "positive" if self.lln_positive else "negative",
            "n_nodes": len(self.nodes),
            "n_positive": sum(n.positive for n in self.nodes),
            "n_borderline": sum(n.borderline for n in self.nodes),
            "short_axis_threshold_mm": self.scheme.short_axis_positive_mm,
            "min_node_volume_mm3": self.scheme.min_node_volume_mm3,
            "min_node_short_axis_mm": self.scheme.min_node_short_axis_mm,
            "midline_x_lps_mm": round(self.midline_x_lps, 2),
            "midline_method": self.midline_method,
            "stations_present": list(self.stations_present),
            "axes_measured_in": "acquisition plane",
            "acquisition_tilt_deg": round(self.tilt_deg, 1),
            "nodes": [n.to_json() for n in self.nodes],
            "below_size": [n.to_json() for n in self.below_size],
        }


def _node(number: int, box: tuple[slice, ...], mask: np.ndarray, ctx: _Context) -> NodeFinding:
    labels = ctx.label_map[box][mask]
    n_pos = int(np.isin(labels, ctx.scheme.positive).sum())
    n_neg = int(labels.size - n_pos)
    model_class = "positive" if n_pos >= n_neg else "negative"
    station, method = station_by_overlap(ctx.regions, ctx.node_map, number, box), "overlap"
    if station == 0:
        node = ctx.node_map == number
        station, method = station_by_distance(ctx.regions, node, ctx.spacing), "nearest"
    dz, dy, dx = ctx.volume.spacing_zyx
    short, long_ = node_axes(mask, box[0].start, box[1].start, box[2].start, dy, dx)
    centroid = ctx.volume.zyx_to_lps(centroid_zyx(ctx.node_map, number, box))
    scheme = ctx.scheme
    positive, reasons = size_status(model_class, short.length_mm, scheme.short_axis_positive_mm)
    volume_mm3 = float(mask.sum() * dz * dy * dx)
    return NodeFinding(
        number=number,
        tracking_id=f"LN-{number}",
        n_voxels=int(mask.sum()),
        volume_mm3=volume_mm3,
        positive_voxels=n_pos,
        negative_voxels=n_neg,
        model_class=model_class,
        station=ctx.scheme.regions.get(station) if station else None,
        station_method=method if station else "none",
        side="left" if centroid[0] > ctx.midline else "right",
        centroid_lps=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
        short_axis=short,
        long_axis=long_,
        positive=positive,
        reasons=reasons,
        borderline=is_borderline(short.length_mm, scheme.short_axis_positive_mm, max(dy, dx)),
        below_size=below_size_reasons(
            volume_mm3, short.length_mm, scheme.min_node_volume_mm3, scheme.min_node_short_axis_mm
        ),
    )


@dataclass(frozen=True)
class _Context:
    label_map: np.ndarray
    regions: np.ndarray
    node_map: np.ndarray
    volume: Volume
    scheme: LabelScheme
    spacing: np.ndarray
    midline: float


def compute_findings(label_map: np.ndarray, volume: Volume, scheme: LabelScheme) -> LlnFindings:
    """Find the nodes in ``label_map`` and measure them.

    Parameters
    ----------
    label_map
        Integer labels on the volume grid, ``(z, y, x)`` like ``volume.array``.
    volume
        The source volume (geometry only).
    scheme
        Meaning of the label values and the short-axis threshold.

    Returns
    -------
    LlnFindings
        Nodes numbered 1..N in raster order of their first voxel (deterministic).

    Raises
    ------
    PipelineError
        ``label_map`` is not on the volume grid.
    """
    if label_map.shape != volume.shape:
        raise PipelineError(f"label map shape {label_map.shape} differs from the volume grid {volume.shape}")
    label_map = np.asarray(label_map)
    regions = region_map(label_map, scheme)
    midline, method = pelvic_midline(regions, volume)
    node_map, count = ndimage.label(np.isin(label_map, scheme.positive + scheme.negative), FACES)
    spacing = np.asarray(volume.spacing_zyx)
    ctx = _Context(label_map, regions, node_map, volume, scheme, spacing, midline)
    boxes = ndimage.find_objects(node_map)
    found = [_node(i + 1, box, node_map[box] == i + 1, ctx) for i, box in enumerate(boxes) if box is not None]
    nodes, small, node_map = _split_below_size(found, node_map)
    present = tuple(sorted({scheme.regions[int(v)] for v in np.unique(regions) if v}))
    logger.info(
        "%d node(s), %d positive, %d below size; midline %.1f mm (%s)",
        len(nodes),
        sum(n.positive for n in nodes),
        len(small),
        midline,
        method,
    )
    tilt = math.degrees(math.acos(min(1.0, abs(float(volume.direction[2, 2])))))  # slice normal vs patient z
    return LlnFindings(nodes, scheme, midline, method, present, node_map, small, tilt)


def _split_below_size(
    found: list[NodeFinding], node_map: np.ndarray
) -> tuple[tuple[NodeFinding, ...], tuple[NodeFinding, ...], np.ndarray]:
    """Nodes renumbered 1..N (raster order kept), the below-size components, and the node
    map without them."""
    lut = np.zeros(max((f.number for f in found), default=0) + 1, np.uint16)
    nodes: list[NodeFinding] = []
    small: list[NodeFinding] = []
    for finding in found:
        if finding.below_size:
            small.append(replace(finding, number=0, tracking_id=f"below-size-{len(small) + 1}"))
            continue
        lut[finding.number] = len(nodes) + 1
        nodes.append(replace(finding, number=len(nodes) + 1, tracking_id=f"LN-{len(nodes) + 1}"))
    return tuple(nodes), tuple(small), lut[node_map]
