"""The planes of an MR series, each with the geometry it was acquired with.

A single-frame instance is one plane; an Enhanced MR instance (SOP Class
1.2.840.10008.5.1.4.1.1.4.1) has one plane per frame, its geometry taken from the per-frame
functional groups, else the shared ones. Used by :mod:`dicomnode.dicom.volume`; a missing
or malformed geometry attribute is a :class:`~dicomnode.errors.VolumeError` naming the
instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.errors import VolumeError

__all__ = ["Frame", "SourceFrame", "frames_of"]


@dataclass(frozen=True)
class SourceFrame:
    """Where one z slice of a :class:`Volume` came from.

    Attributes
    ----------
    path
        File the instance was read from (``None`` when a dataset was given).
    sop_instance_uid
        SOPInstanceUID of the instance.
    frame_number
        1-based frame number within an Enhanced MR instance, ``None`` for single-frame.
    """

    path: Path | None
    sop_instance_uid: str
    frame_number: int | None = None

    @property
    def name(self) -> str:
        """Short human name for messages: the file name, else the SOP Instance UID."""
        base = self.path.name if self.path is not None else self.sop_instance_uid
        return base if self.frame_number is None else f"{base}#frame{self.frame_number}"


@dataclass(frozen=True)
class Frame:
    """One 2D plane of the series with its geometry (internal)."""

    source: SourceFrame
    dataset: Dataset
    index: int | None  # 0-based frame index into a multi-frame pixel array
    orientation: np.ndarray  # (6,)
    position: np.ndarray  # (3,)
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float
    localizer: bool


def _first_item(*groups: Dataset | None, seq: str) -> Dataset | None:
    """First item of sequence ``seq`` in the first group that has it (per-frame, shared)."""
    for group in groups:
        if group is not None and group.get(seq):
            return group.get(seq)[0]  # type: ignore[no-any-return]
    return None


def _is_localizer(ds: Dataset) -> bool:
    image_type = [str(v).upper() for v in (ds.get("ImageType") or ds.get("FrameType") or [])]
    return "LOCALIZER" in image_type or "SCOUT" in image_type


def _require(value: Any, what: str, source: SourceFrame) -> Any:
    if value is None or (isinstance(value, Dataset) and not value):
        raise VolumeError(f"{what} is missing, cannot place the slice", instances=[source.name])
    return value


def _make_frame(source: SourceFrame, ds: Dataset, index: int | None, plane: Dataset, transform: Dataset) -> Frame:
    """A plane from a dataset (or functional-group items merged into ``plane``)."""
    iop, ipp, spacing, rows, columns = (
        _require(plane.get(k, ds.get(k)), k, source)
        for k in (
            "ImageOrientationPatient",
            "ImagePositionPatient",
            "PixelSpacing",
            "Rows",
            "Columns",
        )
    )
    try:
        frame = Frame(
            source=source,
            dataset=ds,
            index=index,
            orientation=np.asarray(iop, float).reshape(6),
            position=np.asarray(ipp, float).reshape(3),
            pixel_spacing=(float(spacing[0]), float(spacing[1])),
            rows=int(rows),
            columns=int(columns),
            slope=float(transform.get("RescaleSlope", 1.0) or 1.0),
            intercept=float(transform.get("RescaleIntercept", 0.0) or 0.0),
            localizer=_is_localizer(ds) or _is_localizer(plane),
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise VolumeError(f"malformed geometry attribute: {exc}", instances=[source.name]) from exc
    return frame


def _enhanced_frame(ds: Dataset, path: Path | None, shared: Dataset | None, i: int) -> Frame:
    per_frame = ds.PerFrameFunctionalGroupsSequence[i]
    plane = Dataset()
    for macro in ("PlanePosition", "PlaneOrientation", "PixelMeasures", "MRImageFrameType"):
        plane.update(_first_item(per_frame, shared, seq=f"{macro}Sequence") or Dataset())
    transform = _first_item(per_frame, shared, seq="PixelValueTransformationSequence") or Dataset()
    return _make_frame(SourceFrame(path, str(ds.SOPInstanceUID), i + 1), ds, i, plane, transform)


def frames_of(ds: Dataset, path: Path | None) -> list[Frame]:
    """Split an instance into its planes (one for single-frame, N for Enhanced MR)."""
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return [_make_frame(SourceFrame(path, str(ds.SOPInstanceUID)), ds, None, ds, ds)]
    shared = _first_item(ds, seq="SharedFunctionalGroupsSequence")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if len(ds.PerFrameFunctionalGroupsSequence) != n_frames:
        raise VolumeError(
            f"NumberOfFrames is {n_frames} but there are "
            f"{len(ds.PerFrameFunctionalGroupsSequence)} per-frame functional group items",
            instances=[str(ds.SOPInstanceUID)],
        )
    return [_enhanced_frame(ds, path, shared, i) for i in range(n_frames)]

