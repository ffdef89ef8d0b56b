"""One MR series → one regular 3D volume with its LPS geometry.

This is the one place where geometry and axis order are defined:

* ``Volume.array`` is ``(z, y, x)`` = (slice, row, column), float32, rescaled values.
* slices are sorted by their position along the slice normal
  ``n = row_cosines × column_cosines`` (the ``ImageOrientationPatient`` vectors), ascending,
  which is what ITK/GDCM do, so ``direction[:, 2] == n``;
* ``direction`` is 3×3 with **columns** the unit vectors of the x (column index),
  y (row index) and z (slice index) axes in patient LPS;
* ``spacing_zyx`` is (slice step, row spacing, column spacing) in mm, i.e.
  ``(step, PixelSpacing[0], PixelSpacing[1])``.

Single-frame MR (one instance per slice) and Enhanced MR multi-frame (per-frame functional
groups) are both supported. Anything that is not one regular stack (localisers mixed in,
several orientations, duplicate positions, missing slices, a different in-plane grid) is a
:class:`~dicomnode.errors.VolumeError` whose message names the problem and the instances.
Reading the planes is :mod:`dicomnode.dicom.frames`, checking that they form one stack
:mod:`dicomnode.dicom.stack`; the axes and the voxel array are made here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from dicomnode.dicom.frames import Frame, SourceFrame, frames_of
from dicomnode.dicom.stack import check_frames, check_instances, sort_and_check_spacing
from dicomnode.errors import VolumeError

if TYPE_CHECKING:
    import SimpleITK

__all__ = ["SourceFrame", "Volume", "load_volume", "read_instances"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # arrays: identity equality, hashable
class Volume:
    """A regular 3D image in patient LPS space.

    Attributes
    ----------
    array
        float32 ``(z, y, x)`` = (slice, row, column), RescaleSlope/Intercept applied.
    spacing_zyx
        Slice step, row spacing and column spacing in mm.
    origin_lps
        Patient position of the centre of voxel ``(0, 0, 0)``.
    direction
        3×3; columns are the unit vectors of the x, y, z index axes in LPS.
    sources
        One :class:`SourceFrame` per z index.
    """

    array: np.ndarray
    spacing_zyx: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    direction: np.ndarray
    sources: tuple[SourceFrame, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` shape of the voxel grid."""
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    @property
    def affine(self) -> np.ndarray:
        """4×4 matrix mapping homogeneous ``(x, y, z)`` indices (column, row, slice) to LPS."""
        aff = np.eye(4)
        aff[:3, :3] = self.direction * np.asarray(self.spacing_zyx[::-1])[None, :]
        aff[:3, 3] = self.origin_lps
        return aff

    def index_to_lps(self, ijk: Any) -> np.ndarray:
        """Map ``(x, y, z)`` = (column, row, slice) indices (``(..., 3)``) to LPS mm."""
        pts = np.asarray(ijk, dtype=float)
        lps: np.ndarray = pts @ self.affine[:3, :3].T + self.affine[:3, 3]
        return lps

    def zyx_to_lps(self, zyx: Any) -> np.ndarray:
        """Map array indices ``(z, y, x)`` (``(..., 3)``) to LPS mm."""
        return self.index_to_lps(np.asarray(zyx, dtype=float)[..., ::-1])

    def lps_to_index(self, lps: Any) -> np.ndarray:
        """Inverse of :meth:`index_to_lps`: LPS mm → continuous ``(x, y, z)`` indices."""
        pts = np.asarray(lps, dtype=float) - self.affine[:3, 3]
        ijk: np.ndarray = pts @ np.linalg.inv(self.affine[:3, :3]).T
        return ijk

    def to_sitk(self) -> SimpleITK.Image:
        """The volume as a SimpleITK image (same voxels, origin, spacing, direction)."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.array)  # SimpleITK reads numpy as (z, y, x)
        # SimpleITK ships no type hints
        image.SetSpacing([float(s) for s in self.spacing_zyx[::-1]])  # type: ignore[no-untyped-call]
        image.SetOrigin([float(v) for v in self.origin_lps])  # type: ignore[no-untyped-call]
        image.SetDirection([float(v) for v in self.direction.ravel()])  # type: ignore[no-untyped-call]
        return image


def _read(item: Path | str | Dataset) -> tuple[Dataset, Path | None]:
    if isinstance(item, Dataset):
        filename = getattr(item, "filename", None)
        return item, (Path(filename) if isinstance(filename, str) else None)
    path = Path(item)
    try:
        return pydicom.dcmread(path), path
    except Exception as exc:  # pydicom raises several types for unreadable files
        raise VolumeError(f"not a readable DICOM file: {exc}", instances=[path.name]) from exc


def read_instances(paths: Sequence[Path | str]) -> list[Dataset]:
    """Read a series' files once (for :func:`load_volume` and, pixels dropped, as SEG/SR
    evidence); an unreadable file is a :class:`VolumeError` naming it."""
    return [_read(path)[0] for path in paths]


def _axes(orientation: np.ndarray) -> np.ndarray:
    """3×3 direction matrix (columns x, y, z) from ImageOrientationPatient."""
    row = orientation[:3] / np.linalg.norm(orientation[:3])
    col = orientation[3:] / np.linalg.norm(orientation[3:])
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 0.99 or abs(float(row @ col)) > 1e-3:
        raise VolumeError(f"ImageOrientationPatient {orientation.tolist()} is not orthonormal")
    return np.stack([row, col, normal / np.linalg.norm(normal)], axis=1)


def _pixels(frames: Sequence[Frame]) -> np.ndarray:
    """Decode and rescale every frame into a float32 ``(z, y, x)`` array."""
    out = np.empty((len(frames), frames[0].rows, frames[0].columns), dtype=np.float32)
    cache: dict[int, np.ndarray] = {}
    for z, frame in enumerate(frames):
        key = id(frame.dataset)
        if key not in cache:
            try:
                cache[key] = frame.dataset.pixel_array
            except Exception as exc:  # decoders raise many types
                raise VolumeError(f"pixel data cannot be decoded: {exc}", instances=[frame.source.name]) from exc
        data = cache[key] if frame.index is None else cache[key][frame.index]
        if data.shape != out.shape[1:]:
            raise VolumeError(
                f"pixel data has shape {data.shape}, expected {out.shape[1:]}",
                instances=[frame.source.name],
            )
        out[z] = data.astype(np.float32) * np.float32(frame.slope) + np.float32(frame.intercept)
    return out


def load_volume(items: Sequence[Path | str | Dataset], *, spacing_tolerance: float = 0.01) -> Volume:
    """Build one regular volume from the instances of one series.

    Parameters
    ----------
    items
        File paths (or already read datasets) of one series: single-frame MR images, or
        Enhanced MR multi-frame instances (SOP Class 1.2.840.10008.5.1.4.1.1.4.1).
    spacing_tolerance
        Largest allowed deviation of any slice step from the median step, as a fraction
        of the median step (0.01 = 1 %).

    Returns
    -------
    Volume
        Sorted along the slice normal; see the module docstring for axis conventions.

    Raises
    ------
    VolumeError
        The instances do not form one regular volume; the message names the problem
        (localizer, orientations, in-plane grid, duplicate positions, missing slices,
        non-uniform spacing) and the offending instances.
    """
    if not items:
        raise VolumeError("no instances given")
    datasets = [_read(item) for item in items]
    check_instances(datasets)
    frames = [frame for ds, path in datasets for frame in frames_of(ds, path)]
    check_frames(frames)
    direction = _axes(frames[0].orientation)
    ordered, step = sort_and_check_spacing(frames, direction, spacing_tolerance)
    first = ordered[0]
    volume = Volume(
        array=_pixels(ordered),
        spacing_zyx=(step, first.pixel_spacing[0], first.pixel_spacing[1]),
        origin_lps=tuple(float(v) for v in first.position),  # type: ignore[arg-type]
        direction=direction,
        sources=tuple(f.source for f in ordered),
    )
    logger.debug("volume %s from %d instance(s)", volume.shape, len(datasets))
    return volume
