"""pynetdicom tuned (dicomnode/net/tuning.py): pinned patches, identical bytes, real associations."""

from __future__ import annotations

import pynetdicom
import pytest
from conftest import MR_SOP, mr_series, node_config, running_node
from netutil import store_association
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from dicomnode.net import tuning


def test_installed_pynetdicom_is_the_reviewed_one():
    """pyproject pins pynetdicom to the version the patches were reviewed against."""
    assert pynetdicom.__version__ == tuning.PINNED_VERSION


@pytest.mark.parametrize("name", sorted(tuning.PATCHED))
def test_patched_pynetdicom_source_is_what_was_reviewed(name):
    """Fails when pynetdicom's code under a patch changes: review the patch, then its digest."""
    assert tuning.source_digest(name) == tuning.PATCHED[name], \
        f"{name} changed upstream; re-read it against dicomnode/net/tuning.py before updating the digest"


def _rsp(status: int, **extra) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo, rsp.Status = 7, status
    rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = MR_SOP, "1.2.826.0.1.3680043.8.498.123"
    for key, value in extra.items():
        setattr(rsp, key, value)
    return rsp


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0x0122])
def test_fast_store_response_is_byte_identical_to_pynetdicoms(status):
    rsp = _rsp(status)
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    [pdata] = list(message.encode_msg(1, 16384))
    assert pdata.presentation_data_value_list[0][1] == b"\x03" + tuning.store_rsp_bytes(rsp)


def test_a_response_with_an_error_comment_takes_pynetdicoms_path():
    assert tuning.store_rsp_bytes(_rsp(0xC000, ErrorComment="bad")) is None


def test_tuned_node_stores_and_reports_the_patches(tmp_path, plumbing_bundle):
    """A node with tuning on (the default) runs the patched reactors and still answers each
    instance of a series over one association, then releases cleanly."""
    files = mr_series(tmp_path / "in", 4, seed="tuned")
    with running_node(node_config(tmp_path, plumbing_bundle(), assembly={"quiet_s": 60})) as node:
        assert tuning.patch_state() == (True, f"patched pynetdicom {tuning.PINNED_VERSION}")
        assert node.scp.ae.maximum_pdu_size == tuning.MAX_PDU
        assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian)])
        statuses = [int(assoc.send_c_store(path).Status) for path in files]
        assoc.release()
        assert assoc.is_released
        assert statuses == [0, 0, 0, 0]
        spooled = sorted(p.name for p in node.spool.root.glob("incoming/*/*.dcm"))
    assert len(spooled) == 4


def test_direct_p_data_tf_is_byte_identical_to_pynetdicoms():
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    pdv = b"\x03" + tuning.store_rsp_bytes(_rsp(0))
    primitive = P_DATA()
    primitive.presentation_data_value_list.append((5, pdv))
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    assert tuning.p_data_tf_bytes(5, pdv) == pdu.encode()
