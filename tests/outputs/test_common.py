"""The shared "encode once, read back" step of every pipeline's outputs (outputs/common.py)."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.errors import OutputError
from dicomnode.outputs.common import encode, read_back

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, generate_uid(entropy_srcs=["read-back"])
    ds.PatientName, ds.Modality = "TEST^READBACK", "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_read_back_parses_and_keeps_the_bytes_it_checked() -> None:
    ds, store = _dataset(), {}
    back = read_back(ds, "SR", store)
    assert back.SOPInstanceUID == ds.SOPInstanceUID and back.PatientName == "TEST^READBACK"
    assert store == {str(ds.SOPInstanceUID): encode(ds)}  # encoded once; the worker writes these bytes


def test_read_back_of_an_unwritable_dataset_is_an_output_error_naming_it() -> None:
    ds = _dataset()
    del ds.file_meta.TransferSyntaxUID  # save_as cannot choose an encoding
    with pytest.raises(OutputError, match="^SEG does not encode as DICOM: "):
        read_back(ds, "SEG", {})
