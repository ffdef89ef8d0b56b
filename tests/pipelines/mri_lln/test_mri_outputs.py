"""MR LLN SEG + TID 1500 SR: dciodvfy, highdicom and dcmqi read-back, determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from lln_labels import LABELS, THRESHOLDS, lln_bundle
from pydicom.sr.codedict import codes

from dicomnode.dicom.volume import Volume, load_volume
from dicomnode.errors import OutputError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln.findings import LlnFindings, compute_findings
from dicomnode.pipelines.mri_lln.labels import LabelScheme
from dicomnode.pipelines.mri_lln.seg import build_seg, segment_map
from dicomnode.pipelines.mri_lln.sr import build_sr
from dicomnode.synth.mr import generate_case

BIN = Path(sys.executable).parent
#: Real series of the shared test data, relative to the ``mr_dir`` fixture.
ENHANCED = "enhanced/siemens_enhanced_oblique_8frames.dcm"
ADC = "prostate-adc-oblique-ge-qin"
SCHEME = LabelScheme.from_manifest(LABELS, THRESHOLDS)
BUNDLE = lln_bundle("0.1.0")


@dataclass
class Outputs:
    volume: Volume
    labels: np.ndarray
    findings: LlnFindings
    sources: list[pydicom.Dataset]
    seg: pydicom.Dataset | None
    sr: pydicom.Dataset
    seg_path: Path | None
    sr_path: Path


def _ctx(ds: pydicom.Dataset, tmp: Path) -> PipelineContext:
    return PipelineContext("mri-lln", ds.StudyInstanceUID, ds.SeriesInstanceUID, tmp)


def _build(sources, labels, tmp: Path, bundle: ModelBundle = BUNDLE) -> Outputs:
    volume = load_volume(sources)
    findings = compute_findings(labels, volume, SCHEME)
    ctx = _ctx(sources[0], tmp)
    seg = build_seg(volume, labels, findings, bundle, ctx, sources)
    sr = build_sr(volume, findings, bundle, ctx, sources, seg)
    seg_path = None
    if seg is not None:
        seg_path = tmp / "seg.dcm"
        seg.save_as(seg_path)
    sr.save_as(tmp / "sr.dcm")
    return Outputs(volume, labels, findings, sources, seg, sr, seg_path, tmp / "sr.dcm")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    case = generate_case(11, oblique_deg=20.0, n_nodes=3)
    tmp = tmp_path_factory.mktemp("synthetic")
    paths = []
    for k, ds in enumerate(case.datasets):
        paths.append(tmp / f"mr{k:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    sources = [pydicom.dcmread(p) for p in paths]
    return _build(sources, case.labels, tmp)


def test_dciodvfy_no_errors(synthetic: Outputs) -> None:
    assert synthetic.seg_path is not None
    assert dciodvfy_errors(synthetic.seg_path) == []
    assert dciodvfy_errors(synthetic.sr_path) == []


def test_seg_reads_back_per_source_instance(synthetic: Outputs) -> None:
    seg = hd.seg.segread(synthetic.seg_path)
    uids = [s.sop_instance_uid for s in synthetic.volume.sources]
    got = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    expected, regions = segment_map(synthetic.labels, synthetic.findings)
    np.testing.assert_array_equal(got, expected)
    n = len(synthetic.findings.nodes)
    for node in synthetic.findings.nodes:  # node segments = node label voxels
        assert (got == node.number).sum() == node.n_voxels
        desc = seg.get_segment_description(node.number)
        assert desc.tracking_id == node.tracking_id
        assert desc.segmented_property_type == codes.SCT.LymphNode
        site = desc.anatomic_regions[0]
        assert site.AnatomicRegionModifierSequence[0].CodeMeaning.lower() == node.side
    assert [s for _, s in regions] == ["external_iliac", "internal_iliac", "obturator"]
    assert seg.get_segment_description(n + 2).segmented_property_type.value == "69255009"
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(uids)


def test_seg_copies_patient_and_study(synthetic: Outputs) -> None:
    src = synthetic.sources[0]
    for out in (synthetic.seg, synthetic.sr):
        assert out is not None
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber"):
            assert out[keyword].value == src[keyword].value
        assert "NOT FOR CLINICAL USE" in out.SeriesDescription
    assert synthetic.seg.FrameOfReferenceUID == src.FrameOfReferenceUID


def test_sr_groups_and_values(synthetic: Outputs) -> None:
    report = hd.sr.srread(synthetic.sr_path).content
    volumetric = report.get_volumetric_roi_measurement_groups()
    planar = report.get_planar_roi_measurement_groups()
    (summary,) = report.get_image_measurement_groups()
    nodes = synthetic.findings.nodes
    assert len(volumetric) == len(nodes) and len(planar) == 2 * len(nodes)
    seg_desc = {n.number: hd.seg.segread(synthetic.seg_path).get_segment_description(n.number) for n in nodes}
    for node, group in zip(nodes, volumetric, strict=True):
        assert group.tracking_identifier == node.tracking_id
        assert group.tracking_uid == seg_desc[node.number].tracking_uid
        ref = group.referenced_segment[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == synthetic.seg.SOPInstanceUID  # type: ignore[union-attr]
        assert ref.ReferencedSegmentNumber == node.number
        values = {m.name.meaning: m.value for m in group.get_measurements()}
        assert values["Short axis"] == pytest.approx(node.short_axis.length_mm, abs=0.01)
        assert values["Long axis"] == pytest.approx(node.long_axis.length_mm, abs=0.01)
        assert values["Volume"] == pytest.approx(node.volume_mm3, abs=0.1)
        site = group.finding_sites[0]
        assert site.laterality.meaning.lower() == node.side
        status = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
        assert status["Neoplasm, Secondary"] == ("Present" if node.positive else "Absent")
    short = [g for g in planar if g.tracking_identifier.endswith("short axis")]
    for node, group in zip(nodes, short, strict=True):
        coords = group.roi.value  # type: ignore[union-attr]
        np.testing.assert_allclose(coords, [node.short_axis.start, node.short_axis.end], atol=1e-3)
        image = synthetic.volume.sources[node.short_axis.slice_index].sop_instance_uid
        source = group.roi.ContentSequence[0].ReferencedSOPSequence[0]  # type: ignore[union-attr]
        assert source.ReferencedSOPInstanceUID == image
    summary_status = {q.name.meaning: q.value.meaning for q in summary.get_qualitative_evaluations()}
    assert summary_status["Neoplasm, Secondary"] == ("Present" if synthetic.findings.lln_positive else "Absent")
    assert summary_status["Lymph Node"] == "Present"


def test_dcmqi_reads_seg_with_same_geometry(synthetic: Outputs, tmp_path: Path) -> None:
    subprocess.run(
        [BIN / "segimage2itkimage", "--inputDICOM", synthetic.seg_path,
         "--outputDirectory", tmp_path, "--outputType", "nrrd"],
        check=True, capture_output=True,
    )  # fmt: skip
    reference = synthetic.volume.to_sitk()
    combined = np.zeros(synthetic.volume.shape, np.int32)
    for nrrd in sorted(tmp_path.glob("*.nrrd")):
        image = sitk.ReadImage(str(nrrd))
        np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
        on_grid = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        combined += sitk.GetArrayFromImage(on_grid).astype(np.int32)
    expected, _ = segment_map(synthetic.labels, synthetic.findings)
    np.testing.assert_array_equal(combined, expected)


def test_dcmqi_reads_sr_values(synthetic: Outputs, tmp_path: Path) -> None:
    out = tmp_path / "sr.json"
    subprocess.run(
        [BIN / "tid1500reader", "--inputDICOM", synthetic.sr_path, "--outputMetadata", out],
        check=True, capture_output=True,
    )  # fmt: skip
    groups = {g["TrackingIdentifier"]: g for g in json.loads(out.read_text())["Measurements"]}
    for node in synthetic.findings.nodes:
        group = groups[node.tracking_id]
        assert group["ReferencedSegment"] == node.number
        assert group["Laterality"]["CodeMeaning"].lower() == node.side
        items = {i["quantity"]["CodeMeaning"]: float(i["value"]) for i in group["measurementItems"]}
        assert items["Short axis"] == pytest.approx(node.short_axis.length_mm, abs=0.01)
        assert items["Long axis"] == pytest.approx(node.long_axis.length_mm, abs=0.01)
    assert "LLN status" in groups


def test_uids_identical_across_runs(synthetic: Outputs, tmp_path: Path) -> None:
    again = _build(synthetic.sources, synthetic.labels, tmp_path)
    assert synthetic.seg is not None and again.seg is not None
    for a, b in ((synthetic.seg, again.seg), (synthetic.sr, again.sr)):
        assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    assert synthetic.seg.SOPInstanceUID != synthetic.sr.SOPInstanceUID
    other = _build(synthetic.sources, synthetic.labels, tmp_path, replace(BUNDLE, version="0.2"))
    assert other.sr.SOPInstanceUID != synthetic.sr.SOPInstanceUID


def test_no_nodes_gives_sr_only(synthetic: Outputs, tmp_path: Path) -> None:
    labels = np.where(synthetic.labels >= 4, 0, synthetic.labels).astype(np.uint8)
    out = _build(synthetic.sources, labels, tmp_path)
    assert out.seg is None
    assert dciodvfy_errors(out.sr_path) == []
    report = hd.sr.srread(out.sr_path).content
    assert report.get_volumetric_roi_measurement_groups() == []
    (summary,) = report.get_image_measurement_groups()
    status = {q.name.meaning: q.value.meaning for q in summary.get_qualitative_evaluations()}
    assert status["Lymph Node"] == "Absent" and status["Neoplasm, Secondary"] == "Absent"
    evidence = out.sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert len(evidence) == 1  # only the source series, no SEG


def test_real_oblique_series_single_node_segment(mr_dir: Path, tmp_path: Path) -> None:
    sources = [pydicom.dcmread(p) for p in sorted((mr_dir / ADC).iterdir())]
    volume = load_volume(sources)
    labels = np.zeros(volume.shape, np.uint8)
    labels[9:12, 120:131, 70:78] = 5  # one node, no regions: single-segment SEG
    out = _build(sources, labels, tmp_path, replace(BUNDLE, not_for_clinical_use=False))
    assert out.seg is not None and len(out.seg.SegmentSequence) == 1
    assert "NOT FOR CLINICAL USE" not in out.seg.SeriesDescription
    assert out.findings.nodes[0].station is None and out.findings.nodes[0].side == "right"
    assert dciodvfy_errors(out.seg_path) == [] and dciodvfy_errors(out.sr_path) == []


def test_enhanced_mr_source(mr_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(mr_dir / ENHANCED)
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid(entropy_srcs=["enhanced-test"])
    volume = load_volume([ds])
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:6, 100:140, 60:100] = 2
    labels[3:5, 110:120, 70:82] = 4
    out = _build([ds], labels, tmp_path)
    seg = hd.seg.segread(out.seg_path)
    got = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=ds.SOPInstanceUID,
        source_frame_numbers=[s.frame_number for s in volume.sources],
        combine_segments=True,
        assert_missing_frames_are_empty=True,
    )
    np.testing.assert_array_equal(got, segment_map(labels, out.findings)[0])
    assert dciodvfy_errors(out.seg_path) == [] and dciodvfy_errors(out.sr_path) == []
    frames = hd.sr.srread(out.sr_path).content.get_planar_roi_measurement_groups()[0]
    source = frames.roi.ContentSequence[0].ReferencedSOPSequence[0]  # type: ignore[union-attr]
    assert source.ReferencedFrameNumber == out.findings.nodes[0].short_axis.slice_index + 1


def test_source_without_frame_of_reference_fails_clearly(mr_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(mr_dir / ENHANCED)
    volume = load_volume([ds])
    labels = np.zeros(volume.shape, np.uint8)
    labels[3:5, 110:120, 70:82] = 4
    findings = compute_findings(labels, volume, SCHEME)
    with pytest.raises(OutputError, match=r"no FrameOfReferenceUID"):
        build_seg(volume, labels, findings, BUNDLE, _ctx(ds, tmp_path), [ds])
    with pytest.raises(OutputError, match=r"no SEG was given"):
        build_sr(volume, findings, BUNDLE, _ctx(ds, tmp_path), [ds], None)
