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

A model trained on arrays of one orientation gets its input in that orientation:
:func:`to_model_grid` permutes and reverses the array's axes (no resampling) so that each
axis points the way the model's bundle declares (an axis code such as ``"LPS"``), and
:meth:`ModelGrid.restore` puts the model's label map back onto the volume's grid.
"""

from __future__ import annotations

import itertools
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

__all__ = [
    "ModelGrid",
    "SourceFrame",
    "Volume",
    "is_axis_code",
    "load_volume",
    "read_instances",
    "to_model_grid",
]

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


#: Axis-code letter → (LPS axis, sign): the patient direction an index axis increases towards.
_TOWARDS = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


def is_axis_code(code: object) -> bool:
    """True for a valid axis code: three letters of ``LRPAIS``, one per patient axis.

    Letter k names the patient direction towards which index axis k (x = column, y = row,
    z = slice, as in ITK/NIfTI images) increases, as nibabel's ``aff2axcodes`` does:
    ``"LPS"`` is a head-first-supine axial DICOM series (columns to the patient's left,
    rows to posterior, slices to superior).
    """
    return (
        isinstance(code, str)
        and len(code) == 3
        and all(c in _TOWARDS for c in code)
        and len({_TOWARDS[c][0] for c in code}) == 3
    )


@dataclass(frozen=True, eq=False)  # arrays: identity equality
class ModelGrid:
    """A volume's voxels with their axes permuted and reversed for a model (no resampling).

    Attributes
    ----------
    array
        ``(z, y, x)`` array in the model's orientation (C-contiguous).
    spacing_zyx
        Spacing of ``array``'s axes in mm.
    order
        ``numpy.transpose`` axes taking the volume's array to the model's axis order.
    flips
        Axes of the transposed array that are then reversed.
    """

    array: np.ndarray
    spacing_zyx: tuple[float, float, float]
    order: tuple[int, int, int]
    flips: tuple[int, ...]

    def restore(self, label_map: np.ndarray) -> np.ndarray:
        """Map an array on the model's grid (e.g. its label map) back onto the volume's grid."""
        back = np.flip(np.asarray(label_map), axis=self.flips) if self.flips else np.asarray(label_map)
        return np.ascontiguousarray(np.transpose(back, np.argsort(self.order)))


def to_model_grid(volume: Volume, code: str | None) -> ModelGrid:
    """The volume's array in the orientation a model was trained in.

    Parameters
    ----------
    volume
        The source volume.
    code
        The model's axis code (:func:`is_axis_code`), or None to keep the stored order.

    Returns
    -------
    ModelGrid
        Each index axis of the volume goes to the model axis whose patient direction it is
        closest to (the permutation with the largest total ``|cos|``, so an oblique series
        maps as its nearest orthogonal one), reversed where it points the opposite way.

    Raises
    ------
    VolumeError
        ``code`` is not a valid axis code.
    """
    if code is None:
        return ModelGrid(np.ascontiguousarray(volume.array), volume.spacing_zyx, (0, 1, 2), ())
    if not is_axis_code(code):
        raise VolumeError(f"axis code {code!r} is not three letters of LRPAIS, one per patient axis")
    want = [_TOWARDS[c] for c in code]  # per model axis x, y, z: (LPS axis, sign)
    cos = volume.direction  # columns: the volume's x, y, z axes in LPS

    def fit(perm: tuple[int, ...]) -> float:  # perm[a] = model axis of volume axis a
        return sum(abs(float(cos[want[perm[a]][0], a])) for a in range(3))

    perm = max(itertools.permutations(range(3)), key=fit)
    order, flips = [0, 0, 0], []
    for a, t in enumerate(perm):  # image axis a is array axis 2 - a
        order[2 - t] = 2 - a
        axis, sign = want[t]
        if cos[axis, a] * sign < 0:
            flips.append(2 - t)
    array = np.transpose(volume.array, order)
    array = np.flip(array, axis=tuple(flips)) if flips else array
    spacing = tuple(volume.spacing_zyx[o] for o in order)
    return ModelGrid(np.ascontiguousarray(array), spacing, tuple(order), tuple(sorted(flips)))  # type: ignore[arg-type]
