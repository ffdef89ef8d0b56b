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

from dicomnode.errors import VolumeError

if TYPE_CHECKING:
    import SimpleITK

__all__ = ["SourceFrame", "Volume", "load_volume", "read_instances"]

logger = logging.getLogger(__name__)

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
_ORIENTATION_TOL = 1e-3  # max difference of direction cosines for "same orientation"
_PIXEL_SPACING_TOL = 1e-4  # mm


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


@dataclass(frozen=True)
class _Frame:
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


def _make_frame(source: SourceFrame, ds: Dataset, index: int | None, plane: Dataset, transform: Dataset) -> _Frame:
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
        frame = _Frame(
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


def _enhanced_frame(ds: Dataset, path: Path | None, shared: Dataset | None, i: int) -> _Frame:
    per_frame = ds.PerFrameFunctionalGroupsSequence[i]
    plane = Dataset()
    for macro in ("PlanePosition", "PlaneOrientation", "PixelMeasures", "MRImageFrameType"):
        plane.update(_first_item(per_frame, shared, seq=f"{macro}Sequence") or Dataset())
    transform = _first_item(per_frame, shared, seq="PixelValueTransformationSequence") or Dataset()
    return _make_frame(SourceFrame(path, str(ds.SOPInstanceUID), i + 1), ds, i, plane, transform)


def _frames_of(ds: Dataset, path: Path | None) -> list[_Frame]:
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


def _check_instances(datasets: Sequence[tuple[Dataset, Path | None]]) -> None:
    """One series, image instances only."""
    names = {id(ds): (p.name if p else str(ds.get("SOPInstanceUID", "?"))) for ds, p in datasets}
    no_pixels = [names[id(ds)] for ds, _ in datasets if "PixelData" not in ds]
    if no_pixels:
        raise VolumeError("instances without pixel data are not images", instances=no_pixels)
    by_series: dict[str, list[str]] = {}
    for ds, _ in datasets:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(names[id(ds)])
    if len(by_series) > 1:
        smallest = min(by_series.values(), key=len)
        raise VolumeError(
            f"instances from {len(by_series)} different series (SeriesInstanceUID) were given; "
            "a volume is built from one series",
            instances=smallest,
        )


def _check_frames(frames: Sequence[_Frame]) -> None:
    """No localisers; one orientation; one in-plane grid."""
    localizers = [f.source.name for f in frames if f.localizer]
    if localizers:
        raise VolumeError(
            f"{len(localizers)} localizer image(s) (ImageType LOCALIZER) mixed into the series",
            instances=localizers,
        )
    ref = frames[0]
    other = [f for f in frames if np.abs(f.orientation - ref.orientation).max() > _ORIENTATION_TOL]
    if other:
        raise VolumeError(
            "more than one orientation (ImageOrientationPatient) in the series: "
            f"{len(frames) - len(other)} plane(s) at {np.round(ref.orientation, 3).tolist()}, "
            f"{len(other)} at {np.round(other[0].orientation, 3).tolist()}",
            instances=[f.source.name for f in other],
        )
    grid = [
        f
        for f in frames
        if (f.rows, f.columns) != (ref.rows, ref.columns)
        or np.abs(np.subtract(f.pixel_spacing, ref.pixel_spacing)).max() > _PIXEL_SPACING_TOL
    ]
    if grid:
        raise VolumeError(
            "inconsistent in-plane grid (Rows/Columns/PixelSpacing): "
            f"{ref.rows}x{ref.columns} at {ref.pixel_spacing} mm vs "
            f"{grid[0].rows}x{grid[0].columns} at {grid[0].pixel_spacing} mm",
            instances=[f.source.name for f in grid],
        )


def _axes(orientation: np.ndarray) -> np.ndarray:
    """3×3 direction matrix (columns x, y, z) from ImageOrientationPatient."""
    row = orientation[:3] / np.linalg.norm(orientation[:3])
    col = orientation[3:] / np.linalg.norm(orientation[3:])
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 0.99 or abs(float(row @ col)) > 1e-3:
        raise VolumeError(f"ImageOrientationPatient {orientation.tolist()} is not orthonormal")
    return np.stack([row, col, normal / np.linalg.norm(normal)], axis=1)


def _sort_and_check_spacing(
    frames: Sequence[_Frame], direction: np.ndarray, tolerance: float
) -> tuple[list[_Frame], float]:
    """Sort along the normal; check positions form one line of evenly spaced slices."""
    dist = np.array([f.position @ direction[:, 2] for f in frames])
    order = np.argsort(dist, kind="stable")
    ordered = [frames[i] for i in order]
    dist = dist[order]
    _check_collinear(ordered, direction)
    if len(ordered) == 1:
        raise VolumeError("a volume needs at least two slices", instances=[ordered[0].source.name])
    steps = np.diff(dist)
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        pairs = [n for i in dup[:3] for n in (ordered[i].source.name, ordered[i + 1].source.name)]
        raise VolumeError(
            f"{dup.size} slice position(s) occur more than once (several stacks, echoes or repeats in one series)",
            instances=pairs,
        )
    return ordered, _uniform_step(ordered, steps, tolerance)


def _uniform_step(ordered: Sequence[_Frame], steps: np.ndarray, tolerance: float) -> float:
    step = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - step) > tolerance * step)
    if bad.size == 0:
        return float((steps.sum()) / steps.size)
    i = int(bad[0])
    between = [ordered[i].source.name, ordered[i + 1].source.name]
    ratio = steps[i] / step
    if ratio > 1.5 and abs(ratio - round(ratio)) <= tolerance * round(ratio):
        raise VolumeError(
            f"missing slice(s): {round(ratio) - 1} slice(s) missing between two slices "
            f"{steps[i]:.3f} mm apart (expected {step:.3f} mm); {bad.size} gap(s) in total",
            instances=between,
        )
    raise VolumeError(
        f"non-uniform slice spacing: step {steps[i]:.3f} mm where the series has "
        f"{step:.3f} mm (tolerance {tolerance:.1%})",
        instances=between,
    )


def _check_collinear(ordered: Sequence[_Frame], direction: np.ndarray) -> None:
    """Every slice origin must lie on the line through the first along the normal."""
    first = ordered[0].position
    offsets = np.array([f.position - first for f in ordered])
    in_plane = offsets @ direction[:, :2]
    bad = np.flatnonzero(np.abs(in_plane).max(axis=1) > 0.5 * min(ordered[0].pixel_spacing))
    if bad.size:
        raise VolumeError(
            f"{bad.size} slice(s) are shifted in-plane relative to the first slice (not one stack)",
            instances=[ordered[int(i)].source.name for i in bad],
        )


def _pixels(frames: Sequence[_Frame]) -> np.ndarray:
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
    _check_instances(datasets)
    frames = [frame for ds, path in datasets for frame in _frames_of(ds, path)]
    _check_frames(frames)
    direction = _axes(frames[0].orientation)
    ordered, step = _sort_and_check_spacing(frames, direction, spacing_tolerance)
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
