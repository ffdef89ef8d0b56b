"""Promises guarded by the planted-bug check (``make mutation``) that no other test covered.

* Output UIDs are a pure function of their parts: same parts, same UID, in this process,
  in another process and across versions (a replay after an upgrade must not duplicate).
* Every node's station reaches the SEG and the SR as the right SNOMED code (PS3.16 CID
  7600), checked against the phantom's ground truth rather than the product's own table.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import REPO
from lln_labels import LABELS, THRESHOLDS, lln_bundle

from dicomnode.dicom.uids import DEFAULT_UID_ROOT, derive_uid
from dicomnode.dicom.volume import load_volume
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln.findings import compute_findings
from dicomnode.pipelines.mri_lln.labels import LabelScheme
from dicomnode.pipelines.mri_lln.seg import build_seg, segment_map
from dicomnode.pipelines.mri_lln.sr import build_sr
from dicomnode.synth.mr import STATIONS, generate_case

#: PS3.16 CID 7600 (Lymph Node Anatomic Sites), written out from the standard.
CID_7600 = {"internal_iliac": "69255009", "obturator": "36086000", "external_iliac": "65349008"}
PARTS = ("1.2.826.0.1.3680043.8.498.4711", "mri-lln", "lln-t2-demo", "0.1.0", "seg.instance")


def test_derive_uid_is_a_pure_function_of_its_parts() -> None:
    uid = derive_uid(*PARTS)
    assert uid == derive_uid(*PARTS)
    assert uid.startswith(DEFAULT_UID_ROOT) and len(uid) <= 64
    assert derive_uid(*PARTS[:-1], "sr.instance") != uid
    assert derive_uid(*PARTS, root="1.2.3.") != uid and derive_uid(*PARTS, root="1.2.3.").startswith("1.2.3.")
    # another interpreter (another hash seed) derives the same UID
    code = f"from dicomnode.dicom.uids import derive_uid; print(derive_uid(*{PARTS!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == uid, out.stderr
    with pytest.raises(ValueError, match="at least one component"):
        derive_uid()


def test_derive_uid_derivation_is_stable_across_versions() -> None:
    """The derivation itself is fixed: root + decimal SHA-512 of the parts joined by 0x1F.

    Changing it would give every re-sent result a new UID after an upgrade, and the
    PACS would then hold two copies of each.
    """
    digest = hashlib.sha512("\x1f".join(PARTS).encode()).hexdigest()
    assert derive_uid(*PARTS) == f"{DEFAULT_UID_ROOT}{int(digest, 16)}"[:64]


@pytest.fixture(scope="module")
def lln_outputs(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic case with nodes at every station, its findings, SEG and SR."""
    case = generate_case(0, n_nodes=4)
    assert {n.station for n in case.nodes} == set(CID_7600)  # the case exercises every station
    tmp = tmp_path_factory.mktemp("stations")
    sources = [pydicom.dcmread(p) for p in case.write(tmp / "mr")]
    volume = load_volume(sources)
    findings = compute_findings(case.labels, volume, LabelScheme.from_manifest(LABELS, THRESHOLDS))
    ctx = PipelineContext("mri-lln", sources[0].StudyInstanceUID, sources[0].SeriesInstanceUID, tmp)
    bundle = lln_bundle("0.1.0")
    seg = build_seg(volume, case.labels, findings, bundle, ctx, sources)
    assert seg is not None
    sr = build_sr(volume, findings, bundle, ctx, sources, seg)
    seg.save_as(tmp / "seg.dcm")
    sr.save_as(tmp / "sr.dcm")  # read back below as a PACS would get them
    return case, findings, pydicom.dcmread(tmp / "seg.dcm"), tmp / "sr.dcm"


def _truth_of(case, node):
    """The ground-truth node nearest to a found node (centroid distance in mm)."""
    return min(case.nodes, key=lambda t: np.linalg.norm(np.subtract(t.center_lps, node.centroid_lps)))


def test_station_of_every_node_matches_the_phantom(lln_outputs) -> None:
    case, findings, _, _ = lln_outputs
    assert len(findings.nodes) == len(case.nodes)
    truths = [_truth_of(case, node) for node in findings.nodes]
    assert len({id(t) for t in truths}) == len(truths)  # one found node per true node
    for node, truth in zip(findings.nodes, truths, strict=True):
        assert (node.station, node.side) == (truth.station, truth.side)


def test_station_codes_in_seg_and_sr_follow_cid_7600(lln_outputs) -> None:
    case, findings, seg, sr = lln_outputs
    expected = {n.number: CID_7600[_truth_of(case, n).station] for n in findings.nodes}
    for number, code in expected.items():  # node segments: anatomic region = station
        assert seg.SegmentSequence[number - 1].AnatomicRegionSequence[0].CodeValue == code
    groups = hd.sr.srread(sr).content.get_volumetric_roi_measurement_groups()
    by_tracking = {g.tracking_identifier: g for g in groups}
    for node in findings.nodes:  # SR: finding site = station
        assert by_tracking[node.tracking_id].finding_sites[0].value.value == expected[node.number]
    segments, regions = segment_map(case.labels, findings)
    for number, station in regions:  # region segments: the phantom's voxels, the station's code
        assert np.all(case.labels[segments == number] == STATIONS[station])
        item = seg.SegmentSequence[number - 1]
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == CID_7600[station]
