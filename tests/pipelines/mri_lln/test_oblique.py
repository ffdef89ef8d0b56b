"""Oblique (tilted) acquisitions: the axes are measured in the acquisition plane, and the
findings and the SR say so, with the plane's tilt from the true axial plane (issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from lln_labels import lln_bundle

from dicomnode.dicom.volume import load_volume
from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln import build_outputs
from dicomnode.pipelines.mri_lln.findings import compute_findings
from dicomnode.pipelines.mri_lln.labels import LabelScheme
from dicomnode.synth.mr import SyntheticNode, generate_case

BUNDLE = lln_bundle("0.0-test")


def _section_axes(node: SyntheticNode, origin: np.ndarray, row: np.ndarray, col: np.ndarray) -> tuple[float, float]:
    """Analytic short and long axis of the node's ellipsoid cut by the plane through
    ``origin`` spanned by ``row`` and ``col`` (0, 0 when the plane misses it).

    The ellipsoid is ``(p - c)ᵀ A (p - c) <= 1`` with ``A = E diag(1/a², 1/b², 1/c²) Eᵀ``
    (``E``: the in-plane axes rotated by ``angle_rad`` about z, then z). On the plane
    ``p = origin + s row + t col`` it is ``xᵀ M x + 2 gᵀ x + h <= 1`` (``M = Bᵀ A B``), an
    ellipse with semi-axes ``sqrt((1 - h0) / λ)``, ``h0`` the form's value at its centre.
    """
    a, b, c = node.axes_mm
    cos, sin = np.cos(node.angle_rad), np.sin(node.angle_rad)
    axes = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    form = axes @ np.diag([a**-2, b**-2, c**-2]) @ axes.T
    basis = np.stack([row, col], axis=1)
    offset = origin - np.asarray(node.center_lps)
    m, g, h = basis.T @ form @ basis, basis.T @ form @ offset, offset @ form @ offset
    h0 = h - g @ np.linalg.solve(m, g)
    if h0 >= 1.0:
        return 0.0, 0.0
    small, large = np.linalg.eigvalsh(m)
    return float(2 * np.sqrt((1 - h0) / large)), float(2 * np.sqrt((1 - h0) / small))


def _vector(values) -> np.ndarray:
    return np.array([float(v) for v in values])


def test_tilted_series_axes_match_the_analytic_oblique_sections() -> None:
    """A 20° oblique axial (tilted about left-right) at 0.3 mm pixels: each node's short and
    long axes equal, within the voxel bound of the axial analytic test (sqrt(2) × 0.3 mm),
    the largest axes of the ellipsoid's sections by the slice planes, which differ from the
    axial ones; the findings report the plane and its 20° tilt."""
    dx = 0.3
    case = generate_case(10, shape=(24, 400, 400), spacing_mm=(3.0, dx, dx), tilt_deg=20.0, n_nodes=4)
    volume = load_volume(case.datasets)
    findings = compute_findings(case.labels, volume, LabelScheme.from_manifest(BUNDLE.labels, BUNDLE.thresholds))
    summary = findings.to_json()
    assert summary["axes_measured_in"] == "acquisition plane" and summary["acquisition_tilt_deg"] == 20.0
    assert not any(n.positive for n in case.nodes) and len(findings.nodes) == 4  # exact ellipsoids
    bound, differs = np.sqrt(2.0) * dx, 0
    for node in case.nodes:
        found = min(findings.nodes, key=lambda f: np.linalg.norm(np.subtract(f.centroid_lps, node.center_lps)))
        sections = np.array([
            _section_axes(node, _vector(ds.ImagePositionPatient), _vector(ds.ImageOrientationPatient[:3]),
                          _vector(ds.ImageOrientationPatient[3:]))
            for ds in case.datasets
        ])  # fmt: skip
        short_mm, long_mm = sections[:, 0].max(), sections[:, 1].max()
        assert abs(found.short_axis.length_mm - short_mm) <= bound, (found.short_axis, short_mm)
        assert abs(found.long_axis.length_mm - long_mm) <= bound, (found.long_axis, long_mm)
        differs += abs(short_mm - node.short_axis_mm) > 0.1  # the oblique section is not the axial one
    assert differs >= 2


def test_an_axial_series_reports_no_tilt() -> None:
    case = generate_case(10, n_nodes=2, oblique_deg=15.0)  # rotated in plane only: still axial
    findings = compute_findings(case.labels, load_volume(case.datasets), LabelScheme.from_manifest(BUNDLE.labels, {}))
    assert findings.to_json()["acquisition_tilt_deg"] == 0.0


def _notes(sr: pydicom.Dataset) -> list[str]:
    return [
        str(item.TextValue)
        for container in sr.ContentSequence
        if container.ValueType == "CONTAINER"
        for item in container.get("ContentSequence", [])
        if item.ValueType == "TEXT"
    ]


def test_the_sr_states_the_plane_and_its_tilt(tmp_path: Path) -> None:
    case = generate_case(11, n_nodes=2, tilt_deg=17.5)
    ds = case.datasets[0]
    ctx = PipelineContext("mri-lln", ds.StudyInstanceUID, ds.SeriesInstanceUID, tmp_path, job_id="t")
    result = build_outputs(load_volume(case.datasets), case.labels, BUNDLE, ctx, case.datasets)
    assert result.findings["acquisition_tilt_deg"] == 17.5
    _, sr, viewer = result.datasets
    [statement] = [n for n in _notes(sr) if n.startswith("Short and long axes are measured")]
    assert "acquisition plane, which is tilted 17.5° from the true axial plane" in statement
    sr.save_as(tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    axial = generate_case(11, n_nodes=2)
    result = build_outputs(load_volume(axial.datasets), axial.labels, BUNDLE, ctx, axial.datasets)
    assert any("which is axial (tilt 0° from the true axial plane)" in n for n in _notes(result.datasets[1]))
