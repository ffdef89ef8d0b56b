"""Header-only reads: the few attributes routing, assembly and logs need.

No pixel data is decoded here. PHI (PatientName, PatientID, PatientBirthDate) is never
part of the routing header set, so it cannot leak into logs or sidecars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

__all__ = ["ROUTING_KEYWORDS", "InstanceInfo", "instance_info", "read_info", "routing_headers"]

#: Attributes kept in ``series.json`` and offered to routing rules.
ROUTING_KEYWORDS = (
    "SOPClassUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription",
    "ProtocolName", "SequenceName", "ScanningSequence", "SeriesNumber", "BodyPartExamined",
    "ImageType", "MagneticFieldStrength", "Manufacturer", "ManufacturerModelName",
    "StationName", "InstitutionName", "SliceThickness", "ContainerIdentifier",
)

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
ENHANCED_MR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4.1"


@dataclass(frozen=True)
class InstanceInfo:
    """What the assembler needs of one instance (kept in memory, rebuilt from disk)."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    position: tuple[float, ...] | None = None  # ImagePositionPatient
    orientation: tuple[float, ...] | None = None
    images_in_acquisition: int | None = None
    frames: int = 1
    image_type: str = ""
    tpm: tuple[int, int] | None = None  # TotalPixelMatrix (cols, rows)
    tile: tuple[int, int] | None = None  # (Columns, Rows)
    planes: int = 1  # focal planes x optical paths
    tiled_full: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _floats(ds: Dataset, keyword: str) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def instance_info(ds: Dataset) -> InstanceInfo:
    """Extract :class:`InstanceInfo` from a (header-only) dataset.

    Raises ``KeyError``/``AttributeError`` when a required UID is absent; the caller maps
    that to a DIMSE status.
    """
    info = InstanceInfo(
        sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
        series_uid=str(ds.SeriesInstanceUID), study_uid=str(ds.StudyInstanceUID),
        position=_floats(ds, "ImagePositionPatient"), orientation=_floats(ds, "ImageOrientationPatient"),
        images_in_acquisition=_int(ds, "ImagesInAcquisition"), frames=_int(ds, "NumberOfFrames") or 1,
        image_type="\\".join(str(v) for v in (ds.get("ImageType") or [])),
    )
    if info.sop_class_uid != WSI_SOP_CLASS:
        return info
    cols, rows = _int(ds, "TotalPixelMatrixColumns"), _int(ds, "TotalPixelMatrixRows")
    planes = (_int(ds, "TotalPixelMatrixFocalPlanes") or 1) * (_int(ds, "NumberOfOpticalPaths") or 1)
    return InstanceInfo(**{**asdict(info), "tpm": (cols, rows) if cols and rows else None,
                           "tile": (_int(ds, "Columns") or 0, _int(ds, "Rows") or 0), "planes": planes,
                           "tiled_full": ds.get("DimensionOrganizationType") == "TILED_FULL"})


def routing_headers(ds: Dataset) -> dict[str, Any]:
    """Flat ``{keyword: value}`` of :data:`ROUTING_KEYWORDS` present in ``ds`` (JSON-safe)."""
    out: dict[str, Any] = {}
    for keyword in ROUTING_KEYWORDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        if isinstance(value, pydicom.multival.MultiValue):
            out[keyword] = [str(v) for v in value]
        elif isinstance(value, (int, float)):
            out[keyword] = value
        else:
            out[keyword] = str(value)
    return out


def read_info(path: Path) -> tuple[InstanceInfo, dict[str, Any]]:
    """Read a spooled file's header (no pixels) → (info, routing headers)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return instance_info(ds), routing_headers(ds)
