"""Station and side of a lymph node.

* station: the region label with most voxels in a small dilation of the node, else the
  nearest region voxel (physical distance), else unknown;
* side: LPS x of the node centroid vs the pelvic midline (+x is patient left). The
  midline is the mean of the left/right midpoints of each bilateral region label, falling
  back to the centre of the volume.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dicomnode.dicom.volume import Volume
from dicomnode.pipelines.mri_lln.labels import LabelScheme

__all__ = ["FACES", "centroid_zyx", "pelvic_midline", "region_map", "station_by_distance", "station_by_overlap"]

#: Face connectivity in 3D: what makes voxels one node or one region blob.
FACES = ndimage.generate_binary_structure(3, 1)
_GROW = 2  # voxels of face dilation around a node when looking for its region
_MIN_SIDE_SEPARATION_MM = 20.0  # left/right region blobs closer than this are one side


def region_map(label_map: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Label map with only region labels kept (0 elsewhere)."""
    keep = np.isin(label_map, list(scheme.regions))
    return np.where(keep, label_map, 0)


def station_by_overlap(regions: np.ndarray, node_map: np.ndarray, number: int, box: tuple[slice, ...]) -> int:
    """Most frequent region label in a small face dilation of the node (0 if none)."""
    padded = tuple(
        slice(max(b.start - _GROW, 0), min(b.stop + _GROW, n)) for b, n in zip(box, regions.shape, strict=True)
    )
    node = node_map[padded] == number
    grown = ndimage.binary_dilation(node, FACES, iterations=_GROW)
    values = regions[padded][grown & ~node]
    values = values[values > 0]
    if values.size == 0:
        return 0
    labels, counts = np.unique(values, return_counts=True)
    return int(labels[int(np.argmax(counts))])


def station_by_distance(regions: np.ndarray, node: np.ndarray, spacing: np.ndarray) -> int:
    """Region label of the region voxel nearest (in mm) to any node voxel (0 if none)."""
    from scipy.spatial import cKDTree

    inside = regions > 0
    region_idx = np.argwhere(inside & ~ndimage.binary_erosion(inside, FACES))  # boundary
    if region_idx.size == 0:
        return 0
    tree = cKDTree(region_idx * spacing)
    dist, nearest = tree.query(np.argwhere(node) * spacing)
    best = region_idx[nearest[int(np.argmin(dist))]]
    return int(regions[tuple(best)])


def centroid_zyx(labels: np.ndarray, value: int, box: tuple[slice, ...]) -> np.ndarray:
    """Mean ``(z, y, x)`` index of the voxels equal to ``value`` inside ``box``."""
    centre: np.ndarray = np.argwhere(labels[box] == value).mean(axis=0) + [b.start for b in box]
    return centre


def pelvic_midline(regions: np.ndarray, volume: Volume) -> tuple[float, str]:
    """Patient midline (LPS x) from bilateral region blobs, else the volume centre."""
    midpoints: list[float] = []
    for value in np.unique(regions[regions > 0]):
        blobs, n = ndimage.label(regions == value, FACES)
        if n < 2:
            continue
        sizes = np.bincount(blobs.ravel())[1:]
        boxes = ndimage.find_objects(blobs)
        xs = sorted(
            float(volume.zyx_to_lps(centroid_zyx(blobs, int(i) + 1, boxes[i]))[0]) for i in np.argsort(sizes)[::-1][:2]
        )
        if xs[1] - xs[0] >= _MIN_SIDE_SEPARATION_MM:
            midpoints.append((xs[0] + xs[1]) / 2)
    if midpoints:
        return float(np.mean(midpoints)), "regions"
    centre = (np.asarray(volume.shape, dtype=float) - 1) / 2
    return float(volume.zyx_to_lps(centre)[0]), "volume-centre"

