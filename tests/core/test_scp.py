"""The Storage SCP on real associations: acks, bad input, watermark, allowlist, duplicates."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from conftest import MR_SOP, mr_series, node_config, running_node
from netutil import send_raw, store_association, wait_for
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dicomnode.net import status as st

CT_SOP = "1.2.840.10008.5.1.4.1.1.2"


def _raw(path: Path) -> bytes:
    return _encode(pydicom.dcmread(path))


def _encode(ds: pydicom.Dataset) -> bytes:
    """The dataset part (no preamble, no file meta) in explicit VR little endian."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    return data[meta_end:]


def _encode_as(ds: pydicom.Dataset, syntax: str) -> bytes:
    """The dataset part in an uncompressed transfer syntax (pixel bytes copied as they are)."""
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = syntax != ExplicitVRBigEndian, syntax == ImplicitVRLittleEndian
    write_dataset(buf, ds)
    return buf.getvalue()


def _spooled(node) -> list[Path]:
    return sorted(node.spool.root.glob("incoming/*/*.dcm")) + sorted(node.spool.root.glob("jobs/*/input/*.dcm"))


def test_echo_with_pynetdicom_and_dcmtk(tmp_path, plumbing_bundle):
    with running_node(node_config(tmp_path, plumbing_bundle())) as node:
        from dicomnode.net.scu import echo
        assert echo("127.0.0.1", node.port) == 0
        out = subprocess.run(["echoscu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr


def test_storescu_series_is_spooled_when_acknowledged(tmp_path, plumbing_bundle):
    """Every instance dcmtk's storescu got a success for is in the spool, byte-identical.

    That the answer waits for fsync and rename is test_durability's (a file in the page
    cache looks the same here)."""
    files = mr_series(tmp_path / "in", 12, seed="durable")
    with running_node(node_config(tmp_path, plumbing_bundle(), assembly={"quiet_s": 30})) as node:
        out = subprocess.run(["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port), *map(str, files)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        stored = _spooled(node)
        assert len(stored) == 12
        sops = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in stored}
        assert sops == {pydicom.dcmread(f).SOPInstanceUID for f in files}
        assert not list(node.spool.root.glob("tmp/*"))
        assert oct(node.spool.root.stat().st_mode & 0o777) == "0o700"


def test_bad_inputs_get_specific_statuses_and_association_keeps_working(tmp_path, plumbing_bundle, caplog):
    files = mr_series(tmp_path / "in", 3, seed="bad")
    good = pydicom.dcmread(files[0])
    raw = _raw(files[1])
    caplog.set_level(logging.WARNING)
    with running_node(node_config(tmp_path, plumbing_bundle())) as node:
        assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian), (CT_SOP, ExplicitVRLittleEndian)])
        assert assoc.is_established
        uid = pydicom.dcmread(files[1]).SOPInstanceUID
        assert send_raw(assoc, MR_SOP, uid, b"\xff\xfe garbage bytes that are not DICOM" * 3) == st.CANNOT_UNDERSTAND
        assert send_raw(assoc, MR_SOP, uid, raw[: len(raw) - 3000]) == st.CANNOT_UNDERSTAND
        no_uid = pydicom.dcmread(files[2])
        del no_uid.SOPInstanceUID
        assert send_raw(assoc, MR_SOP, "1.2.3.4", _encode(no_uid)) == st.DATASET_MISMATCH
        ct = pydicom.dcmread(files[2])
        ct.SOPClassUID = CT_SOP
        assert send_raw(assoc, CT_SOP, ct.SOPInstanceUID, _encode(ct)) == st.SOP_CLASS_NOT_SUPPORTED
        assert assoc.send_c_store(good).Status == st.SUCCESS  # same association still works
        assoc.release()
        assert len(_spooled(node)) == 1
        assert node.metrics.value("dicomnode_instances_refused_total", status="0xC210") == 2
    text = caplog.text
    assert "truncated data set" in text and "unparseable" in text
    assert "SOPInstanceUID missing" in text and "is not processed by this node" in text


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_every_uncompressed_transfer_syntax_is_read_as_negotiated(tmp_path, plumbing_bundle, caplog, syntax):
    """Headers are parsed with the context's transfer syntax (not guessed by pydicom's
    fallback, which logs a warning per instance and cannot rescue big endian)."""
    files = mr_series(tmp_path / "in", 2, seed=f"ts-{syntax}")
    caplog.set_level(logging.WARNING)
    with running_node(node_config(tmp_path, plumbing_bundle(), assembly={"quiet_s": 30})) as node:
        assoc = store_association(node.port, [(MR_SOP, syntax)])
        assert assoc.is_established and assoc.accepted_contexts[0].transfer_syntax[0] == syntax
        for path in files:
            ds = pydicom.dcmread(path)
            assert send_raw(assoc, MR_SOP, ds.SOPInstanceUID, _encode_as(ds, syntax)) == st.SUCCESS
        assoc.release()
        stored = _spooled(node)
        assert len(stored) == 2
        back = pydicom.dcmread(stored[0])
        assert back.file_meta.TransferSyntaxUID == syntax
        original = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in files}[back.SOPInstanceUID]
        assert (back.Rows, back.SeriesDescription) == (original.Rows, original.SeriesDescription)
        series = next(node.spool.root.glob("incoming/*/series.json")).read_text()
        assert original.SeriesDescription in series
    assert "Expected explicit VR" not in caplog.text and "refused" not in caplog.text


