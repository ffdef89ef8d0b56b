"""MR ground truth → a label map on the series' voxel grid, with the bundle's label values.

Two sources, each checked against the series geometry (ground truth on another grid or
frame of reference is the case's error, never silently resampled):

* a label image (NIfTI, NRRD, MetaImage) read with SimpleITK: its size, spacing, origin and
  direction must equal the series volume's (:meth:`~dicomnode.dicom.volume.Volume.to_sitk`);
  its values are the bundle's label values;
* a DICOM SEG (read with highdicom; from any tool: dcmqi, a viewer, the node itself): same
  FrameOfReferenceUID, same orientation, rows and columns, and every frame on a slice of
  the series. A segment becomes a label value by its SegmentLabel: a station name
  (internal iliac / obturator / external iliac) → that region, "negative" → the node-negative
  label, "positive", "node" or "LN" → the node-positive label; otherwise its segment number
  is taken as the label value. Nodes are painted over regions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.dicom.volume import Volume
from dicomnode.evaluate.cases import CaseError
from dicomnode.pipelines.mri_lln.labels import LabelScheme

__all__ = ["node_segments", "read_label_image", "read_mr_truth", "read_seg_labels"]

_GRID_MM = 0.05  # largest origin / spacing difference (mm) still "the same grid"
_DIRECTION = 1e-3


def _close(a: Any, b: Any, tol: float) -> bool:
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), atol=tol, rtol=0))


def read_label_image(path: Path, volume: Volume) -> np.ndarray:
    """A label image on the volume grid as ``(z, y, x)`` integers.

    Raises
    ------
    CaseError
        Unreadable, or not on the series grid (the message gives both geometries).
    """
    import SimpleITK as sitk

    try:
        image: Any = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CaseError(f"cannot read label image {path.name}: {str(exc).strip().splitlines()[-1]}") from exc
    ref: Any = volume.to_sitk()
    mine = (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    theirs = (ref.GetSize(), ref.GetSpacing(), ref.GetOrigin(), ref.GetDirection())
    same = (mine[0] == theirs[0] and _close(mine[1], theirs[1], _GRID_MM) and _close(mine[2], theirs[2], _GRID_MM)
            and _close(mine[3], theirs[3], _DIRECTION))
    if not same:
        def show(g: tuple[Any, ...]) -> str:
            return (f"size {tuple(g[0])}, spacing {tuple(round(v, 3) for v in g[1])}, "
                    f"origin {tuple(round(v, 2) for v in g[2])}")
        raise CaseError(f"ground truth {path.name} is on another grid than the series "
                        f"({show(mine)} vs {show(theirs)}); resample it onto the series first")
    return np.asarray(sitk.GetArrayFromImage(image)).astype(np.int32)


def _segment_value(label: str, number: int, scheme: LabelScheme) -> int:
    text = re.sub(r"[_\-]+", " ", label.lower())
    for value, station in scheme.regions.items():
        if station.replace("_", " ") in text:
            return int(value)
    if "negative" in text:
        return scheme.negative[0]
    if "positive" in text or re.search(r"\b(node|ln)\b", text):
        return scheme.positive[0]
    return number


def _frame_slices(seg: Any, volume: Volume, name: str) -> list[tuple[int, int]]:
    """(slice index, segment number) of every SEG frame, checked against the volume grid."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    if not _close(iop, [*volume.direction[:, 0], *volume.direction[:, 1]], _DIRECTION):
        raise CaseError(f"ground truth {name}: orientation {iop} differs from the series'")
    if (int(seg.Rows), int(seg.Columns)) != volume.shape[1:]:
        raise CaseError(f"ground truth {name}: {seg.Rows}x{seg.Columns} frames on a "
                        f"{volume.shape[1]}x{volume.shape[2]} series; resample it onto the series")
    out = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        lps = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        x, y, z = volume.lps_to_index(lps)
        k = int(round(float(z)))
        if abs(x) > 0.05 or abs(y) > 0.05 or abs(z - k) > 0.05 or not 0 <= k < volume.shape[0]:
            raise CaseError(f"ground truth {name}: a frame at {[round(v, 2) for v in lps]} mm is not on a "
                            "slice of the series (another grid)")
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out.append((k, number))
    return out


def read_seg_labels(path: Path, volume: Volume, scheme: LabelScheme, frame_of_reference: str) -> np.ndarray:
    """A DICOM SEG as a label map on the volume grid (see the module docstring).

    Raises
    ------
    CaseError
        Unreadable, another frame of reference, or another grid.
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
        frames = np.asarray(seg.pixel_array).reshape(-1, int(seg.Rows), int(seg.Columns))
    except Exception as exc:  # highdicom/pydicom raise many types for a broken file
        raise CaseError(f"cannot read ground-truth SEG {path.name}: {type(exc).__name__}: {exc}") from exc
    if str(seg.get("FrameOfReferenceUID", "")) != frame_of_reference:
        raise CaseError(f"ground truth {path.name} is in another frame of reference than the series "
                        f"({seg.get('FrameOfReferenceUID')} vs {frame_of_reference})")
    if seg.SegmentationType == "FRACTIONAL":
        frames = frames > (int(seg.MaximumFractionalValue) // 2)
    values = {n: _segment_value(str(seg.get_segment_description(n).SegmentLabel), n, scheme)
              for n in seg.get_segment_numbers()}
    nodes = {*scheme.positive, *scheme.negative}
    out = np.zeros(volume.shape, np.int32)
    placed = _frame_slices(seg, volume, path.name)
    for paint_nodes in (False, True):
        for (k, number), frame in zip(placed, frames, strict=True):
            if (values[number] in nodes) == paint_nodes:
                out[k][frame.astype(bool)] = values[number]
    return out


def node_segments(path: Path, volume: Volume) -> dict[str, np.ndarray]:
    """Masks of a pipeline SEG's node segments by tracking id (``LN-1`` ...), on the volume grid."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    frames = np.asarray(seg.pixel_array).reshape(-1, int(seg.Rows), int(seg.Columns))
    names = {n: str(seg.get_segment_description(n).SegmentLabel).split(" ")[0] for n in seg.get_segment_numbers()}
    masks: dict[str, np.ndarray] = {}
    for (k, number), frame in zip(_frame_slices(seg, volume, "SEG"), frames, strict=True):
        if names[number].startswith("LN-"):
            masks.setdefault(names[number], np.zeros(volume.shape, bool))[k] |= frame.astype(bool)
    return masks


def read_mr_truth(path: Path, volume: Volume, scheme: LabelScheme, frame_of_reference: str) -> np.ndarray:
    """The ground truth of an MR case as a label map on the volume grid.

    Raises
    ------
    CaseError
        See :func:`read_label_image` and :func:`read_seg_labels`.
    """
    known = {0, *scheme.regions, *scheme.positive, *scheme.negative}
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")):
        labels = read_label_image(path, volume)
    elif name.endswith((".xml", ".geojson", ".json", ".png", ".tif", ".tiff")):
        raise CaseError(f"{path.name} is not an MR ground truth: use a DICOM SEG or a NIfTI/NRRD label image")
    else:
        labels = read_seg_labels(path, volume, scheme, frame_of_reference)
    unknown = sorted(set(np.unique(labels).tolist()) - known)
    if unknown:
        raise CaseError(f"ground truth {path.name} has label values {unknown} the model does not define "
                        f"(known: {sorted(known)})")
    return labels
