"""Measurement fidelity (issue 12): minimum node size, the shown value is the compared value,
borderline nodes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from lln_labels import lln_bundle
from scipy import ndimage

from dicomnode.dicom.volume import load_volume
from dicomnode.errors import PipelineError
from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln import build_outputs
from dicomnode.pipelines.mri_lln.criteria import below_size_reasons, is_borderline, shown_mm, size_status
from dicomnode.pipelines.mri_lln.findings import compute_findings
from dicomnode.pipelines.mri_lln.labels import LabelScheme
from dicomnode.synth.mr import generate_case

BUNDLE = lln_bundle("0.0-test")


def _ctx(case, tmp: Path) -> PipelineContext:
    ds = case.datasets[0]
    return PipelineContext("mri-lln", ds.StudyInstanceUID, ds.SeriesInstanceUID, tmp, job_id="f1")


def _items(dataset: pydicom.Dataset):
    """Every content item of an SR, depth first."""
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _code_items(sr: pydicom.Dataset, meaning: str) -> list[str]:
    return [
        it.ConceptCodeSequence[0].CodeMeaning
        for it in _items(sr)
        if it.ValueType == "CODE" and it.ConceptNameCodeSequence[0].CodeMeaning == meaning
    ]


def _valid(ds: pydicom.Dataset, path: Path) -> None:
    ds.save_as(path)
    assert dciodvfy_errors(path) == []


# --------------------------------------------------------------------- rounding and borderline


def test_the_compared_short_axis_is_the_shown_one() -> None:
    assert shown_mm(6.997) == 7.0 and shown_mm(6.995) == 7.0 and shown_mm(6.994) == 6.99
    assert shown_mm(7.0) == 7.0 and shown_mm(4.325) == 4.33  # half up, not to even
    assert size_status("negative", 6.997, 7.0) == (True, ("short-axis>=7mm",))  # shown 7.00
    assert size_status("negative", 7.0, 7.0) == (True, ("short-axis>=7mm",))
    assert size_status("negative", 6.994, 7.0) == (False, ("model-negative", "short-axis<7mm"))
    assert size_status("positive", 3.0, 7.0) == (True, ("model-positive",))


def test_borderline_is_within_one_in_plane_pixel_of_the_threshold() -> None:
    pixel = 0.6
    for short in (6.997, 7.0, 6.4, 7.6, 6.9):
        assert is_borderline(short, 7.0, pixel), short
    for short in (6.39, 7.61, 5.0, 9.0):
        assert not is_borderline(short, 7.0, pixel), short
    assert is_borderline(6.1, 7.0, 0.9) and not is_borderline(6.1, 7.0, 0.6)


def test_below_size_reasons() -> None:
    assert below_size_reasons(6.75, 1.5, 14.0, 2.0) == ("volume<14mm3", "short-axis<2mm")
    assert below_size_reasons(20.0, 1.5, 14.0, 2.0) == ("short-axis<2mm",)
    assert below_size_reasons(13.9, 3.0, 14.0, 2.0) == ("volume<14mm3",)
    assert below_size_reasons(14.0, 1.995, 14.0, 2.0) == ()  # 1.995 is shown as 2.00


def test_size_thresholds_come_from_the_bundle() -> None:
    scheme = LabelScheme.from_manifest(BUNDLE.labels, {})
    assert (scheme.min_node_volume_mm3, scheme.min_node_short_axis_mm) == (14.0, 2.0)
    scheme = LabelScheme.from_manifest(BUNDLE.labels, {"min_node_volume_mm3": 30, "min_node_short_axis_mm": 0})
    assert (scheme.min_node_volume_mm3, scheme.min_node_short_axis_mm) == (30.0, 0.0)
    with pytest.raises(PipelineError, match=r"min_node_volume_mm3 'big' must be a number >= 0"):
        LabelScheme.from_manifest(BUNDLE.labels, {"min_node_volume_mm3": "big"})


@pytest.fixture(scope="module")
def fine_case():
    """Two negative nodes at 0.6 mm pixels; the larger measures 6.1577 mm (shown 6.16), the
    smaller 4.55 mm (more than a pixel from anything compared here)."""
    case = generate_case(104, n_nodes=2, shape=(24, 200, 200), spacing_mm=(3.0, 0.6, 0.6))
    assert not any(n.positive for n in case.nodes)
    volume = load_volume(case.datasets)
    nodes = compute_findings(case.labels, volume, LabelScheme.from_manifest(BUNDLE.labels, {})).nodes
    larger = max(nodes, key=lambda n: n.short_axis.length_mm)
    return case, volume, larger


def test_a_node_at_the_shown_threshold_is_positive_and_borderline_in_findings_and_sr(fine_case, tmp_path) -> None:
    """The 6.997 mm case: the threshold equals the node's shown short axis, which is above
    its raw value (6.1577 shown as 6.16). Compared as shown, the node is positive, and
    borderline; the SR shows the compared value and says Borderline; the smaller node, more
    than a pixel away, is not borderline."""
    case, volume, node = fine_case
    raw = node.short_axis.length_mm
    threshold = shown_mm(raw)
    assert raw < threshold == 6.16
    bundle = replace(BUNDLE, thresholds={"short_axis_positive_mm": threshold})
    result = build_outputs(volume, case.labels, bundle, _ctx(case, tmp_path), case.datasets)
    by_id = {n["tracking_id"]: n for n in result.findings["nodes"]}
    found = by_id[node.tracking_id]
    assert found["short_axis_mm"] == threshold
    assert found["status"] == "positive" and found["reasons"] == [f"short-axis>={threshold:g}mm"]
    assert found["borderline"] is True and result.findings["n_borderline"] == 1
    assert result.findings["lln_status"] == "positive"
    other = next(n for n in result.findings["nodes"] if n["tracking_id"] != node.tracking_id)
    assert other["borderline"] is False and other["status"] == "negative"
    _, sr, viewer = result.datasets
    assert _code_items(sr, "Borderline") == ["Present"] * 3  # volumetric + 2 planar groups of one node
    assert _code_items(viewer, "Borderline")
    captions = [str(it.TextValue) for it in _items(viewer) if it.ValueType == "TEXT"]
    assert sum(c.endswith(", positive, borderline") for c in captions) >= 1  # what OHIF shows
    assert not any(c.startswith(other["tracking_id"] + " ") and "borderline" in c for c in captions)
    shown = [
        float(it.MeasuredValueSequence[0].NumericValue)
        for it in _items(sr)
        if it.ValueType == "NUM" and it.ConceptNameCodeSequence[0].CodeMeaning == "Short axis"
    ]
    assert threshold in shown
    _valid(sr, tmp_path / "sr.dcm")
    _valid(viewer, tmp_path / "viewer.dcm")


@pytest.mark.parametrize(("offset", "borderline"), [(0.6, True), (0.61, False)])
def test_a_node_one_pixel_and_more_below_the_threshold(fine_case, offset, borderline, tmp_path) -> None:
    """Within one in-plane pixel (0.6 mm) below the threshold: negative and borderline; just
    beyond it: negative, not borderline, and no Borderline item in the SR."""
    case, volume, node = fine_case
    threshold = shown_mm(node.short_axis.length_mm) + offset
    bundle = replace(BUNDLE, thresholds={"short_axis_positive_mm": threshold})
    result = build_outputs(volume, case.labels, bundle, _ctx(case, tmp_path), case.datasets)
    found = next(n for n in result.findings["nodes"] if n["tracking_id"] == node.tracking_id)
    assert found["status"] == "negative" and found["borderline"] is borderline
    assert bool(_code_items(result.datasets[1], "Borderline")) is borderline


# --------------------------------------------------------------------------- minimum node size


def _speck(labels: np.ndarray, value: int) -> np.ndarray:
    """Two face-adjacent voxels of ``value`` in a nodal region, at least 4 voxels from any node."""
    nodes = np.isin(labels, (4, 5))
    far = ndimage.distance_transform_edt(~nodes) > 4
    z, y, x = np.argwhere((labels == 2) & far & np.roll(far, -1, axis=2) & np.roll(labels == 2, -1, axis=2))[0]
    out = labels.copy()
    out[z, y, x : x + 2] = value
    return out


def test_a_two_voxel_positive_speck_is_below_size_and_changes_nothing(tmp_path: Path) -> None:
    case = generate_case(83, n_nodes=2)  # two small negative nodes: LLN negative
    volume = load_volume(case.datasets)
    ctx = _ctx(case, tmp_path)
    clean = build_outputs(volume, case.labels, BUNDLE, ctx, case.datasets)
    specked = build_outputs(volume, _speck(case.labels, 4), BUNDLE, ctx, case.datasets)
    assert clean.findings["lln_status"] == specked.findings["lln_status"] == "negative"
    assert specked.findings["nodes"] == clean.findings["nodes"] and specked.findings["n_nodes"] == 2
    [small] = specked.findings["below_size"]
    assert small["below_size"] == ["volume<14mm3", "short-axis<2mm"] and "status" not in small
    assert small["model_class"] == "positive" and small["volume_mm3"] == pytest.approx(2 * 1.5 * 1.5 * 3.0)
    assert clean.findings["below_size"] == []
    seg, sr, viewer = specked.datasets
    assert len(seg.SegmentSequence) == len(clean.datasets[0].SegmentSequence)
    assert [d.SOPInstanceUID for d in specked.datasets] == [d.SOPInstanceUID for d in clean.datasets]
    assert _code_items(sr, "Neoplasm, Secondary") == _code_items(clean.datasets[1], "Neoplasm, Secondary")
    _valid(seg, tmp_path / "seg.dcm")


def test_only_a_speck_gives_no_nodes_and_no_seg(tmp_path: Path) -> None:
    case = generate_case(84, with_nodes=False)
    volume = load_volume(case.datasets)
    result = build_outputs(volume, _speck(case.labels, 4), BUNDLE, _ctx(case, tmp_path), case.datasets)
    assert [ds.Modality for ds in result.datasets] == ["SR"]
    assert result.findings["lln_status"] == "negative" and result.findings["n_nodes"] == 0
    assert len(result.findings["below_size"]) == 1
    with_limit_off = replace(BUNDLE, thresholds={"min_node_volume_mm3": 0, "min_node_short_axis_mm": 0})
    result = build_outputs(volume, _speck(case.labels, 4), with_limit_off, _ctx(case, tmp_path), case.datasets)
    assert result.findings["lln_status"] == "positive" and result.findings["below_size"] == []
