"""The requestor's fast paths (dicomnode/net/wire.py): the same bytes and primitives as
pynetdicom's own code, and ``replay`` sending every file's data set unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pydicom
import pytest
from conftest import MR_SOP, mr_series
from netutil import storage_scp
from pydicom.data import get_testdata_file
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset as pynetdicom_split_dataset
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dicomnode.net import tuning, wire
from dicomnode.replay import scan, send


def _request(path, message_id=3):
    """The C-STORE-RQ primitive ``send_c_store(path)`` builds (chunked send)."""
    meta, offset = pynetdicom_split_dataset(path)
    req = C_STORE()
    req.MessageID, req.Priority = message_id, 2
    req._dataset_path = (path, offset)
    req.AffectedSOPClassUID = meta.MediaStorageSOPClassUID
    req.AffectedSOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return req


def _pynetdicom_bytes(req, context_id, max_pdu):
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    out = b""
    for pdata in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        out += pdu.encode()
    return out


def _wire_bytes(req, context_id, max_pdu):
    path, offset = req._dataset_path
    with open(path, "rb") as fh:
        length = fh.seek(0, 2) - fh.seek(offset)
        return b"".join(wire.store_rq_batches(wire.store_rq_bytes(req), fh.read, length, context_id, max_pdu))


def _big_mr(path, rows):
    """An MR instance of ``rows`` x 1024 16-bit pixels (2 MB per 1,000 rows)."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = rows, 1024
    ds.PixelData = np.arange(rows * 1024, dtype=np.uint16).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("max_pdu", [16384, 4096, 131072])
def test_fast_store_request_is_byte_identical_to_pynetdicoms(tmp_path, max_pdu):
    """Small and large (several writes of SEND_BATCH) files, and a data set that is an exact
    number of fragments: the same PDUs, fragments and flags as pynetdicom's encode_msg."""
    small = mr_series(tmp_path / "mr", 1, seed="rq")[0]
    big = _big_mr(tmp_path / "big.dcm", 1300)
    for path in (small, big):
        req = _request(path)
        assert _wire_bytes(req, 5, max_pdu) == _pynetdicom_bytes(req, 5, max_pdu)
    req = _request(small, message_id=65535)
    exact = (small.stat().st_size - req._dataset_path[1]) // 2 + 6  # two fragments exactly
    assert _wire_bytes(req, 1, exact) == _pynetdicom_bytes(req, 1, exact)


def test_fast_store_request_of_an_empty_data_set_is_pynetdicoms(tmp_path):
    """A file that is only its file meta: one empty last fragment, as pynetdicom sends it."""
    source = mr_series(tmp_path / "mr", 1, seed="empty")[0]
    _, offset = pynetdicom_split_dataset(source)
    path = tmp_path / "meta-only.dcm"
    path.write_bytes(source.read_bytes()[:offset])
    req = _request(path)
    assert req._dataset_path[1] == offset
    assert _wire_bytes(req, 3, 16384) == _pynetdicom_bytes(req, 3, 16384)


def test_a_request_that_is_not_a_plain_file_store_takes_pynetdicoms_path(tmp_path):
    req = _request(mr_series(tmp_path / "mr", 1, seed="move")[0])
    req.MoveOriginatorApplicationEntityTitle, req.MoveOriginatorMessageID = "MOVER", 9
    assert wire.store_rq_bytes(req) is None


def test_fast_file_meta_split_equals_pynetdicoms(tmp_path, testdata):
    """The same raw file meta elements (values and positions), encoding and data set offset
    for MR, SEG, SR and JPEG-LS files; the fast reader (not the fallback) read the MR."""
    paths = [*mr_series(tmp_path / "mr", 2, seed="meta"), *sorted((testdata / "seg-sr").rglob("*.dcm")),
             get_testdata_file("CT_small.dcm"), get_testdata_file("JPEG2000.dcm")]
    for path in paths:
        ours, theirs = wire.split_dataset(path), pynetdicom_split_dataset(path)
        assert ours[1] == theirs[1], path
        assert ours[0]._dict == theirs[0]._dict, path
        assert ours[0].original_encoding == theirs[0].original_encoding
        assert ours[0].original_character_set == theirs[0].original_character_set
    with open(paths[0], "rb") as fh:
        assert wire._file_meta(fh.read(4096)) is not None


def test_a_file_without_preamble_is_refused_as_pynetdicom_refuses_it(tmp_path):
    path = tmp_path / "raw.dcm"
    path.write_bytes(mr_series(tmp_path / "mr", 1, seed="raw")[0].read_bytes()[132:])
    with pytest.raises(InvalidDicomError):
        pynetdicom_split_dataset(path)
    with pytest.raises(InvalidDicomError):
        wire.split_dataset(path)


def _rsp_pdv(status, instance, **extra):
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo, rsp.Status = 7, status
    rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = MR_SOP, instance
    for key, value in extra.items():
        setattr(rsp, key, value)
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    [pdata] = list(message.encode_msg(1, 16384))
    return pdata.presentation_data_value_list[0][1]


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC211, 0xB000])
@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.826.0.1.3680043.8.498.12345"])
def test_fast_store_response_is_the_primitive_pynetdicom_makes(status, instance):
    pdv = _rsp_pdv(status, instance)
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((9, pdv))
    message = DIMSEMessage()
    assert message.decode_msg(pdata, None)
    assert wire.store_rsp_primitive(pdv, 9).__dict__ == message.message_to_primitive().__dict__


def test_a_response_with_an_error_comment_is_left_to_pynetdicom():
    assert wire.store_rsp_primitive(_rsp_pdv(0xC000, "1.2.3.4", ErrorComment="disk full"), 1) is None


def test_replay_sends_every_files_data_set_unchanged(tmp_path):
    """In-process replay (two associations, read-ahead, one file larger than READ_AHEAD_MAX
    and SEND_BATCH) to a pynetdicom SCP: each C-STORE carries its own file's data set bytes."""
    folder = tmp_path / "in"
    mr_series(folder, 7, seed="unchanged")
    _big_mr(folder / "9999.dcm", wire.READ_AHEAD_MAX // 2048 + 100)
    received: dict[str, bytes] = {}
    lock = threading.Lock()

    def handle(event):
        path = event.request._dataset_path  # a node started in this process turns chunked receives on
        if path is None:
            data = event.request.DataSet.getvalue()
        else:
            data = path.read_bytes()[pynetdicom_split_dataset(path)[1]:]
        with lock:
            received[str(event.request.AffectedSOPInstanceUID)] = data
        return 0x0000

    server, port = storage_scp("BYTES", handle)
    try:
        files = scan([folder])[0]
        statuses = send(files, "127.0.0.1", port, called="BYTES", concurrency=2)
    finally:
        server.shutdown()
    assert tuning.patch_state()[0]
    assert statuses == {"0x0000 Success": len(files)}
    expected = {}
    for item in files:
        meta, offset = pynetdicom_split_dataset(item.path)
        expected[str(meta.MediaStorageSOPInstanceUID)] = item.path.read_bytes()[offset:]
    assert received.keys() == expected.keys()
    assert all(received[uid] == expected[uid] for uid in expected)
