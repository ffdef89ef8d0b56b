"""The same MR series stored in another orientation: rows or columns reversed, or swapped.

Pixels are reversed/transposed and ImageOrientationPatient, ImagePositionPatient,
PixelSpacing and SliceLocation follow, so every voxel keeps its patient position; a swap
also reverses the slice normal (row × column), so the slices sort the other way. New
Series/SOP Instance UIDs derive from the originals and the variant. Part of
:mod:`dicomnode.synth.mr`; test and benchmark data, NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pydicom
from pydicom.valuerep import format_number_as_ds

from dicomnode.dicom.uids import derive_uid

__all__ = ["VARIANTS", "stored_as", "variant_name"]

#: (reverse rows, reverse columns, swap rows and columns): the eight axial storage variants.
VARIANTS: tuple[tuple[bool, bool, bool], ...] = tuple(itertools.product((False, True), (False, True), (False, True)))


def variant_name(variant: tuple[bool, bool, bool]) -> str:
    """``rows1-cols0-swap0`` for rows reversed, and so on."""
    rows, cols, swap = (int(v) for v in variant)
    return f"rows{rows}-cols{cols}-swap{swap}"


def _floats(values: object) -> np.ndarray:
    return np.array([float(v) for v in values])  # type: ignore[attr-defined]


def _one(ds: pydicom.Dataset, variant: tuple[bool, bool, bool]) -> pydicom.Dataset:
    flip_rows, flip_cols, swap = variant
    out = copy.deepcopy(ds)
    pixels = ds.pixel_array
    row, col = _floats(ds.ImageOrientationPatient[:3]), _floats(ds.ImageOrientationPatient[3:])
    origin = _floats(ds.ImagePositionPatient)
    dy, dx = (float(v) for v in ds.PixelSpacing)  # between rows (along col), between columns (along row)
    if flip_rows:
        origin, col, pixels = origin + (pixels.shape[0] - 1) * dy * col, -col, pixels[::-1, :]
    if flip_cols:
        origin, row, pixels = origin + (pixels.shape[1] - 1) * dx * row, -row, pixels[:, ::-1]
    if swap:
        row, col, dy, dx, pixels = col, row, dx, dy, pixels.T
    out.ImageOrientationPatient = [format_number_as_ds(float(v)) for v in (*row, *col)]
    out.ImagePositionPatient = [format_number_as_ds(float(v)) for v in origin]
    out.PixelSpacing = [format_number_as_ds(dy), format_number_as_ds(dx)]
    out.SliceLocation = format_number_as_ds(float(origin @ np.cross(row, col)))
    out.Rows, out.Columns = pixels.shape
    out.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    tag = variant_name(variant)
    out.SeriesInstanceUID = derive_uid("synth-mr-variant", str(ds.SeriesInstanceUID), tag)
    out.SOPInstanceUID = derive_uid("synth-mr-variant", str(ds.SOPInstanceUID), tag)
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out


def stored_as(datasets: list[pydicom.Dataset], variant: tuple[bool, bool, bool]) -> list[pydicom.Dataset]:
    """``datasets`` (one single-frame MR series, 16-bit unsigned pixels) stored as ``variant``.

    Parameters
    ----------
    datasets
        The series' instances (e.g. :attr:`SyntheticCase.datasets`); not changed.
    variant
        ``(reverse rows, reverse columns, swap rows and columns)``, one of :data:`VARIANTS`.

    Returns
    -------
    list of pydicom.Dataset
        New instances in the order of ``datasets``.
    """
    return [_one(ds, variant) for ds in datasets]