def test_disk_watermark_answers_a700_and_writes_nothing(tmp_path, plumbing_bundle):
    files = mr_series(tmp_path / "in", 2, seed="full")
    free_mb = shutil.disk_usage(tmp_path).free // (1 << 20)
    config = node_config(tmp_path, plumbing_bundle(), spool={"min_free_mb": int(free_mb * 10)})
    with running_node(config) as node:
        assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian)])
        assert assoc.send_c_store(pydicom.dcmread(files[0])).Status == st.OUT_OF_RESOURCES
        assoc.release()
        assert _spooled(node) == [] and not list(node.spool.root.glob("tmp/*"))


@pytest.mark.parametrize(("allow", "calling"), [
    ([{"ae_title": "MODALITY", "network": "127.0.0.0/8"}], "INTRUDER"),   # unknown calling AE
    ([{"ae_title": "*", "network": "10.0.0.0/8"}], "MODALITY"),           # unknown peer address
    ([], "MODALITY"),                                                      # default-deny
])
def test_allowlist_rejects_with_calling_ae_not_recognised(tmp_path, plumbing_bundle, allow, calling):
    with running_node(node_config(tmp_path, plumbing_bundle(), node={"allow": allow})) as node:
        ae = AE(ae_title=calling)
        ae.add_requested_context(MR_SOP)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.result == 0x01
        assert assoc.acceptor.primitive.diagnostic == 0x03
        assert node.metrics.value("dicomnode_associations_rejected_total") == 1


def test_allowlist_accepts_the_listed_ae_from_its_network(tmp_path, plumbing_bundle):
    allow = [{"ae_title": "MODALITY", "network": "127.0.0.1/32"}]
    with running_node(node_config(tmp_path, plumbing_bundle(), node={"allow": allow})) as node:
        from dicomnode.net.scu import echo
        assert echo("127.0.0.1", node.port, calling="MODALITY") == 0


def test_duplicate_instance_is_stored_once_and_acknowledged(tmp_path, plumbing_bundle):
    files = mr_series(tmp_path / "in", 1, seed="dup")
    with running_node(node_config(tmp_path, plumbing_bundle(), assembly={"quiet_s": 30})) as node:
        assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian)])
        ds = pydicom.dcmread(files[0])
        assert [assoc.send_c_store(ds).Status for _ in range(3)] == [0, 0, 0]
        assoc.release()
        assert len(_spooled(node)) == 1


def test_concurrent_associations_lose_and_misgroup_nothing(tmp_path, plumbing_bundle):
    from concurrent.futures import ThreadPoolExecutor

    senders, per_sender = 16, 200
    series = [mr_series(tmp_path / f"in{i}", per_sender, seed=f"conc{i}") for i in range(senders)]
    with running_node(node_config(tmp_path, plumbing_bundle(), assembly={"quiet_s": 3})) as node:
        def send(files: list[Path]) -> list[int]:
            assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian)])
            statuses = [int(assoc.send_c_store(f).Status) for f in files]
            assoc.release()
            return statuses
        with ThreadPoolExecutor(senders) as pool:
            results = list(pool.map(send, series))
        assert all(s == [0] * per_sender for s in results)
        wait_for(lambda: len(node.spool.job_ids()) == senders and node.assembler.pending() == 0, timeout=120)
        for job_id in node.spool.job_ids():
            inputs = list((node.spool.job_dir(job_id) / "input").glob("*.dcm"))
            assert len(inputs) == per_sender
            uids = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in inputs}
            assert uids == {node.spool.read_job(job_id)["series_uid"]}
