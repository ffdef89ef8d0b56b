"""The phantom as MR Image Storage instances: the series header and one dataset per slice.

UIDs derive from the case key (:func:`~dicomnode.dicom.uids.derive_uid`), so the same
arguments give the same instances. Part of :mod:`dicomnode.synth.mr`.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pydicom.valuerep import format_number_as_ds

from dicomnode.dicom.uids import derive_uid
from dicomnode.synth.mr.phantom import Geometry

__all__ = ["series_header", "slice_dataset"]


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def series_header(seed: int, key: str) -> pydicom.Dataset:
    """Patient / study / series / frame-of-reference / equipment / MR modules."""
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "SYNTHETIC^PHANTOM"
    ds.PatientID = f"SYNTH-{seed:06d}"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = derive_uid("synth-mr", key, "study")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "120000"
    ds.StudyID = f"S{seed % 10**6}"
    ds.AccessionNumber = f"SYN{seed % 10**8}"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MRI PELVIS SYNTHETIC"
    ds.Modality = "MR"
    ds.SeriesInstanceUID = derive_uid("synth-mr", key, "series")
    ds.SeriesNumber = 3
    ds.SeriesDescription = "T2 TSE AX PELVIS SYNTHETIC"
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "PELVIS"
    ds.FrameOfReferenceUID = derive_uid("synth-mr", key, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "dicomnode synthetic phantom"
    ds.ManufacturerModelName = "dicomnode.synth.mr"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = "4000"
    ds.EchoTime = "90"
    ds.EchoTrainLength = 16
    ds.MagneticFieldStrength = "3"
    ds.ImagedNucleus = "1H"
    ds.AcquisitionNumber = 1
    return ds


def slice_dataset(
    header: pydicom.Dataset, geom: Geometry, pixels: np.ndarray, k: int, key: str
) -> pydicom.Dataset:
    """One MR Image Storage instance for slice ``k``."""
    ds = pydicom.Dataset()
    ds.update(header)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = derive_uid("synth-mr", key, "instance", str(k))
    ds.InstanceNumber = k + 1
    ds.ImagesInAcquisition = geom.shape[0]
    position = geom.slice_position(k)
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in (*geom.row, *geom.col)]
    ds.SliceLocation = _ds(float(position @ geom.normal))
    dz, dy, dx = geom.spacing
    ds.PixelSpacing = [_ds(dy), _ds(dx)]
    ds.SliceThickness = _ds(dz)
    ds.SpacingBetweenSlices = _ds(dz)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = "700", "1400"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
