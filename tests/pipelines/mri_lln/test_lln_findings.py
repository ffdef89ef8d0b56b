"""Node findings on analytic phantoms: ellipsoids of known axes on real volume geometry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from lln_labels import LABELS, THRESHOLDS

from dicomnode.dicom.volume import SourceFrame, Volume
from dicomnode.errors import PipelineError
from dicomnode.pipelines.mri_lln.findings import compute_findings
from dicomnode.pipelines.mri_lln.labels import LabelScheme

SCHEME = LabelScheme.from_manifest(LABELS, THRESHOLDS)


def _rotation(deg_z: float, deg_x: float) -> np.ndarray:
    cz, sz = math.cos(math.radians(deg_z)), math.sin(math.radians(deg_z))
    cx, sx = math.cos(math.radians(deg_x)), math.sin(math.radians(deg_x))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ rx


def _volume(shape, spacing_zyx, direction=None, origin=(0.0, 0.0, 0.0)) -> Volume:
    return Volume(
        array=np.zeros(shape, np.float32),
        spacing_zyx=spacing_zyx,
        origin_lps=origin,
        direction=np.eye(3) if direction is None else direction,
        sources=tuple(SourceFrame(None, f"1.2.3.{k}") for k in range(shape[0])),
    )


def _paint_ellipsoid(labels, vol, centre_zyx, semi_mm, angle_deg, value) -> None:
    """Voxels whose centre lies inside an ellipsoid; in-plane axes rotated by angle."""
    dz, dy, dx = vol.spacing_zyx
    z, y, x = np.indices(vol.shape, dtype=float)
    pz = (z - centre_zyx[0]) * dz
    py = (y - centre_zyx[1]) * dy
    px = (x - centre_zyx[2]) * dx
    t = math.radians(angle_deg)
    u = px * math.cos(t) + py * math.sin(t)
    v = -px * math.sin(t) + py * math.cos(t)
    a, b, c = semi_mm
    labels[(u / a) ** 2 + (v / b) ** 2 + (pz / c) ** 2 <= 1.0] = value


def _chord_length_mm(axis, vol) -> float:
    dy, dx = vol.spacing_zyx[1:]
    return math.hypot((axis.end[0] - axis.start[0]) * dx, (axis.end[1] - axis.start[1]) * dy)


@pytest.mark.parametrize(
    ("spacing", "angle", "semi"),
    [
        ((3.0, 0.5, 0.5), 0.0, (8.0, 4.5, 5.0)),
        ((3.0, 0.6, 0.9), 30.0, (7.0, 4.0, 5.0)),  # anisotropic pixels, rotated node
        ((2.0, 0.8, 0.4), 115.0, (10.0, 3.0, 6.0)),
    ],
)
def test_axes_of_ellipsoid_within_one_voxel(spacing, angle, semi) -> None:
    vol = _volume((15, 70, 90), spacing)
    labels = np.zeros(vol.shape, np.uint8)
    _paint_ellipsoid(labels, vol, (7, 35, 45), semi, angle, 5)
    findings = compute_findings(labels, vol, SCHEME)
    assert len(findings.nodes) == 1
    node = findings.nodes[0]
    voxel = max(spacing[1:])
    assert node.long_axis.length_mm == pytest.approx(2 * semi[0], abs=voxel)
    assert node.short_axis.length_mm == pytest.approx(2 * semi[1], abs=voxel)
    assert node.key_slice == 7 and node.long_axis.slice_index == 7
    # the endpoints drawn in the SR measure what is reported
    assert _chord_length_mm(node.long_axis, vol) == pytest.approx(node.long_axis.length_mm, 1e-3)
    assert _chord_length_mm(node.short_axis, vol) == pytest.approx(node.short_axis.length_mm, 1e-3)
    long_vec = np.subtract(node.long_axis.end, node.long_axis.start) * spacing[:0:-1]
    short_vec = np.subtract(node.short_axis.end, node.short_axis.start) * spacing[:0:-1]
    cosine = abs(long_vec @ short_vec) / np.linalg.norm(long_vec) / np.linalg.norm(short_vec)
    assert cosine < 1e-3  # perpendicular (endpoints are rounded to 1/1000 pixel)
    assert node.volume_mm3 == pytest.approx(4 / 3 * math.pi * np.prod(semi), rel=0.15)
    # centre of the drawn long axis ~ node centre (pixel centre = index + 0.5)
    mid = np.add(node.long_axis.start, node.long_axis.end) / 2
    np.testing.assert_allclose(mid, (45.5, 35.5), atol=1.0)


def _pelvis(vol: Volume, labels: np.ndarray, centre_x: float) -> None:
    """Bilateral regions around x index ``centre_x`` (L = +x)."""
    for side in (-1, 1):
        cx = centre_x + side * 30
        _paint_ellipsoid(labels, vol, (10, 20, cx), (6.0, 6.0, 12.0), 0, 1)  # internal iliac
        _paint_ellipsoid(labels, vol, (10, 40, cx + side * 8), (6.0, 8.0, 12.0), 0, 2)
        _paint_ellipsoid(labels, vol, (10, 60, cx), (6.0, 6.0, 12.0), 0, 3)  # external iliac


def test_station_side_class_and_status() -> None:
    vol = _volume((21, 80, 120), (2.0, 1.0, 1.0), origin=(-70.0, -40.0, 0.0))
    labels = np.zeros(vol.shape, np.uint8)
    _pelvis(vol, labels, centre_x=50)  # midline at LPS x = -70 + 50 = -20
    _paint_ellipsoid(labels, vol, (10, 40, 92), (3.0, 2.0, 3.0), 0, 4)  # left obturator
    _paint_ellipsoid(labels, vol, (10, 20, 20), (5.0, 4.5, 4.0), 0, 5)  # right internal iliac
    _paint_ellipsoid(labels, vol, (10, 61, 80), (2.0, 1.5, 2.0), 0, 5)  # left external iliac
    _paint_ellipsoid(labels, vol, (10, 70, 49), (2.0, 2.0, 2.0), 5, 5)  # midline, no region
    findings = compute_findings(labels, vol, SCHEME)
    assert findings.midline_method == "regions"
    assert findings.midline_x_lps == pytest.approx(-20.0, abs=0.5)
    by_x = {round(n.centroid_lps[0]): n for n in findings.nodes}
    assert sorted(by_x) == [-50, -21, 10, 22]
    left_obt, right_ii, left_ei, lost = by_x[22], by_x[-50], by_x[10], by_x[-21]
    assert (left_obt.station, left_obt.side, left_obt.station_method) == (
        "obturator",
        "left",
        "overlap",
    )
    assert (right_ii.station, right_ii.side) == ("internal_iliac", "right")
    assert (left_ei.station, left_ei.side) == ("external_iliac", "left")
    assert (lost.station, lost.station_method) == ("external_iliac", "nearest")
    # status: model-positive small node; model-negative node with short axis 9 mm
    assert left_obt.model_class == "positive" and left_obt.reasons == ("model-positive",)
    assert right_ii.model_class == "negative" and right_ii.positive
    assert right_ii.reasons == ("short-axis>=7mm",)
    assert not left_ei.positive and left_ei.reasons == ("model-negative", "short-axis<7mm")
    assert findings.lln_positive
    summary = json.loads(json.dumps(findings.to_json()))
    assert summary["lln_status"] == "positive" and summary["n_positive"] == 2
    assert [n["tracking_id"] for n in summary["nodes"]] == ["LN-1", "LN-2", "LN-3", "LN-4"]
    assert set(summary["stations_present"]) == {"internal_iliac", "obturator", "external_iliac"}


def test_box_shaped_node_touching_its_region_on_every_side() -> None:
    vol = _volume((12, 60, 60), (3.0, 0.8, 0.8))
    labels = np.zeros(vol.shape, np.uint8)
    labels[2:10, 10:50, 10:30] = 3  # a right-side external iliac block (x index < centre)
    labels[4:7, 20:32, 14:24] = 4  # a box node: its bounding box has no spare voxel
    (node,) = compute_findings(labels, vol, SCHEME).nodes
    assert (node.station, node.station_method, node.side) == ("external_iliac", "overlap", "right")
    assert node.long_axis.length_mm == pytest.approx(math.hypot(12 * 0.8, 10 * 0.8), abs=0.8)
    assert node.short_axis.length_mm >= 10 * 0.8 - 0.8


def test_mixed_node_majority_and_node_map() -> None:
    vol = _volume((9, 40, 40), (3.0, 0.7, 0.7))
    labels = np.zeros(vol.shape, np.uint8)
    _paint_ellipsoid(labels, vol, (4, 20, 20), (5.0, 2.0, 4.0), 0, 5)
    labels[4, 20, 14:17] = 4  # a few positive voxels inside a negative node
    findings = compute_findings(labels, vol, SCHEME)
    (node,) = findings.nodes
    assert node.positive_voxels == 3 and node.model_class == "negative"
    assert node.station is None and node.station_method == "none"
    assert findings.midline_method == "volume-centre"
    assert findings.node_map.dtype == np.uint16
    assert (findings.node_map == 1).sum() == node.n_voxels


def test_oblique_geometry_side_uses_patient_x() -> None:
    direction = _rotation(25.0, 15.0)
    vol = _volume((21, 80, 120), (2.0, 1.0, 1.0), direction=direction, origin=(-60.0, 10.0, 5.0))
    labels = np.zeros(vol.shape, np.uint8)
    _pelvis(vol, labels, centre_x=60)
    _paint_ellipsoid(labels, vol, (10, 40, 101), (4.0, 3.0, 3.0), 20, 5)  # +x index side
    _paint_ellipsoid(labels, vol, (10, 40, 19), (4.0, 3.0, 3.0), 20, 4)
    findings = compute_findings(labels, vol, SCHEME)
    centre = vol.zyx_to_lps([10, 40, 60])
    assert findings.midline_x_lps == pytest.approx(centre[0], abs=1.0)
    sides = {n.model_class: (n.station, n.side) for n in findings.nodes}
    # +x index maps to +LPS x (patient left) through this direction matrix (cos 25° > 0)
    assert sides == {"negative": ("obturator", "left"), "positive": ("obturator", "right")}
    for node in findings.nodes:
        assert node.long_axis.length_mm == pytest.approx(8.0, abs=1.0)
        assert node.short_axis.length_mm == pytest.approx(6.0, abs=1.0)


def test_no_nodes() -> None:
    vol = _volume((5, 30, 30), (3.0, 1.0, 1.0))
    findings = compute_findings(np.zeros(vol.shape, np.uint8), vol, SCHEME)
    assert findings.nodes == () and not findings.lln_positive
    assert findings.to_json()["lln_status"] == "negative"


def test_grid_mismatch_and_bad_manifest() -> None:
    vol = _volume((5, 30, 30), (3.0, 1.0, 1.0))
    with pytest.raises(PipelineError, match=r"label map shape \(5, 30, 31\) differs"):
        compute_findings(np.zeros((5, 30, 31), np.uint8), vol, SCHEME)
    with pytest.raises(PipelineError, match=r"entry 7"):
        LabelScheme.from_manifest({**LABELS, 7: {"role": "organ"}}, {})
    with pytest.raises(PipelineError, match=r"positive and negative"):
        LabelScheme.from_manifest({"1": {"role": "region", "station": "obturator"}}, {})
    scheme = LabelScheme.from_manifest({str(k): v for k, v in LABELS.items()}, {})
    assert scheme.regions[2] == "obturator" and scheme.short_axis_positive_mm == 7.0
