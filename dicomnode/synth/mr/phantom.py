"""The phantom's anatomy on the voxel grid: body, organs, nodal regions and lymph nodes.

All positions are patient LPS millimetres relative to the phantom centre; the label values
are :data:`LABELS`. Part of :mod:`dicomnode.synth.mr`; everything here is synthetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = [
    "LABELS",
    "STATIONS",
    "Geometry",
    "SyntheticNode",
    "anatomy",
    "finish_image",
    "paint_node",
    "sample_nodes",
]

#: Label value → meaning, fixed (the demo model's ``labels`` section).
LABELS = {
    0: "background",
    1: "internal_iliac",
    2: "obturator",
    3: "external_iliac",
    4: "node_positive",
    5: "node_negative",
}
#: Station name → region label value.
STATIONS = {"internal_iliac": 1, "obturator": 2, "external_iliac": 3}
_SIDES = {"left": 1.0, "right": -1.0}
#: Region centre offset (|x|, y) from the volume centre and in-plane semi-axes (mm).
_REGION_LAYOUT = {
    "internal_iliac": ((28.0, 18.0), (10.0, 9.0)),
    "obturator": ((40.0, 0.0), (8.0, 10.0)),
    "external_iliac": ((28.0, -18.0), (10.0, 9.0)),
}
_CENTRE_LPS = (0.0, 0.0, -120.0)
_REGION_SEMI_Z = 28.0


@dataclass(frozen=True)
class SyntheticNode:
    """One ground-truth lymph node.

    Attributes
    ----------
    center_lps
        Node centre in patient LPS coordinates (mm).
    axes_mm
        **Semi**-axes (mm) of the node ellipsoid: the two in-plane (axial) semi-axes,
        largest first, then the semi-axis along the patient z axis. The in-plane axes are
        rotated about z by a random angle.
    station
        ``"internal_iliac"``, ``"obturator"`` or ``"external_iliac"``.
    side
        ``"left"`` (LPS x > 0) or ``"right"``.
    positive
        True when the node has malignant imaging features (label 4), else label 5. The
        JSCCR final status additionally calls a node positive when short axis ≥ 7 mm.
    short_axis_mm, long_axis_mm
        Nominal full diameters in the axial plane (``2 * axes_mm[1]``, ``2 * axes_mm[0]``).
    angle_rad
        Rotation of the in-plane axes about the patient z axis: the first semi-axis lies
        along ``(cos, sin, 0)`` in LPS.
    """

    center_lps: tuple[float, float, float]
    axes_mm: tuple[float, float, float]
    station: str
    side: str
    positive: bool
    short_axis_mm: float
    long_axis_mm: float
    angle_rad: float = 0.0


@dataclass(frozen=True)
class Geometry:
    """Voxel grid: index (k, j, i) → LPS = origin + i*dx*row + j*dy*col + k*dz*normal."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # (dz, dy, dx)
    origin: np.ndarray
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray

    @classmethod
    def create(
        cls,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        oblique_deg: float,
        tilt_deg: float = 0.0,
    ) -> Geometry:
        """In-plane rotation ``oblique_deg`` about the slice normal, then the slice plane
        tilted by ``tilt_deg`` about the patient's left-right axis (an oblique axial)."""
        theta, tilt = math.radians(oblique_deg), math.radians(tilt_deg)
        cos_t, sin_t = math.cos(tilt), math.sin(tilt)
        about_x = np.array([[1.0, 0.0, 0.0], [0.0, cos_t, -sin_t], [0.0, sin_t, cos_t]])
        row = about_x @ np.array([math.cos(theta), math.sin(theta), 0.0])
        col = about_x @ np.array([-math.sin(theta), math.cos(theta), 0.0])
        normal = np.cross(row, col)
        half = [(n - 1) / 2.0 * s for n, s in zip(shape, spacing, strict=True)]
        origin = np.array(_CENTRE_LPS) - half[2] * row - half[1] * col - half[0] * normal
        return cls(tuple(shape), tuple(spacing), origin, row, col, normal)  # type: ignore[arg-type]

    def lps_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LPS x, y, z of every voxel centre relative to the phantom centre, each (z, y, x)."""
        k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in self.shape], indexing="ij")
        dz, dy, dx = self.spacing
        rel = self.origin - np.array(_CENTRE_LPS)
        out = [
            rel[a] + i * dx * self.row[a] + j * dy * self.col[a] + k * dz * self.normal[a]
            for a in range(3)
        ]
        return out[0], out[1], out[2]

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice ``k``."""
        return self.origin + k * self.spacing[0] * self.normal


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float
) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def anatomy(
    grid: tuple[np.ndarray, np.ndarray, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[tuple[str, str], tuple[float, ...]]]:
    """Paint the body, organs and nodal regions; return image, labels and region params."""
    x, y, z = grid
    img = np.full(x.shape, 15.0)
    labels = np.zeros(x.shape, np.uint8)
    scale = rng.uniform(0.95, 1.05)
    img[_ellipse(x, y, 0, 0, 56 * scale, 44 * scale)] = 720.0  # subcutaneous fat
    img[_ellipse(x, y, 0, 0, 50 * scale, 38 * scale)] = 600.0  # pelvic fat
    for sx in (-1.0, 1.0):  # side-wall muscles (obturator internus)
        img[_ellipse(x, y, sx * 50 * scale, 0, 6, 24)] = 230.0
    img[_ellipse(x, y, 0, 27, 10, 8)] = 280.0  # rectal wall
    img[_ellipse(x, y, 0, 27, 6, 4.5)] = 520.0  # rectal content
    img[_ellipse(x, y, 0, -25, 15, 11) & (z < 15)] = 1450.0  # bladder (fluid)
    regions: dict[tuple[str, str], tuple[float, ...]] = {}
    for side, sign in _SIDES.items():
        for station, ((ox, oy), (ax, ay)) in _REGION_LAYOUT.items():
            cx, cy = sign * ox + rng.uniform(-3, 3), oy + rng.uniform(-3, 3)
            ax, ay = ax * rng.uniform(0.9, 1.1), ay * rng.uniform(0.9, 1.1)
            cz, az = rng.uniform(-4, 4), _REGION_SEMI_Z * rng.uniform(0.85, 1.0)
            mask = _ellipse(x, y, cx, cy, ax, ay) & (np.abs(z - cz) <= az)
            img[mask] = 640.0 + 30.0 * STATIONS[station]
            labels[mask] = STATIONS[station]
            vx = cx - sign * 0.45 * ax  # vessel on the medial side of the region
            img[_ellipse(x, y, vx, cy, 2.5, 2.5) & mask] = 70.0
            regions[(side, station)] = (cx, cy, cz, ax, ay, az)
    return img, labels, regions


def sample_nodes(
    rng: np.random.Generator,
    regions: dict[tuple[str, str], tuple[float, ...]],
    n_nodes: int,
) -> list[tuple[SyntheticNode, float]]:
    """Draw non-overlapping nodes inside the regions; each with its in-plane angle."""
    slots = list(regions)
    placed: list[tuple[SyntheticNode, float]] = []
    for _ in range(200 * max(n_nodes, 1)):
        if len(placed) == n_nodes:
            break
        side, station = slots[int(rng.integers(len(slots)))]
        cx, cy, cz, ax, ay, az = regions[(side, station)]
        short = rng.uniform(2.0, 5.0)
        axes = (
            round(short * rng.uniform(1.0, 1.4), 3),
            round(short, 3),
            round(rng.uniform(3.0, 6.0), 3),
        )
        r, phi = math.sqrt(rng.uniform(0, 0.25)), rng.uniform(0, 2 * math.pi)
        lps = (
            _CENTRE_LPS[0] + cx + r * ax * math.cos(phi),
            _CENTRE_LPS[1] + cy + r * ay * math.sin(phi),
            _CENTRE_LPS[2] + cz + rng.uniform(-0.6, 0.6) * az,
        )
        if any(math.dist(lps, o.center_lps) < max(o.axes_mm) + max(axes) + 2.0 for o, _ in placed):
            continue
        positive = bool(rng.uniform() < 0.45)
        angle = float(rng.uniform(0, math.pi))
        node = SyntheticNode(
            center_lps=tuple(round(v, 3) for v in lps),  # type: ignore[arg-type]
            axes_mm=axes,
            station=station,
            side=side,
            positive=positive,
            short_axis_mm=round(2 * axes[1], 3),
            long_axis_mm=round(2 * axes[0], 3),
            angle_rad=angle,
        )
        placed.append((node, angle))
    if len(placed) < n_nodes:
        raise ValueError(f"could not place {n_nodes} non-overlapping nodes; ask for fewer")
    return placed


def paint_node(
    img: np.ndarray,
    labels: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    node: SyntheticNode,
    angle: float,
    rng: np.random.Generator,
) -> None:
    """Paint one node into the image and label map (in place)."""
    x, y, z = grid
    dx = x - (node.center_lps[0] - _CENTRE_LPS[0])
    dy = y - (node.center_lps[1] - _CENTRE_LPS[1])
    dz = z - (node.center_lps[2] - _CENTRE_LPS[2])
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    a, b, c = node.axes_mm
    q = (u / a) ** 2 + (v / b) ** 2 + (dz / c) ** 2
    if node.positive:  # irregular border: lobulated radius
        lobes, phase = int(rng.integers(3, 6)), rng.uniform(0, 2 * math.pi)
        q = q * (1.0 + 0.12 * np.sin(lobes * np.arctan2(v, u) + phase))
    mask = q <= 1.0
    texture = gaussian_filter(rng.normal(size=img.shape), 1.0)
    texture /= max(float(texture.std()), 1e-6)
    if node.positive:
        img[mask] = 300.0 + 75.0 * texture[mask]
    else:
        img[mask] = 470.0 + 12.0 * texture[mask]
    labels[mask] = 4 if node.positive else 5


def finish_image(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur (partial volume), bias field and noise; return uint16 pixels."""
    img = gaussian_filter(img, sigma=(0.3, 0.6, 0.6))
    bias = gaussian_filter(rng.normal(size=img.shape), sigma=(6, 20, 20))
    bias = 1.0 + 0.08 * bias / max(float(np.abs(bias).max()), 1e-6)
    noisy = np.hypot(img * bias + rng.normal(0, 18, img.shape), rng.normal(0, 18, img.shape))
    pixels: np.ndarray = np.clip(np.rint(noisy), 0, 4095).astype(np.uint16)
    return pixels

