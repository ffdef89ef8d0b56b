"""A synthetic case: the series with its ground truth, generated from a seed.

Part of :mod:`dicomnode.synth.mr`; everything here is synthetic and NOT FOR CLINICAL USE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from dicomnode.synth.mr.phantom import Geometry, SyntheticNode, anatomy, finish_image, paint_node, sample_nodes
from dicomnode.synth.mr.series import series_header, slice_dataset

__all__ = ["SyntheticCase", "generate_case"]


@dataclass(frozen=True)
class SyntheticCase:
    """A synthetic MR series with its ground truth.

    Attributes
    ----------
    datasets
        MR Image Storage datasets, sorted along the slice normal (ascending).
    labels
        ``uint8`` label map ``(z, y, x)``; ``labels[k]`` belongs to ``datasets[k]``.
    nodes
        The nodes painted into ``labels`` (label 4 or 5).
    """

    datasets: list[pydicom.Dataset]
    labels: np.ndarray
    nodes: list[SyntheticNode]

    def write(self, folder: Path) -> list[Path]:
        """Write every instance as ``folder/IMG_0001.dcm`` ... (DICOM Part 10).

        Returns
        -------
        list of Path
            The written files, in ``datasets`` order.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, ds in enumerate(self.datasets, start=1):
            path = folder / f"IMG_{index:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths


def generate_case(
    seed: int,
    *,
    shape: tuple[int, int, int] = (24, 80, 80),
    spacing_mm: tuple[float, float, float] = (3.0, 1.5, 1.5),
    oblique_deg: float = 0.0,
    tilt_deg: float = 0.0,
    n_nodes: int | None = None,
    with_nodes: bool = True,
) -> SyntheticCase:
    """Generate one deterministic synthetic T2 pelvic MR case.

    Parameters
    ----------
    seed
        Seeds pixels, anatomy jitter, nodes and UIDs.
    shape
        Volume shape ``(slices, rows, columns)``.
    spacing_mm
        ``(SpacingBetweenSlices, row spacing, column spacing)`` in mm, i.e. (z, y, x).
    oblique_deg
        Rotation of the in-plane axes about the slice normal (degrees).
    tilt_deg
        Tilt of the slice plane about the patient's left-right axis (degrees): an oblique
        axial acquisition (0: true axial).
    n_nodes
        Number of nodes; ``None`` draws 2 to 5.
    with_nodes
        False gives a node-free case (regions only).

    Returns
    -------
    SyntheticCase
    """
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"'shape' must be three positive sizes, got {shape!r}")
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ValueError(f"'spacing_mm' must be three positive mm values, got {spacing_mm!r}")
    rng = np.random.default_rng(seed)
    geom = Geometry.create(shape, spacing_mm, oblique_deg, tilt_deg)
    grid = geom.lps_grid()
    img, labels, regions = anatomy(grid, rng)
    count = int(rng.integers(2, 6)) if n_nodes is None else n_nodes
    placed = sample_nodes(rng, regions, count if with_nodes else 0)
    for node, angle in placed:
        paint_node(img, labels, grid, node, angle, rng)
    pixels = finish_image(img, rng)
    key = f"{seed}|{shape}|{spacing_mm}|{oblique_deg}|{count if with_nodes else 0}"
    key += f"|tilt {tilt_deg}" if tilt_deg else ""  # untilted cases keep their UIDs
    header = series_header(seed, key)
    datasets = [slice_dataset(header, geom, pixels[k], k, key) for k in range(shape[0])]
    return SyntheticCase(datasets=datasets, labels=labels, nodes=[n for n, _ in placed])
