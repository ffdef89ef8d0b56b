"""Checks that the planes of one series form one regular stack.

One series of image instances; no localisers; one orientation; one in-plane grid; slice
origins on one line along the normal, no position twice, evenly spaced. Each failure is a
:class:`~dicomnode.errors.VolumeError` whose message names the problem and the instances
(used by :func:`dicomnode.dicom.volume.load_volume`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.dicom.frames import Frame
from dicomnode.errors import VolumeError

__all__ = ["check_frames", "check_instances", "sort_and_check_spacing"]

_ORIENTATION_TOL = 1e-3  # max difference of direction cosines for "same orientation"
_PIXEL_SPACING_TOL = 1e-4  # mm


def check_instances(datasets: Sequence[tuple[Dataset, Path | None]]) -> None:
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


def check_frames(frames: Sequence[Frame]) -> None:
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


def sort_and_check_spacing(
    frames: Sequence[Frame], direction: np.ndarray, tolerance: float
) -> tuple[list[Frame], float]:
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


def _uniform_step(ordered: Sequence[Frame], steps: np.ndarray, tolerance: float) -> float:
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


def _check_collinear(ordered: Sequence[Frame], direction: np.ndarray) -> None:
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

